"""Builds the router from settings: catalog, providers and the gRPC server."""

from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import MeshServer
from koverage.settings import Settings
from services.router._catalog import load_catalog
from services.router._engine import Router
from services.router._servicer import RouterServicer
from services.router.providers import (
    OpenAICompatibleProvider,
    SimulatorProvider,
    load_personas,
)

# OpenRouter asks callers to identify their app in these headers.
_OPENROUTER_HEADERS = {
    "HTTP-Referer": "https://github.com/koverage",
    "X-Title": "Koverage",
}


def build_providers(settings: Settings) -> dict:
    """Providers that are configured; unconfigured ones are absent, and their
    models answer UNAVAILABLE with a message naming the missing setting."""
    personas = load_personas(settings.simulator_personas_path or None)
    providers: dict = {"simulator": SimulatorProvider(personas)}
    if settings.openrouter_api_key:
        providers["openrouter"] = OpenAICompatibleProvider(
            "openrouter",
            settings.openrouter_base_url,
            settings.openrouter_api_key,
            default_headers=_OPENROUTER_HEADERS,
        )
    if settings.modal_base_url:
        providers["modal"] = OpenAICompatibleProvider(
            "modal", settings.modal_base_url, settings.modal_api_key
        )
    if settings.openai_compatible_base_url:
        providers["openai_compatible"] = OpenAICompatibleProvider(
            "openai_compatible",
            settings.openai_compatible_base_url,
            settings.openai_compatible_api_key,
        )
    return providers


def build_router(settings: Settings, providers: dict | None = None) -> Router:
    """The Router engine with the configured catalog and providers."""
    return Router(
        load_catalog(settings.catalog_path or None),
        build_providers(settings) if providers is None else providers,
        first_token_timeout_s=settings.first_token_timeout_s,
    )


def build_server(settings: Settings, router: Router | None = None) -> MeshServer:
    """The router's MeshServer, not yet started."""
    router = router or build_router(settings)
    server = MeshServer("router", settings, settings.router_address)
    servicer = RouterServicer(router, coalesce_deltas=settings.router_coalesce_deltas)
    router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server.grpc)
    server.expose(router_pb2.DESCRIPTOR.services_by_name["RouterService"])

    async def close_providers() -> None:
        for provider in router._providers.values():
            close = getattr(provider, "close", None)
            if close is not None:
                await close()

    server.on_stop(close_providers)
    return server
