"""The Rotel OpenTelemetry collector as a supervised child.

Rotel ships inside the `rotel` wheel. It receives OTLP on gRPC and HTTP and
forwards what it receives (gzip-compressed, in batches every 200 ms) over
OTLP/gRPC to one endpoint, such as the Koverage ingest service.

Known limitation: this Rotel (rotel-agent 0.0.1-alpha10, in the rotel
0.0.1a15 wheel) exports each signal to one exporter only. It accepts several
named exporters (`--exporters a:otlp,b:otlp`) but refuses to start when
`ROTEL_EXPORTERS_TRACES` names more than one ("Only one exporter supported
for ROTEL_EXPORTERS_TRACES"), so traces cannot fan out to both Koverage and a
Jaeger or Tempo from this collector. Run the contrib OpenTelemetry Collector
(see `collector/`) where fan-out is needed; once Rotel fans out
(tests/beacon_e2e/test_collector_fanout.py then fails), add a second
exporter here.
"""

import importlib.util
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from koverage.local._errors import ProcessStartError
from koverage.local._ports import free_port
from koverage.local._readiness import tcp_ready
from koverage.local._supervisor import ManagedProcess, Supervisor

_PORT_ATTEMPTS = 2

logger = logging.getLogger(__name__)


class RotelCollector:
    """A Rotel agent on loopback that forwards OTLP to `export_to`.

    Args:
        export_to: OTLP/gRPC endpoint to forward to, `host:port` or
            `http://host:port`.
        run_dir: Directory for `<name>.log` when no supervisor is given; None
            makes a temporary one.
        host: Interface the receivers listen on.
        grpc_port: OTLP/gRPC receiver port; None picks a free one.
        http_port: OTLP/HTTP receiver port; None picks a free one.
        traces_only: Refuse metrics and logs at the receivers, so nothing is
            forwarded to an endpoint that only serves `TraceService` (the
            ingest service).
        supervisor: Supervisor to run under; None makes a private one.
        name: Process name in the supervisor.
        ready_timeout_s: How long to wait for the gRPC receiver to listen.
        export_headers: Headers sent with every export, such as
            `{"authorization": "Bearer <key>"}` for the ingest service.
    """

    def __init__(
        self,
        export_to: str,
        *,
        run_dir: str | os.PathLike | None = None,
        host: str = "127.0.0.1",
        grpc_port: int | None = None,
        http_port: int | None = None,
        traces_only: bool = True,
        supervisor: Supervisor | None = None,
        name: str = "rotel",
        ready_timeout_s: float = 30.0,
        export_headers: Mapping[str, str] | None = None,
    ) -> None:
        if not export_to:
            raise ValueError("export_to='' : give the OTLP/gRPC endpoint to forward to")
        self._export_url = export_to if "://" in export_to else f"http://{export_to}"
        self._run_dir = run_dir
        self._host = host
        self._grpc_port = grpc_port
        self._http_port = http_port
        self._traces_only = traces_only
        self._supervisor = supervisor
        self._owns_supervisor = supervisor is None
        self._name = name
        self._ready_timeout_s = ready_timeout_s
        self._export_headers = dict(export_headers or {})
        self._process: ManagedProcess | None = None
        self._grpc_endpoint = ""
        self._http_endpoint = ""

    @property
    def grpc_endpoint(self) -> str:
        """`host:port` of the OTLP/gRPC receiver; "" before `start()`."""
        return self._grpc_endpoint

    @property
    def http_endpoint(self) -> str:
        """`http://host:port` of the OTLP/HTTP receiver; "" before `start()`."""
        return self._http_endpoint

    @property
    def process(self) -> ManagedProcess | None:
        """The agent process while it runs."""
        return self._process

    def start(self) -> str:
        """Starts the agent and waits until its gRPC receiver listens.

        Returns:
            The OTLP/gRPC receiver address, `host:port`.

        Raises:
            ProcessStartError: The agent exited or did not listen in time.
        """
        if self._process is not None:
            return self._grpc_endpoint
        if self._supervisor is None:
            run_dir = self._run_dir or tempfile.mkdtemp(prefix="koverage-rotel-")
            self._supervisor = Supervisor(run_dir)

        fixed = self._grpc_port is not None and self._http_port is not None
        attempts = 1 if fixed else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            grpc_port = self._grpc_port or free_port(self._host)
            http_port = self._http_port or free_port(self._host)
            try:
                self._process = self._start_on(grpc_port, http_port)
                break
            except ProcessStartError:
                if attempt == attempts:
                    raise
                logger.warning(
                    "rotel failed on ports %d/%d; retrying", grpc_port, http_port
                )
        self._grpc_endpoint = f"{self._host}:{grpc_port}"
        self._http_endpoint = f"http://{self._host}:{http_port}"
        return self._grpc_endpoint

    def stop(self) -> None:
        """Stops the agent with SIGTERM and waits for it to exit.

        Rotel forwards what it has batched before it exits, so nothing it
        acknowledged is lost while the export endpoint answers. Call it off
        the event loop that serves that endpoint (`asyncio.to_thread`), or
        the final flush waits for a loop that this call blocks.
        """
        if self._process is None or self._supervisor is None:
            return
        if self._owns_supervisor:
            self._supervisor.stop()
            self._supervisor = None
        else:
            self._supervisor.stop_process(self._name)
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start_on(self, grpc_port: int, http_port: int) -> ManagedProcess:
        run_dir = self._supervisor.run_dir
        argv = [
            str(rotel_binary()),
            "start",
            "--otlp-grpc-endpoint", f"{self._host}:{grpc_port}",
            "--otlp-http-endpoint", f"{self._host}:{http_port}",
            "--exporter", "otlp",
            "--otlp-exporter-endpoint", self._export_url,
            "--log-format", "json",
            # Only used in daemon mode, but keep the defaults in /tmp untouched.
            "--pid-file", str(run_dir / f"{self._name}.pid"),
            "--log-file", str(run_dir / f"{self._name}.agent.log"),
        ]  # fmt: skip
        if self._traces_only:
            argv += [
                "--otlp-receiver-metrics-disabled",
                "--otlp-receiver-logs-disabled",
            ]
        # Headers (the ingest API key) travel in the environment, not argv,
        # so they do not show in `ps`.
        env = {}
        if self._export_headers:
            env["ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS"] = ",".join(
                f"{key}={value}" for key, value in self._export_headers.items()
            )
        return self._supervisor.start_process(
            self._name,
            argv,
            env=env,
            ready=tcp_ready(self._host, grpc_port),
            ready_timeout_s=self._ready_timeout_s,
            stop_timeout_s=5.0,
        )


def rotel_binary() -> Path:
    """Path of the `rotel-agent` executable inside the installed rotel wheel."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("rotel is not installed; pip install it")
    return Path(spec.submodule_search_locations[0]) / "rotel-agent"
