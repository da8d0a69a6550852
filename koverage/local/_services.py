"""Koverage's own service processes (`python -m services.<name>`) under a supervisor."""

import os
import sys
from collections.abc import Mapping

from koverage.local._readiness import grpc_health_ready
from koverage.local._supervisor import ManagedProcess, Supervisor


def start_service(
    supervisor: Supervisor,
    name: str,
    address: str,
    *,
    env: Mapping[str, str] | None = None,
    module: str | None = None,
    cwd: str | os.PathLike | None = None,
    ready_timeout_s: float = 60.0,
) -> ManagedProcess:
    """Runs `python -m services.<name>` and waits until its health says SERVING.

    The child runs with this interpreter, so it sees the same virtual
    environment; `PYTHONUNBUFFERED=1` keeps its log file current.

    Args:
        supervisor: Supervisor to run under.
        name: Service name; also the process name and log file name.
        address: `host:port` the service binds, probed with grpc.health.v1.
        env: Variables layered over this process's environment, typically
            `KOVERAGE_*` settings.
        module: Module to run instead of `services.<name>`.
        cwd: Working directory of the child.
        ready_timeout_s: How long to wait for SERVING.

    Returns:
        The running service.

    Raises:
        ProcessStartError: The service exited or was not SERVING in time.
    """
    argv = [sys.executable, "-m", module or f"services.{name}"]
    return supervisor.start_process(
        name,
        argv,
        env={"PYTHONUNBUFFERED": "1", **(env or {})},
        cwd=cwd,
        ready=grpc_health_ready(address),
        ready_timeout_s=ready_timeout_s,
    )
