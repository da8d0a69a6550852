"""Every Koverage setting, read from `KOVERAGE_*` environment variables.

An explicit argument wins over the environment, and the environment wins over
the default: `Settings.from_env(database_url=...)` overrides one field.
Empty values mean "not configured", which for the engines means that
`koverage up` starts its embedded default.
"""

import dataclasses
import os
from collections.abc import Mapping

ENV_PREFIX = "KOVERAGE_"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Process-wide configuration. Field `x_y` is read from `KOVERAGE_X_Y`."""

    host: str = "127.0.0.1"
    """Interface every server binds to."""

    router_address: str = "127.0.0.1:50051"
    """host:port of the router service (clients dial it, the router binds it)."""

    chat_address: str = "127.0.0.1:50052"
    """host:port of the chat service."""

    chat_default_model: str = "sim/steady"
    """Catalog model a new conversation uses when the request names none."""

    chat_orphan_grace_s: float = 5.0
    """How long an answer keeps generating after its StreamChat call ended
    early (the client cancelled or lost its connection) with nobody watching,
    waiting for a ResumeGeneration to pick it up; then it is cancelled. gRPC
    cannot tell a deliberate cancel from a lost connection, so longer lets
    slower reconnects continue, and costs provider tokens for that long
    after every deliberate cancel (clients that want an immediate stop set
    `cancel_on_disconnect`). 0 cancels at once, as if every request set it."""

    ingest_address: str = "127.0.0.1:50053"
    """host:port of the ingest service (OTLP TraceService)."""

    worker_address: str = "127.0.0.1:50054"
    """host:port of the worker, which also serves TelemetryService."""

    underwriter_address: str = "127.0.0.1:50055"
    """host:port of the underwriter service (EvaluationService)."""

    dashboard_metrics_urls: str = ""
    """Comma-separated Prometheus /metrics URLs of the other services, whose
    dropped-span counters the dashboard shows."""

    trace_url_template: str = ""
    """Link to a trace in Jaeger or Tempo, e.g.
    `http://jaeger:16686/trace/{trace_id}`; empty shows the id only."""

    dashboard_address: str = ""
    """host:port of the live web dashboard (Beacon and Underwriter), served
    by the worker; port 0 picks a free one. Empty serves no dashboard:
    `koverage up` sets it (the port after the five services by default)."""

    underwriter_datasets_dir: str = ""
    """Directory of the Underwriter's public datasets; empty means
    `../shared/datasets` next to the repository root."""

    metrics_port: int = 0
    """Port of this process's Prometheus endpoint; 0 picks a free one."""

    database_url: str = ""
    """Postgres URL; empty means `koverage up` starts an embedded Postgres."""

    kafka_bootstrap: str = ""
    """Kafka bootstrap servers; empty means `koverage up` starts Tansu."""

    kafka_spans_topic: str = "koverage.spans"
    """Topic the ingest service publishes accepted spans to, keyed by trace id."""

    kafka_dead_letter_topic: str = "koverage.spans.dlq"
    """Topic for spans and records that were rejected, with the reason."""

    kafka_spans_partitions: int = 4
    """Partitions the spans topic is created with when it does not exist."""

    kafka_security_protocol: str = "PLAINTEXT"
    """How Kafka clients reach the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or
    SASL_SSL (librdkafka `security.protocol`)."""

    kafka_sasl_mechanism: str = ""
    """SASL mechanism with a SASL_* protocol: PLAIN, SCRAM-SHA-256 or
    SCRAM-SHA-512; empty with PLAINTEXT or SSL."""

    kafka_sasl_username: str = ""
    """SASL user name with a SASL_* protocol."""

    kafka_sasl_password: str = ""
    """SASL password with a SASL_* protocol; never logged."""

    kafka_ssl_ca_location: str = ""
    """PEM file of the CA that signed the brokers' certificates, with SSL or
    SASL_SSL; empty trusts the system's CA bundle."""

    ingest_rate_limit_spans_per_s: float = 50000.0
    """Spans per second each tenant may send to ingest; 0 disables the limit."""

    ingest_rate_limit_burst_spans: int = 100000
    """Spans a tenant may send at once above its rate (the bucket size)."""

    ingest_max_span_bytes: int = 65536
    """Largest encoded span the ingest service accepts."""

    ingest_trusted_tenants: str = ""
    """Comma-separated tenants trusted as relays (the mesh's own collector):
    spans they send keep the tenant named by their `koverage.tenant`
    attribute. Any other sender's spans get the sender's tenant."""

    worker_group_id: str = "koverage-worker"
    """Kafka consumer group of the span-writing workers."""

    worker_batch_size: int = 5000
    """Most Kafka records the worker writes to Postgres in one transaction."""

    worker_decode_processes: int = 2
    """Child processes the worker decodes span records in, next to its
    consumer and writer threads (each uses up to one core while spans
    arrive); 0 decodes on the consumer thread, sharing its GIL with the
    writer, which suits a worker given less than two cores."""

    worker_write_connections: int = 2
    """Postgres connections the worker writes batches over at once; with
    two, Postgres stores one batch while the other's rows are still being
    sent or committed."""

    otlp_endpoint: str = ""
    """OTLP/gRPC endpoint spans are exported to (a collector); empty disables
    export in a standalone service and means `koverage up` starts Rotel."""

    service_name: str = ""
    """OpenTelemetry `service.name`; each entry point sets its own default."""

    api_keys: str = ""
    """Comma-separated `key=tenant` pairs accepted as `authorization: Bearer`."""

    auth_required: bool = False
    """When true, every RPC but health checks needs a known API key."""

    client_api_key: str = ""
    """Key this process sends when it calls another Koverage service."""

    relay_tenants: str = ""
    """Comma-separated tenants whose keys may act for another tenant: a call
    with such a key and `koverage-on-behalf-of: <tenant>` runs as that
    tenant. Give these keys only to mesh services (chat, underwriter), which
    forward their caller's tenant when they call the router."""

    run_dir: str = ""
    """Directory for `koverage up` logs, embedded data and its state file;
    empty means ~/.koverage."""

    catalog_path: str = ""
    """Model catalog YAML; empty uses the catalog shipped with the router."""

    simulator_personas_path: str = ""
    """Simulator persona YAML; empty uses the personas shipped with the router."""

    openrouter_api_key: str = ""
    """OpenRouter API key; OpenRouter models are unavailable without it."""

    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    """OpenRouter's OpenAI-compatible base URL."""

    modal_base_url: str = ""
    """Base URL of the Modal vLLM app (ending in /v1); empty disables Modal."""

    modal_api_key: str = ""
    """API key the Modal vLLM app requires."""

    openai_compatible_base_url: str = ""
    """Base URL of any OpenAI-compatible server (vLLM, Ollama, llama.cpp) for
    catalog models with provider `openai_compatible`; empty disables it."""

    openai_compatible_api_key: str = ""
    """API key for that server, if it needs one; also the key of catalog
    entries with their own `base_url` and no `api_key_env`."""

    openai_compatible_models: str = ""
    """Comma-separated model names served at `openai_compatible_base_url`
    (e.g. `llama3.2,qwen2.5:7b`); each becomes catalog model
    `openai_compatible/<name>`, unpriced, with an 8192-token context window."""

    first_token_timeout_s: float = 30.0
    """Longest wait for a provider's first token before trying the fallback."""

    shutdown_grace_s: float = 10.0
    """How long a stopping server lets open streams finish."""

    log_level: str = "INFO"
    """Log level of every logger."""

    event_loop: str = "auto"
    """asyncio event loop of the service entry points: `uvloop`, `asyncio`
    (the standard library's), or `auto` (uvloop when installed)."""

    router_coalesce_deltas: bool = False
    """When true, the router sends answer text that is ready at the same
    moment (the caller's stream fell behind) as one message instead of one
    message per provider chunk. Off by default: on the 2-core development
    machine it cost about 8% more router CPU per stream and did not
    measurably lower time to first token (BENCHMARKS.md, "Router
    overhead")."""

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **overrides: object
    ) -> "Settings":
        """Builds settings from `env` (default: os.environ), then `overrides`.

        Raises:
            ValueError: a variable does not parse as its field's type.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _parse(field, raw)
        values.update(overrides)
        return cls(**values)

    def api_key_tenants(self) -> dict[str, str]:
        """Parses `api_keys` into {key: tenant}.

        Raises:
            ValueError: an entry is not `key=tenant`.
        """
        tenants: dict[str, str] = {}
        entries = filter(None, (e.strip() for e in self.api_keys.split(",")))
        for number, entry in enumerate(entries, start=1):
            key, sep, tenant = entry.partition("=")
            if not sep or not key or not tenant:
                # The entry itself is not echoed: it may hold a secret key.
                raise ValueError(f"KOVERAGE_API_KEYS entry {number} is not key=tenant")
            tenants[key] = tenant
        return tenants

    def relay_tenant_set(self) -> frozenset[str]:
        """Parses `relay_tenants` into a set of tenant names."""
        return frozenset(
            filter(None, (t.strip() for t in self.relay_tenants.split(",")))
        )


def _parse(field: dataclasses.Field, raw: str) -> object:
    name = ENV_PREFIX + field.name.upper()
    if field.type in (bool, "bool"):
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"{name}={raw!r} is not a boolean (use true or false)")
    if field.type in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not an integer") from None
    if field.type in (float, "float"):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a number") from None
    return raw
