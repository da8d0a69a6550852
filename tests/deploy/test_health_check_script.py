"""The helm test pod's health check script, run against real servers."""

import concurrent.futures
import http.server
import pathlib
import subprocess
import sys
import threading

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

_SCRIPT = (
    pathlib.Path(__file__).resolve().parents[2]
    / "helm"
    / "koverage"
    / "files"
    / "health_check.py"
)


@pytest.fixture
def grpc_health_server():
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture
def http_health_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _run(*targets: str) -> subprocess.CompletedProcess:
    # The chart runs the script with `python -c`; so does this test.
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT.read_text(), "2", *targets],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_passes_when_every_target_is_serving(grpc_health_server, http_health_server):
    _, address = grpc_health_server

    result = _run(f"grpc:{address}", http_health_server)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SERVING") == 2


def test_fails_when_a_server_is_not_serving(grpc_health_server, http_health_server):
    servicer, address = grpc_health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

    result = _run(f"grpc:{address}", http_health_server)

    assert result.returncode == 1
    assert f"grpc:{address} NOT_SERVING" in result.stdout


def test_fails_when_a_server_is_unreachable(grpc_health_server):
    _, address = grpc_health_server

    result = _run(f"grpc:{address}", "grpc:127.0.0.1:1", "http://127.0.0.1:1/")

    assert result.returncode == 1
    assert "grpc:127.0.0.1:1 error UNAVAILABLE" in result.stdout
    assert "http://127.0.0.1:1/ error" in result.stdout


def test_fails_without_targets():
    assert _run().returncode == 1
