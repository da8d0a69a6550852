"""What every Koverage gRPC server and client shares."""

from koverage.serving._auth import (
    DEFAULT_TENANT,
    ApiKeyAuthenticator,
    current_tenant,
    set_current_tenant,
)
from koverage.serving._client import connect, outgoing_metadata
from koverage.serving._runner import EVENT_LOOPS, loop_factory, run
from koverage.serving._server import MeshServer
from koverage.serving._tracing import (
    extract_context,
    inject_context,
    setup_metrics,
    setup_tracing,
)

__all__ = [
    "DEFAULT_TENANT",
    "EVENT_LOOPS",
    "ApiKeyAuthenticator",
    "MeshServer",
    "connect",
    "current_tenant",
    "extract_context",
    "inject_context",
    "loop_factory",
    "outgoing_metadata",
    "run",
    "set_current_tenant",
    "setup_metrics",
    "setup_tracing",
]
