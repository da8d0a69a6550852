"""Does a slow or absent collector change a model call's time to first token?

Runs `benchmarks.bench_router` with one router per collector state, side by
side in the same repetitions, every router exporting its spans through the
llmobs processor and the batch exporter as in production:

- `off`: no OTLP endpoint, nothing exported (the baseline);
- `up`: a collector that answers every `TraceService/Export` at once (a
  discarding OTLP sink in its own process);
- `down`: nothing listens on the endpoint (connection refused);
- `stalled`: a listener that accepts connections and never answers, so
  every export waits for the exporter's own timeout and the bounded queue
  fills and drops.

The figure to read is each state's TTFT minus `off` at p50 and p99: export
runs on the batch processor's thread, so it should be noise.

Run from the repository root:

    .venv/bin/python -m benchmarks.bench_collector_down [--repetitions 3]

Other arguments are passed to `bench_router` (e.g. `--concurrency 64`).
"""

import argparse
import asyncio
import socket
import subprocess
import sys
import time

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

from benchmarks import bench_router

_START_TIMEOUT_S = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-sink", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--serve-blackhole", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--repetitions", type=int, default=3)
    args, rest = parser.parse_known_args()
    if args.serve_sink:
        asyncio.run(_serve_sink(args.serve_sink))
        return 0
    if args.serve_blackhole:
        _serve_blackhole(args.serve_blackhole)
        return 0

    sink, blackhole, closed = (f"127.0.0.1:{_free_port()}" for _ in range(3))
    helpers = [
        _spawn("--serve-sink", sink),
        _spawn("--serve-blackhole", blackhole),
    ]
    try:
        for address in (sink, blackhole):
            _wait_for_listener(address)
        return bench_router.main(
            [
                "--no-bare",
                "--repetitions",
                str(args.repetitions),
                "--variant",
                "off=KOVERAGE_OTLP_ENDPOINT=",
                "--variant",
                f"up=KOVERAGE_OTLP_ENDPOINT={sink}",
                "--variant",
                f"down=KOVERAGE_OTLP_ENDPOINT={closed}",
                "--variant",
                f"stalled=KOVERAGE_OTLP_ENDPOINT={blackhole}",
                *rest,
            ]
        )
    finally:
        for process in helpers:
            process.terminate()
            process.wait(timeout=10)


class _DiscardingTraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """Accepts every export at once and keeps nothing."""

    async def Export(self, request, context):
        return trace_service_pb2.ExportTraceServiceResponse()


async def _serve_sink(address: str) -> None:
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
        _DiscardingTraceService(), server
    )
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


def _serve_blackhole(address: str) -> None:
    """Accepts TCP connections and never reads or writes: a stalled peer."""
    host, port = address.rsplit(":", 1)
    listener = socket.create_server((host, int(port)))
    held = []
    while True:
        connection, _ = listener.accept()
        held.append(connection)


def _spawn(flag: str, address: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_collector_down", flag, address]
    )


def _wait_for_listener(address: str) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {address}") from None
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
