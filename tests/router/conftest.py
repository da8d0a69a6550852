"""Router test fixtures: a real router gRPC server on loopback in front of
real loopback HTTP servers speaking the OpenAI API."""

import contextlib
import pathlib

import pytest
import yaml

from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import connect
from koverage.settings import Settings
from services.router import Router, build_server, load_catalog
from services.router._breaker import CircuitBreaker
from services.router.providers import OpenAICompatibleProvider, SimulatorProvider
from tests.fixtures.openai_server import OpenAICompatibleServer

TEST_CATALOG = {
    "models": [
        {
            "id": "fixture/model",
            "provider": "openai_compatible",
            "provider_model": "fixture-model",
            "input_usd_per_mtok": "2.00",
            "output_usd_per_mtok": "8.00",
            "context_window_tokens": 4096,
        },
        {
            "id": "modal/qwen3-8b",
            "provider": "modal",
            "provider_model": "Qwen/Qwen3-8B",
            "gpu_usd_per_second": "0.000542",
            "context_window_tokens": 32768,
            "first_token_timeout_s": 0.3,
            "fallback_models": ["openrouter/qwen3-8b"],
        },
        {
            "id": "openrouter/qwen3-8b",
            "provider": "openrouter",
            "provider_model": "qwen/qwen3-8b",
            "input_usd_per_mtok": "0.035",
            "output_usd_per_mtok": "0.138",
            "context_window_tokens": 32768,
        },
        {
            "id": "sim/steady",
            "provider": "simulator",
            "persona": "steady",
            "input_usd_per_mtok": "0.50",
            "output_usd_per_mtok": "1.50",
            "context_window_tokens": 8192,
        },
    ]
}


@contextlib.asynccontextmanager
async def running_router(tmp_path: pathlib.Path, providers: dict, **settings_overrides):
    """Starts a router server; yields (stub, router, server)."""
    catalog_path = tmp_path / "catalog.yaml"
    catalog_path.write_text(yaml.safe_dump(TEST_CATALOG))
    settings = Settings.from_env(
        {},
        router_address="127.0.0.1:0",
        metrics_port=-1,
        shutdown_grace_s=1.0,
        **settings_overrides,
    )
    router = Router(
        load_catalog(catalog_path),
        providers,
        breaker_factory=lambda: CircuitBreaker(failure_threshold=3, reset_after_s=60),
        retry_wait_max_s=0.05,
    )
    server = build_server(settings, router)
    await server.start()
    channel = connect(
        server.address, api_key=settings_overrides.get("client_api_key", "")
    )
    try:
        yield router_pb2_grpc.RouterServiceStub(channel), router, server
    finally:
        await channel.close()
        await server.stop(0.5)


@pytest.fixture
async def upstreams():
    """Three loopback OpenAI-compatible servers: generic, Modal and OpenRouter."""
    async with (
        OpenAICompatibleServer() as generic,
        OpenAICompatibleServer() as modal,
        OpenAICompatibleServer() as openrouter,
    ):
        providers = {
            "openai_compatible": OpenAICompatibleProvider(
                "openai_compatible", generic.base_url, "k1"
            ),
            "modal": OpenAICompatibleProvider("modal", modal.base_url, "modal-key"),
            "openrouter": OpenAICompatibleProvider(
                "openrouter", openrouter.base_url, "or-key"
            ),
            "simulator": SimulatorProvider(),
        }
        yield {
            "generic": generic,
            "modal": modal,
            "openrouter": openrouter,
            "providers": providers,
        }
        for provider in providers.values():
            if hasattr(provider, "close"):
                await provider.close()


def request(
    model="fixture/model", text="Say hello", **fields
) -> router_pb2.GenerateRequest:
    return router_pb2.GenerateRequest(
        model=model,
        messages=[router_pb2.ChatMessage(role=router_pb2.ROLE_USER, content=text)],
        **fields,
    )


async def collect(call):
    """Reads a Generate stream into (texts, summary)."""
    texts, summary = [], None
    async for event in call:
        if event.HasField("delta"):
            texts.append(event.delta.text)
        else:
            summary = event.summary
    return texts, summary
