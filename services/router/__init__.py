"""The router service: the only door from the mesh to language models."""

from services.router._app import (
    build_catalog,
    build_providers,
    build_router,
    build_server,
)
from services.router._catalog import Catalog, ModelEntry, load_catalog
from services.router._engine import Delta, GenerateParams, Router, Summary
from services.router._servicer import RouterServicer

__all__ = [
    "Catalog",
    "Delta",
    "GenerateParams",
    "ModelEntry",
    "Router",
    "RouterServicer",
    "Summary",
    "build_catalog",
    "build_providers",
    "build_router",
    "build_server",
    "load_catalog",
]
