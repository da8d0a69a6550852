"""Readiness probes: callables a supervisor polls until a child is ready."""

import socket
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ReadinessProbe = Callable[[], bool]
"""Returns True once the child serves; may raise, which counts as not ready."""


def tcp_ready(host: str, port: int, *, timeout_s: float = 0.5) -> ReadinessProbe:
    """Returns a probe that is ready when `host:port` accepts a connection.

    Args:
        host: Address the child listens on.
        port: Its TCP port.
        timeout_s: Connect timeout of one probe.
    """

    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True
        except OSError:
            return False

    return probe


def grpc_health_ready(
    address: str, *, service: str = "", timeout_s: float = 1.0
) -> ReadinessProbe:
    """Returns a probe that is ready when the gRPC health service says SERVING.

    Args:
        address: `host:port` of the gRPC server.
        service: Service name to check; "" asks about the whole server.
        timeout_s: Deadline of one `Check` call.
    """

    def probe() -> bool:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
                )
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    return probe
