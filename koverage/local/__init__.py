"""Runs the real engines locally: Postgres, the Tansu broker, the Rotel collector.

Also runs Koverage's own services, all under one `Supervisor` that streams
their output to log files, notices a child dying, and stops everything in
reverse order, leaving no process behind.
"""

from koverage.local._errors import (
    LocalProcessError,
    ProcessDiedError,
    ProcessStartError,
)
from koverage.local._ports import free_port
from koverage.local._postgres import EmbeddedPostgres
from koverage.local._readiness import ReadinessProbe, grpc_health_ready, tcp_ready
from koverage.local._rotel import RotelCollector, rotel_binary
from koverage.local._services import start_service
from koverage.local._supervisor import (
    ChildExit,
    ManagedProcess,
    Supervisor,
    handle_termination_signals,
)
from koverage.local._tansu import (
    TANSU_CONSUMER_CONFIG,
    TansuBroker,
    consumer_config,
    ensure_topics,
    tansu_binary,
)

__all__ = [
    "TANSU_CONSUMER_CONFIG",
    "ChildExit",
    "EmbeddedPostgres",
    "LocalProcessError",
    "ManagedProcess",
    "ProcessDiedError",
    "ProcessStartError",
    "ReadinessProbe",
    "RotelCollector",
    "Supervisor",
    "TansuBroker",
    "consumer_config",
    "ensure_topics",
    "free_port",
    "grpc_health_ready",
    "handle_termination_signals",
    "rotel_binary",
    "start_service",
    "tansu_binary",
    "tcp_ready",
]
