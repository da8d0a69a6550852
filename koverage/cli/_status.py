"""`koverage status`: the endpoints of a running mesh and their health."""

import json
import os

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from koverage.cli._state import read_state
from koverage.settings import Settings

_HEALTH_TIMEOUT_S = 2.0


def register(commands) -> None:
    parser = commands.add_parser("status", help="show the running mesh and its health")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args) -> int:
    settings = Settings.from_env()
    state = read_state(settings)
    if state is None or not _alive(state.get("pid")):
        message = "no mesh is running (start one with `koverage up`)"
        if args.json:
            print(json.dumps({"error": message, "services": {}}))
        else:
            print(message)
        return 1

    services = {
        name: {"address": address, "healthy": check_health(address)}
        for name, address in state["services"].items()
    }
    report = {
        "services": services,
        "database_url": state["database_url"],
        "kafka_bootstrap": state["kafka_bootstrap"],
        "otlp_endpoint": state["otlp_endpoint"],
        "api_key": state["api_key"],
        **{
            k: v for k, v in state.items() if k.endswith("_url") and k != "database_url"
        },
    }
    if args.json:
        print(json.dumps(report))
    else:
        for name, service in services.items():
            mark = "healthy" if service["healthy"] else "NOT HEALTHY"
            print(f"{name:<12} {service['address']:<22} {mark}")
        print(f"database    {report['database_url']}")
        print(f"kafka       {report['kafka_bootstrap']}")
        print(f"otlp        {report['otlp_endpoint']}")
    return 0 if all(s["healthy"] for s in services.values()) else 2


def check_health(address: str) -> bool:
    """True when the server at `address` answers SERVING."""
    channel = grpc.insecure_channel(address)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=_HEALTH_TIMEOUT_S
        )
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
