"""Health check of every Koverage service, run by the chart's helm test pod.

Usage: python health_check.py TIMEOUT_S TARGET...
A target is grpc:HOST:PORT (asks grpc.health.v1 for the server's overall
status) or an http:// URL (expects 200). Prints one line per target and
exits 1 unless every target is healthy.
"""

import sys
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check_grpc(address, timeout_s):
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError as exc:
            return "error " + exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def check_http(url, timeout_s):
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return "SERVING" if response.status == 200 else f"HTTP {response.status}"
    except OSError as exc:
        return "error " + type(exc).__name__


def main(argv):
    timeout_s = float(argv[0])
    unhealthy = 0
    for target in argv[1:]:
        if target.startswith("grpc:"):
            status = check_grpc(target[len("grpc:") :], timeout_s)
        else:
            status = check_http(target, timeout_s)
        print(f"{target} {status}", flush=True)
        unhealthy += status != "SERVING"
    return 1 if unhealthy or len(argv) < 2 else 0


sys.exit(main(sys.argv[1:]))
