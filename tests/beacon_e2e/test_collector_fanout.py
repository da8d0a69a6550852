"""Whether the installed Rotel can fan traces out to a second OTLP backend.

It cannot today (see `koverage.local._rotel`), so the local collector has no
Jaeger/Tempo export. This test pins that fact: when an upgraded Rotel starts
with two trace exporters, it fails, and the export should be added.
"""

import os
import subprocess

from koverage.local import free_port
from koverage.local._rotel import rotel_binary


def test_installed_rotel_refuses_two_trace_exporters(tmp_path):
    env = {
        **os.environ,
        "ROTEL_EXPORTERS": "ingest:otlp,tracing:otlp",
        "ROTEL_EXPORTER_INGEST_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "ROTEL_EXPORTER_TRACING_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "ROTEL_EXPORTERS_TRACES": "ingest,tracing",
    }
    argv = [
        str(rotel_binary()),
        "start",
        "--otlp-grpc-endpoint", f"127.0.0.1:{free_port()}",
        "--otlp-http-endpoint", f"127.0.0.1:{free_port()}",
        "--otlp-receiver-metrics-disabled",
        "--otlp-receiver-logs-disabled",
        "--pid-file", str(tmp_path / "rotel.pid"),
        "--log-file", str(tmp_path / "rotel.log"),
    ]  # fmt: skip
    try:
        finished = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=20, check=False
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(
            "Rotel started with two trace exporters: it fans out now; add the "
            "Jaeger/Tempo export to koverage/local/_rotel.py"
        ) from None
    output = finished.stdout + finished.stderr
    assert "Only one exporter supported for ROTEL_EXPORTERS_TRACES" in output
