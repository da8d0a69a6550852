"""Settings to providers: OpenRouter, Modal, and OpenAI-compatible servers by
base URL (shared, per catalog entry, or named by environment variable), each
checked against real loopback servers speaking the OpenAI API."""

from decimal import Decimal

import pytest
import yaml

from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import connect
from koverage.settings import Settings
from services.router import (
    Router,
    build_catalog,
    build_providers,
    build_router,
    build_server,
)
from services.router._breaker import CircuitBreaker
from services.router._engine import GenerateParams
from services.router._errors import ProviderUnavailableError
from tests.fixtures.openai_server import OpenAICompatibleServer, Scenario
from tests.router.conftest import collect, request


def _settings(tmp_path, models: list[dict], **overrides) -> Settings:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return Settings.from_env(
        {},
        catalog_path=str(path),
        router_address="127.0.0.1:0",
        metrics_port=-1,
        **overrides,
    )


def _model(model_id: str, provider: str, provider_model: str, **fields) -> dict:
    return {
        "id": model_id,
        "provider": provider,
        "provider_model": provider_model,
        "input_usd_per_mtok": "1.00",
        "output_usd_per_mtok": "2.00",
        "context_window_tokens": 4096,
        **fields,
    }


async def _generate(settings: Settings, *models: str):
    """Starts the router `settings` describe; returns (texts, summary) per model."""
    server = build_server(settings)
    await server.start()
    try:
        async with connect(server.address) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            return [
                await collect(stub.Generate(request(m), timeout=10)) for m in models
            ]
    finally:
        await server.stop(0.5)


async def test_catalog_entries_reach_their_own_base_urls_with_their_own_keys(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("KOVERAGE_TEST_LAB_KEY", "lab-key")
    async with OpenAICompatibleServer() as ollama, OpenAICompatibleServer() as lab:
        lab.default = Scenario(tokens=("from", " lab"))
        settings = _settings(
            tmp_path,
            [
                _model(
                    "local/llama",
                    "openai_compatible",
                    "llama3.2",
                    base_url=ollama.base_url + "/",
                ),
                _model(
                    "lab/qwen",
                    "openai_compatible",
                    "Qwen/Qwen3-32B",
                    base_url=lab.base_url,
                    api_key_env="KOVERAGE_TEST_LAB_KEY",
                ),
            ],
            openai_compatible_api_key="shared-key",
        )
        local, remote = await _generate(settings, "local/llama", "lab/qwen")

    assert "".join(local[0]) == "Hello from the fixture."
    assert "".join(remote[0]) == "from lab"
    assert local[1].provider == remote[1].provider == "openai_compatible"
    assert [r.body["model"] for r in ollama.requests] == ["llama3.2"]
    assert [r.body["model"] for r in lab.requests] == ["Qwen/Qwen3-32B"]
    # No api_key_env: the shared KOVERAGE_OPENAI_COMPATIBLE_API_KEY.
    assert ollama.requests[0].headers["authorization"] == "Bearer shared-key"
    assert lab.requests[0].headers["authorization"] == "Bearer lab-key"


async def test_each_base_url_has_its_own_circuit_breaker(tmp_path):
    async with OpenAICompatibleServer() as down, OpenAICompatibleServer() as up:
        down.default = Scenario(status=503)
        settings = _settings(
            tmp_path,
            [
                _model("a/down", "openai_compatible", "m", base_url=down.base_url),
                _model("b/up", "openai_compatible", "m", base_url=up.base_url),
            ],
        )
        catalog = build_catalog(settings)
        providers = build_providers(settings, catalog, env={})
        router = Router(
            catalog,
            providers,
            breaker_factory=lambda: CircuitBreaker(failure_threshold=1),
            retry_wait_max_s=0.01,
        )
        try:
            for _ in range(2):
                with pytest.raises(ProviderUnavailableError):
                    [e async for e in router.generate(_params("a/down"))]
            events = [e async for e in router.generate(_params("b/up"))]
        finally:
            for provider in providers.values():
                if hasattr(provider, "close"):
                    await provider.close()

    # The first call opened a/down's circuit; the second never reached it.
    assert len(down.requests) == 1
    assert events[-1].model == "b/up" and len(up.requests) == 1


async def test_models_named_in_the_environment_are_served_at_the_shared_url(
    tmp_path,
):
    async with OpenAICompatibleServer() as ollama:
        settings = Settings.from_env(
            {
                "KOVERAGE_OPENAI_COMPATIBLE_BASE_URL": ollama.base_url,
                "KOVERAGE_OPENAI_COMPATIBLE_MODELS": "llama3.2, qwen2.5:7b",
                "KOVERAGE_OPENAI_COMPATIBLE_API_KEY": "ollama-key",
            },
            router_address="127.0.0.1:0",
            metrics_port=-1,
        )
        server = build_server(settings)
        await server.start()
        try:
            async with connect(server.address) as channel:
                stub = router_pb2_grpc.RouterServiceStub(channel)
                listed = await stub.ListModels(
                    router_pb2.ListModelsRequest(), timeout=5
                )
                texts, summary = await collect(
                    stub.Generate(request("openai_compatible/qwen2.5:7b"), timeout=10)
                )
        finally:
            await server.stop(0.5)

    by_id = {m.id: m for m in listed.models}
    assert by_id["openai_compatible/llama3.2"].provider_model == "llama3.2"
    assert by_id["openai_compatible/qwen2.5:7b"].context_window_tokens == 8192
    assert "sim/steady" in by_id  # the shipped catalog is still there
    assert "".join(texts) == "Hello from the fixture."
    assert summary.model == "openai_compatible/qwen2.5:7b"
    assert Decimal(summary.cost_usd) == 0  # unpriced
    assert ollama.requests[0].body["model"] == "qwen2.5:7b"
    assert ollama.requests[0].headers["authorization"] == "Bearer ollama-key"


def test_models_named_without_a_base_url_are_a_configuration_error():
    settings = Settings.from_env({"KOVERAGE_OPENAI_COMPATIBLE_MODELS": "llama3.2"})
    with pytest.raises(ValueError, match="KOVERAGE_OPENAI_COMPATIBLE_BASE_URL"):
        build_router(settings)


def test_an_unset_api_key_variable_is_a_configuration_error(tmp_path):
    settings = _settings(
        tmp_path,
        [
            _model(
                "lab/m",
                "openai_compatible",
                "m",
                base_url="http://127.0.0.1:9/v1",
                api_key_env="LAB_KEY",
            ),
        ],
    )
    with pytest.raises(ValueError, match="LAB_KEY"):
        build_providers(settings, env={})


def test_only_configured_providers_are_built():
    providers = build_providers(Settings.from_env({}), env={})
    assert set(providers) == {"simulator"}


async def test_openrouter_and_modal_get_their_keys_and_headers(tmp_path):
    async with (
        OpenAICompatibleServer() as openrouter,
        OpenAICompatibleServer() as modal,
    ):
        settings = _settings(
            tmp_path,
            [
                _model("or/qwen", "openrouter", "qwen/qwen3-8b"),
                _model("modal/qwen", "modal", "Qwen/Qwen3-8B"),
            ],
            openrouter_api_key="or-key",
            openrouter_base_url=openrouter.base_url,
            modal_base_url=modal.base_url,
            modal_api_key="modal-key",
        )
        assert set(build_providers(settings, env={})) == {
            "simulator",
            "openrouter",
            "modal",
        }
        (_, via_openrouter), (_, via_modal) = await _generate(
            settings, "or/qwen", "modal/qwen"
        )

    assert via_openrouter.provider == "openrouter"
    assert via_modal.provider == "modal"
    sent = openrouter.requests[0]
    assert sent.headers["authorization"] == "Bearer or-key"
    assert sent.headers["http-referer"] == "https://github.com/koverage"
    assert sent.headers["x-title"] == "Koverage"
    assert sent.body["model"] == "qwen/qwen3-8b"
    assert modal.requests[0].headers["authorization"] == "Bearer modal-key"
    assert "x-title" not in modal.requests[0].headers
    assert modal.requests[0].body["model"] == "Qwen/Qwen3-8B"


def _params(model: str) -> GenerateParams:
    return GenerateParams(model=model, messages=({"role": "user", "content": "hi"},))
