"""`koverage up`: the whole mesh on one machine, in the foreground.

Embedded defaults stand in for every engine that is not configured: an
embedded Postgres (KOVERAGE_DATABASE_URL), the Tansu broker
(KOVERAGE_KAFKA_BOOTSTRAP), the Rotel collector (KOVERAGE_OTLP_ENDPOINT) and
the offline simulator (always present; OpenRouter, Modal and OpenAI-compatible
servers join when their keys or URLs are set). Ctrl-C or SIGTERM stops
everything, children first.
"""

import logging
import os
import secrets
import sys
import time

from koverage.cli._state import clear_state, run_dir, write_state
from koverage.kafka_config import kafka_client_config
from koverage.local import (
    EmbeddedPostgres,
    RotelCollector,
    Supervisor,
    TansuBroker,
    ensure_topics,
    free_port,
    handle_termination_signals,
    start_service,
)
from koverage.logs import configure_logging
from koverage.settings import ENV_PREFIX, Settings
from services.worker.dashboard import dashboard_url

logger = logging.getLogger(__name__)

# Start order matters: ingest before the collector that exports to it, the
# worker (migrations, telemetry tables) before anything writes, the router
# before its callers.
SERVICES = ("ingest", "worker", "router", "chat", "underwriter")
_DEFAULT_PORT_BASE = 50051
# The tenant of the embedded collector's own key, trusted by ingest as a relay.
_COLLECTOR_TENANT = "koverage-collector"
# The tenant of the key chat and underwriter call the router with; the router
# trusts it to name the tenant it calls for.
_SERVICE_TENANT = "koverage-mesh"


def register(commands) -> None:
    parser = commands.add_parser(
        "up", help="run the whole mesh locally, in the foreground"
    )
    parser.add_argument(
        "--port-base",
        type=int,
        default=_DEFAULT_PORT_BASE,
        help="first of five consecutive service ports (0 picks free ports)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="once up, stream one demo answer through the chat service",
    )
    parser.add_argument(
        "--exit-after-demo",
        action="store_true",
        help="stop the mesh after the demo (for scripts and smoke tests)",
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    settings = Settings.from_env()
    try:
        keys = resolve_api_keys(settings)
    except ValueError as exc:
        print(f"koverage up: {exc}", file=sys.stderr)
        return 2
    # The console is for the endpoints; `up`'s own lifecycle logs show only
    # when asked for (each service logs in full to its own file).
    configure_logging("up", os.environ.get(ENV_PREFIX + "LOG_LEVEL", "WARNING"))
    handle_termination_signals()
    directory = run_dir(settings)
    logs = directory / "logs"
    print(f"koverage up: logs in {logs}", flush=True)

    with Supervisor(logs) as supervisor:
        mesh = _start_mesh(settings, args, supervisor, directory, keys)
        write_state(settings, mesh.state)
        _print_endpoints(mesh)
        try:
            if args.demo or args.exit_after_demo:
                from koverage.cli._chat import stream_demo

                code = stream_demo(mesh.services["chat"], mesh.api_key)
                if args.exit_after_demo:
                    return code
            print("mesh is up; Ctrl-C stops it", flush=True)
            while True:
                exited = supervisor.wait_for_exit(timeout_s=1.0)
                if exited is not None:
                    print(
                        f"koverage up: {exited.name} exited unexpectedly; stopping "
                        f"(see {logs / (exited.name + '.log')})",
                        file=sys.stderr,
                    )
                    return 1
        except KeyboardInterrupt:
            print("\nstopping...", flush=True)
            return 0
        finally:
            clear_state(settings, os.getpid())


def resolve_api_keys(settings: Settings) -> tuple[str, str]:
    """The API key a local run uses, and the keys its services accept.

    A configured KOVERAGE_CLIENT_API_KEY is used as is; otherwise the first
    key of KOVERAGE_API_KEYS; otherwise a fresh key is generated. When
    KOVERAGE_API_KEYS is empty, the services accept just that key, as tenant
    `local`.

    Args:
        settings: The `up` command's settings.

    Returns:
        (api_key, api_keys): the key the demo, the collector and the printed
        commands send, and the `key=tenant` list for KOVERAGE_API_KEYS.

    Raises:
        ValueError: KOVERAGE_API_KEYS is malformed, or
            KOVERAGE_CLIENT_API_KEY is set but is not one of its keys (every
            call with it would be refused as UNAUTHENTICATED).
    """
    tenants = settings.api_key_tenants()
    client_key = settings.client_api_key
    if tenants:
        if client_key and client_key not in tenants:
            raise ValueError(
                "KOVERAGE_CLIENT_API_KEY is not one of the keys in "
                "KOVERAGE_API_KEYS, so the services would refuse it; add it "
                "there as key=tenant, or unset KOVERAGE_CLIENT_API_KEY to use "
                "the first key listed"
            )
        return client_key or next(iter(tenants)), settings.api_keys
    api_key = client_key or "kov_" + secrets.token_urlsafe(24)
    return api_key, f"{api_key}=local"


class _Mesh:
    def __init__(self) -> None:
        self.services: dict[str, str] = {}
        self.database_url = ""
        self.kafka_bootstrap = ""
        self.otlp_endpoint = ""
        self.api_key = ""
        self.dashboard_address = ""

    @property
    def dashboard_url(self) -> str:
        """The dashboard's URL, carrying the key that signs a browser in."""
        return dashboard_url(self.dashboard_address, self.api_key)

    @property
    def state(self) -> dict:
        return {
            "pid": os.getpid(),
            "services": self.services,
            "database_url": self.database_url,
            "kafka_bootstrap": self.kafka_bootstrap,
            "otlp_endpoint": self.otlp_endpoint,
            "api_key": self.api_key,
            "dashboard_url": self.dashboard_url,
        }


def _start_mesh(
    settings: Settings, args, supervisor: Supervisor, directory, api_keys
) -> _Mesh:
    mesh = _Mesh()
    started = time.perf_counter()

    # Engines: configured endpoints win; embedded defaults otherwise.
    mesh.database_url = (
        settings.database_url
        or EmbeddedPostgres(directory / "postgres", supervisor=supervisor).start()
    )
    mesh.kafka_bootstrap = (
        settings.kafka_bootstrap or TansuBroker(supervisor=supervisor).start()
    )
    ensure_topics(
        mesh.kafka_bootstrap,
        {
            settings.kafka_spans_topic: settings.kafka_spans_partitions,
            settings.kafka_dead_letter_topic: 1,
        },
        # The embedded Tansu speaks plaintext; a configured broker may not.
        client_config=kafka_client_config(settings)
        if settings.kafka_bootstrap
        else None,
    )

    # A local run needs a key unless one is configured (resolve_api_keys).
    # The embedded collector gets a key of its own, for a tenant that ingest
    # trusts as a relay: it forwards every caller's spans, and each span
    # names its caller's tenant (`koverage.tenant`). A client key cannot
    # claim another tenant that way, since only the relay tenant is trusted.
    # Chat and underwriter likewise call the router with a relay key of their
    # own and name their caller's tenant (`koverage-on-behalf-of`), so the
    # router's spans and LLM calls land in the tenant that asked.
    mesh.api_key, keys = api_keys
    collector_key = "kov_collector_" + secrets.token_urlsafe(24)
    service_key = "kov_service_" + secrets.token_urlsafe(24)
    keys = f"{keys},{collector_key}={_COLLECTOR_TENANT},{service_key}={_SERVICE_TENANT}"

    mesh.services = _addresses(settings, args.port_base)
    mesh.dashboard_address = (
        f"{settings.host}:{free_port(settings.host)}"
        if args.port_base == 0
        else f"{settings.host}:{args.port_base + len(SERVICES)}"
    )
    env = {
        ENV_PREFIX + "DATABASE_URL": mesh.database_url,
        ENV_PREFIX + "KAFKA_BOOTSTRAP": mesh.kafka_bootstrap,
        ENV_PREFIX + "API_KEYS": keys,
        ENV_PREFIX + "AUTH_REQUIRED": "true",
        ENV_PREFIX + "CLIENT_API_KEY": mesh.api_key,
        ENV_PREFIX + "INGEST_TRUSTED_TENANTS": settings.ingest_trusted_tenants
        or _COLLECTOR_TENANT,
        ENV_PREFIX + "RELAY_TENANTS": settings.relay_tenants or _SERVICE_TENANT,
        ENV_PREFIX + "HOST": settings.host,
        ENV_PREFIX + "DASHBOARD_ADDRESS": mesh.dashboard_address,
        **{
            f"{ENV_PREFIX}{name.upper()}_ADDRESS": address
            for name, address in mesh.services.items()
        },
    }

    # Each service's /metrics port is fixed here so the dashboard can show
    # the dropped-span counters of the others.
    metrics_ports = {name: free_port(settings.host) for name in SERVICES}
    env[ENV_PREFIX + "DASHBOARD_METRICS_URLS"] = ",".join(
        f"http://{settings.host}:{port}/metrics"
        for name, port in metrics_ports.items()
        if name != "worker"
    )

    def service_env(name: str, base: dict) -> dict:
        return {**base, ENV_PREFIX + "METRICS_PORT": str(metrics_ports[name])}

    # Ingest first: the collector forwards to it. Ingest and worker never
    # export their own spans, which would loop back into the pipeline.
    start_service(
        supervisor, "ingest", mesh.services["ingest"], env=service_env("ingest", env)
    )
    mesh.otlp_endpoint = (
        settings.otlp_endpoint
        or RotelCollector(
            mesh.services["ingest"],
            supervisor=supervisor,
            export_headers={"authorization": f"Bearer {collector_key}"},
        ).start()
    )
    start_service(
        supervisor, "worker", mesh.services["worker"], env=service_env("worker", env)
    )
    traced = {**env, ENV_PREFIX + "OTLP_ENDPOINT": mesh.otlp_endpoint}
    relaying = {**traced, ENV_PREFIX + "CLIENT_API_KEY": service_key}
    for name, base in (
        ("router", traced),
        ("chat", relaying),
        ("underwriter", relaying),
    ):
        start_service(
            supervisor, name, mesh.services[name], env=service_env(name, base)
        )
    logger.info("mesh up", extra={"startup_s": round(time.perf_counter() - started, 2)})
    return mesh


def _addresses(settings: Settings, port_base: int) -> dict[str, str]:
    host = settings.host
    if port_base == 0:
        return {name: f"{host}:{free_port(host)}" for name in SERVICES}
    ordered = ("router", "chat", "ingest", "worker", "underwriter")
    return {name: f"{host}:{port_base + i}" for i, name in enumerate(ordered)}


def _print_endpoints(mesh: _Mesh) -> None:
    print("\nKoverage mesh is up:", flush=True)
    for name, address in mesh.services.items():
        print(f"  {name:<12} {address}")
    print(
        f"  {'telemetry':<12} {mesh.services['worker']} (TelemetryService on the worker)"
    )
    print(f"  {'postgres':<12} {mesh.database_url}")
    print(f"  {'kafka':<12} {mesh.kafka_bootstrap}")
    print(f"  {'otlp':<12} {mesh.otlp_endpoint}")
    print(f"  {'dashboard':<12} {mesh.dashboard_url}")
    print(f"\nAPI key: {mesh.api_key}")
    print("Stream a chat answer with grpcurl:")
    print(
        f"  grpcurl -plaintext -H 'authorization: Bearer {mesh.api_key}' "
        f'-d \'{{"content": "Hello, Koverage"}}\' '
        f"{mesh.services['chat']} koverage.chat.v1.ChatService/StreamChat\n",
        flush=True,
    )
