"""Prometheus metrics every server records, and its /metrics endpoint."""

import prometheus_client

RPC_REQUESTS = prometheus_client.Counter(
    "koverage_rpc_requests_total",
    "RPCs handled, by service, method and final status code.",
    ["service", "method", "code"],
)
RPC_DURATION_S = prometheus_client.Histogram(
    "koverage_rpc_duration_seconds",
    "Time from an RPC's arrival to its final status, in seconds.",
    ["service", "method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RPC_IN_FLIGHT = prometheus_client.Gauge(
    "koverage_rpc_in_flight",
    "RPCs being handled now.",
    ["service"],
)


def start_metrics_endpoint(host: str, port: int) -> int:
    """Serves /metrics on host:port in a daemon thread; returns the bound port."""
    server, _thread = prometheus_client.start_http_server(port, addr=host)
    return server.server_address[1]
