"""Builds the router from settings: catalog, providers and the gRPC server."""

import os
from collections.abc import Mapping

from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import MeshServer
from koverage.settings import Settings
from services.router._catalog import Catalog, load_catalog, openai_compatible_models
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


def build_catalog(settings: Settings) -> Catalog:
    """The catalog file plus the models KOVERAGE_OPENAI_COMPATIBLE_MODELS names.

    Raises:
        ValueError: the catalog is malformed, a named model is already in it,
            or models are named without KOVERAGE_OPENAI_COMPATIBLE_BASE_URL.
    """
    catalog = load_catalog(settings.catalog_path or None)
    extra = openai_compatible_models(settings.openai_compatible_models)
    if extra and not settings.openai_compatible_base_url:
        raise ValueError(
            "KOVERAGE_OPENAI_COMPATIBLE_MODELS names models but "
            "KOVERAGE_OPENAI_COMPATIBLE_BASE_URL is empty; set the server's URL"
        )
    return catalog.with_models(extra) if extra else catalog


def build_providers(
    settings: Settings,
    catalog: Catalog | None = None,
    env: Mapping[str, str] | None = None,
) -> dict:
    """Providers that are configured, keyed by `ModelEntry.provider_key`.

    Unconfigured ones are absent, and their models answer UNAVAILABLE with a
    message naming the missing setting. Each distinct `base_url` of an
    `openai_compatible` catalog entry gets a provider of its own.

    Args:
        settings: The router's settings.
        catalog: The catalog whose per-entry base URLs need providers; None
            builds it from `settings`.
        env: Where the variables named by entries' `api_key_env` are read;
            None reads the process environment.

    Raises:
        ValueError: an entry's `api_key_env` names an unset variable, or two
            entries on one base URL name different key variables.
    """
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

    catalog = build_catalog(settings) if catalog is None else catalog
    env = os.environ if env is None else env
    for base_url, key_env in _own_endpoints(catalog).items():
        providers[f"openai_compatible@{base_url}"] = OpenAICompatibleProvider(
            "openai_compatible",
            base_url,
            _endpoint_key(settings, env, base_url, key_env),
        )
    return providers


def build_router(settings: Settings, providers: dict | None = None) -> Router:
    """The Router engine with the configured catalog and providers."""
    catalog = build_catalog(settings)
    return Router(
        catalog,
        build_providers(settings, catalog) if providers is None else providers,
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


def _own_endpoints(catalog: Catalog) -> dict[str, str]:
    """{base_url: api_key_env} of the entries that name their own server."""
    endpoints: dict[str, str] = {}
    for entry in catalog:
        if not entry.base_url:
            continue
        known = endpoints.setdefault(entry.base_url, entry.api_key_env)
        if known != entry.api_key_env:
            raise ValueError(
                f"catalog models on {entry.base_url} name different api_key_env "
                f"({known!r} and {entry.api_key_env!r}); use one per base_url"
            )
    return endpoints


def _endpoint_key(
    settings: Settings, env: Mapping[str, str], base_url: str, key_env: str
) -> str:
    """The API key for one catalog base URL: its named variable, else the
    shared KOVERAGE_OPENAI_COMPATIBLE_API_KEY (empty when none is needed)."""
    if not key_env:
        return settings.openai_compatible_api_key
    key = env.get(key_env, "")
    if not key:
        raise ValueError(
            f"catalog models on {base_url} take their API key from {key_env}, "
            "which is unset or empty; set it or drop api_key_env"
        )
    return key
