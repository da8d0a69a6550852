"""The router's Modal provider against a loopback server that, like the
Modal vLLM app, requires an API key on `/v1` and serves `/health` openly."""

import grpc
import httpx
import pytest

from services.router.providers import OpenAICompatibleProvider, SimulatorProvider
from tests.fixtures.openai_server import OpenAICompatibleServer, Scenario
from tests.router.conftest import TEST_CATALOG, collect, request, running_router

_KEY = "modal-key"


@pytest.fixture
async def modal_app():
    """A vLLM-like server requiring `_KEY`, and OpenRouter behind it."""
    async with (
        OpenAICompatibleServer(required_api_key=_KEY) as modal,
        OpenAICompatibleServer() as openrouter,
    ):
        yield modal, openrouter


async def _providers(modal_url: str, modal_key: str, openrouter_url: str) -> dict:
    return {
        "modal": OpenAICompatibleProvider("modal", modal_url, modal_key),
        "openrouter": OpenAICompatibleProvider("openrouter", openrouter_url, "or"),
        "simulator": SimulatorProvider(),
    }


async def _close(providers: dict) -> None:
    for provider in providers.values():
        if hasattr(provider, "close"):
            await provider.close()


async def _generate_qwen(tmp_path, modal, modal_key: str, openrouter):
    """Streams `modal/qwen3-8b` through a real router; (texts, summary)."""
    providers = await _providers(modal.base_url, modal_key, openrouter.base_url)
    try:
        async with running_router(tmp_path, providers) as (stub, _, _):
            return await collect(stub.Generate(request("modal/qwen3-8b"), timeout=10))
    finally:
        await _close(providers)


async def test_fixture_refuses_a_missing_key_and_serves_health_openly(modal_app):
    modal, _ = modal_app
    root = modal.base_url.removesuffix("/v1")

    async with httpx.AsyncClient() as client:
        health = await client.get(f"{root}/health")
        refused = await client.post(
            f"{modal.base_url}/chat/completions", json={"stream": True}
        )

    assert health.status_code == 200 and modal.health_checks == 1
    assert refused.status_code == 401
    assert [r.status for r in modal.requests] == [401]


async def test_modal_provider_sends_its_key_and_streams(tmp_path, modal_app):
    modal, openrouter = modal_app
    modal.default = Scenario(tokens=("warm", " GPU"))
    texts, summary = await _generate_qwen(tmp_path, modal, _KEY, openrouter)

    assert "".join(texts) == "warm GPU"
    assert summary.model == "modal/qwen3-8b" and summary.provider == "modal"
    (seen,) = modal.requests
    assert seen.headers["authorization"] == f"Bearer {_KEY}"
    assert seen.status == 200
    assert seen.body["model"] == "Qwen/Qwen3-8B"
    assert openrouter.requests == []


async def test_wrong_modal_key_is_not_retried_and_falls_back(tmp_path, modal_app):
    modal, openrouter = modal_app
    openrouter.default = Scenario(tokens=("fallback",))
    texts, summary = await _generate_qwen(tmp_path, modal, "stale-key", openrouter)

    # A 401 cannot heal by repeating the call: one try, then the fallback.
    assert [r.status for r in modal.requests] == [401]
    assert "".join(texts) == "fallback"
    assert summary.model == "openrouter/qwen3-8b"
    assert list(summary.fallbacks_tried) == ["modal/qwen3-8b"]


async def test_wrong_modal_key_without_fallback_is_a_clear_grpc_error(
    tmp_path, modal_app, monkeypatch
):
    modal, openrouter = modal_app
    catalog = {
        "models": [
            {**m, "fallback_models": []} if m["id"] == "modal/qwen3-8b" else m
            for m in TEST_CATALOG["models"]
        ]
    }
    monkeypatch.setattr("tests.router.conftest.TEST_CATALOG", catalog)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _generate_qwen(tmp_path, modal, "stale-key", openrouter)

    # A provider 4xx other than 429 is our configuration, not an outage:
    # FAILED_PRECONDITION (no point retrying), naming the provider and the
    # HTTP status but never the key.
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "modal rejected the call with HTTP 401" in caught.value.details()
    assert _KEY not in caught.value.details()
    assert "stale-key" not in caught.value.details()
    assert len(modal.requests) == 1
