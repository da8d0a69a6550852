"""The OTLP TraceService of the ingest service.

For each `Export` call: authenticate (done by the mesh interceptor, which
sets the tenant), apply the tenant's rate limit, split the request into
spans, validate each, publish the valid ones to the spans topic and the
invalid ones (with the reason) to the dead-letter topic, wait until Kafka has
acknowledged every record, and only then answer, with OTLP partial success
naming how many spans were rejected and why.

Codes: INVALID_ARGUMENT (the request itself does not decode), RESOURCE_
EXHAUSTED with RetryInfo (the tenant is over its rate), UNAVAILABLE (Kafka did
not acknowledge; the sender should retry the whole request), UNAUTHENTICATED.

Tenants: a span's tenant is the tenant of the API key that sent the export,
except when that tenant is a trusted relay (`IngestConfig.trusted_tenants`,
from KOVERAGE_INGEST_TRUSTED_TENANTS: the mesh's own collector). A relay
forwards many tenants' spans, so its spans name their own: the span attribute
`koverage.tenant` (set by the services on every span of an RPC), else the
resource attribute of that name, else the relay's tenant. Any other sender
keeps its own tenant whatever it asserts; the attribute stays in the span's
attributes but the resource, the Kafka header and the stored tenant are the
sender's.

PII: a span is checked with its resource (see `services.ingest._validate`).
A rejected span goes to the dead-letter topic redacted, its resource too; a
span whose bytes do not decode goes there as an empty value with the reason,
the trace id as key and the span id in the reason, never as raw bytes.

A span's tenant is the tenant its service authenticated the RPC as. When
chat calls the router for a user, it sends its own key and names the user's
tenant in `koverage-on-behalf-of`; the router runs the call as that tenant
only if chat's key belongs to a relay tenant (`KOVERAGE_RELAY_TENANTS`, set
by `koverage up` and by the chart's `auth.serviceTenant`). Without one, the
router's spans, the LLM call among them, carry chat's own tenant.

Known limitation: the rate limit is charged to the sender, so behind a
trusted relay all tenants share the relay's budget; charging each asserted
tenant would need the limiter to refuse part of a batch. The limiter's
buckets live in one process, so N ingest replicas allow N times the
configured rate.
"""

import dataclasses
import logging

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client import Counter

from koverage.errors import InvalidArgumentError
from koverage.serving import current_tenant
from services.ingest._envelope import (
    REASON_HEADER,
    STAGE_HEADER,
    TENANT_ATTRIBUTE,
    TENANT_HEADER,
    EnvelopeBuilder,
    tenant_resource,
)
from services.ingest._publisher import KafkaPublisher, Record
from services.ingest._ratelimit import TenantRateLimiter
from services.ingest._validate import (
    redacted_copy,
    redacted_resource,
    resource_pii_reason,
    validate_span,
)
from services.ingest._wire import WireError, iter_fields

_MAX_REASONS_IN_MESSAGE = 10
_MAX_TENANT_CHARS = 256

SPANS_ACCEPTED = Counter(
    "koverage_ingest_spans_accepted_total", "Spans published to Kafka", ["tenant"]
)
SPANS_REJECTED = Counter(
    "koverage_ingest_spans_rejected_total", "Spans rejected by validation", ["tenant"]
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """What the servicer needs from settings."""

    spans_topic: str
    dead_letter_topic: str
    max_span_bytes: int
    trusted_tenants: frozenset[str] = frozenset()
    """Senders whose spans may name their tenant (`koverage.tenant`)."""


class IngestServicer:
    """Implements `opentelemetry.proto.collector.trace.v1.TraceService`.

    The request arrives as raw bytes (see `services.ingest._app`), so a span
    that does not decode can be rejected alone.
    """

    def __init__(
        self,
        publisher: KafkaPublisher,
        limiter: TenantRateLimiter,
        config: IngestConfig,
    ) -> None:
        self._publisher = publisher
        self._limiter = limiter
        self._config = config

    async def Export(self, request_bytes: bytes, context) -> bytes:
        tenant = current_tenant()
        batch = _Batch(tenant, self._config)
        batch.split(request_bytes)
        self._limiter.acquire(tenant, batch.span_count)

        await self._publisher.publish(batch.records)

        for span_tenant, count in batch.accepted.items():
            SPANS_ACCEPTED.labels(span_tenant).inc(count)
        for span_tenant, count in batch.rejected.items():
            SPANS_REJECTED.labels(span_tenant).inc(count)
        response = trace_service_pb2.ExportTraceServiceResponse()
        if batch.reasons:
            response.partial_success.rejected_spans = len(batch.reasons)
            response.partial_success.error_message = _summary(batch.reasons)
            logger.info(
                "rejected %d of %d spans",
                len(batch.reasons),
                batch.span_count,
                extra={"tenant": tenant},
            )
        return response.SerializeToString()


class _Batch:
    """The records one request turns into."""

    def __init__(self, tenant: str, config: IngestConfig) -> None:
        self._tenant = tenant
        self._config = config
        self._trusted = tenant in config.trusted_tenants
        self._tenant_headers: dict[str, tuple[str, bytes]] = {}
        self.records: list[Record] = []
        self.reasons: list[str] = []
        self.span_count = 0
        self.accepted: dict[str, int] = {}
        self.rejected: dict[str, int] = {}

    def split(self, request_bytes: bytes) -> None:
        """Fills records and reasons from the encoded request.

        Raises:
            InvalidArgumentError: the request is not an OTLP export request.
        """
        try:
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(
                request_bytes
            )
        except DecodeError:
            self._split_leniently(request_bytes)
            return
        for resource_spans in request.resource_spans:
            resource = _Resource(resource_spans.resource, self._tenant, self._trusted)
            for scope_spans in resource_spans.scope_spans:
                scope = _Scope(
                    resource,
                    scope_spans.scope.SerializeToString(),
                    resource_spans.schema_url,
                    scope_spans.schema_url,
                )
                for span in scope_spans.spans:
                    self._add(scope, span, span.SerializeToString())

    def _add(self, scope: "_Scope", span: trace_pb2.Span, raw: bytes) -> None:
        self.span_count += 1
        tenant = scope.resource.tenant
        if self._trusted:
            tenant = _asserted_tenant(span.attributes) or tenant
        reason = scope.resource.pii_reason or validate_span(
            span, len(raw), self._config.max_span_bytes
        )
        if reason:
            # The dead-letter copy must not carry PII either, whatever the
            # reason: a span refused for its size or ids was never checked.
            clean = redacted_copy(span).SerializeToString()
            envelope = scope.envelope(tenant, clean, redacted=True)
            self._reject(reason, tenant, span.trace_id or None, envelope)
            return
        self.accepted[tenant] = self.accepted.get(tenant, 0) + 1
        self.records.append(
            Record(
                self._config.spans_topic,
                bytes(span.trace_id),
                scope.envelope(tenant, raw),
                (self._tenant_header(tenant),),
            )
        )

    def _reject(
        self, reason: str, tenant: str, key: bytes | None, value: bytes
    ) -> None:
        self.reasons.append(reason)
        self.rejected[tenant] = self.rejected.get(tenant, 0) + 1
        self.records.append(
            Record(
                self._config.dead_letter_topic,
                key,
                value,
                (
                    self._tenant_header(tenant),
                    (REASON_HEADER, reason.encode()),
                    (STAGE_HEADER, b"ingest"),
                ),
            )
        )

    def _tenant_header(self, tenant: str) -> tuple[str, bytes]:
        header = self._tenant_headers.get(tenant)
        if header is None:
            header = self._tenant_headers[tenant] = (TENANT_HEADER, tenant.encode())
        return header

    def _split_leniently(self, request_bytes: bytes) -> None:
        # Walk the wire format so each part decodes on its own.
        try:
            for number, _, resource_spans in iter_fields(request_bytes):
                if number == 1 and isinstance(resource_spans, bytes):
                    self._split_resource_spans(resource_spans)
        except (WireError, DecodeError) as exc:
            raise InvalidArgumentError(
                f"the request is not an OTLP ExportTraceServiceRequest: {exc}"
            ) from None

    def _split_resource_spans(self, data: bytes) -> None:
        resource = resource_pb2.Resource()
        schema_url = ""
        scopes: list[bytes] = []
        for number, _, value in iter_fields(data):
            if number == 1:
                resource.MergeFromString(value)  # bad UTF-8 here fails the request
            elif number == 2:
                scopes.append(value)
            elif number == 3:
                schema_url = value.decode("utf-8", "replace")
        parsed = _Resource(resource, self._tenant, self._trusted)
        for scope_spans in scopes:
            self._split_scope_spans(parsed, schema_url, scope_spans)

    def _split_scope_spans(
        self, resource: "_Resource", schema_url: str, data: bytes
    ) -> None:
        scope = common_pb2.InstrumentationScope()
        scope_schema_url = ""
        spans: list[bytes] = []
        for number, _, value in iter_fields(data):
            if number == 1:
                scope.MergeFromString(value)
            elif number == 2:
                spans.append(value)
            elif number == 3:
                scope_schema_url = value.decode("utf-8", "replace")
        envelopes = _Scope(
            resource, scope.SerializeToString(), schema_url, scope_schema_url
        )
        for raw in spans:
            try:
                span = trace_pb2.Span.FromString(raw)
            except DecodeError as exc:
                # The bytes cannot be parsed, so they cannot be redacted: the
                # dead-letter record carries the reason and ids, no payload.
                self.span_count += 1
                trace_id, span_id = _ids_of(raw)
                self._reject(
                    f"span does not decode: {_cause(exc)}"
                    + (f" (span_id {span_id.hex()})" if span_id else ""),
                    resource.tenant,
                    trace_id,
                    b"",
                )
                continue
            self._add(envelopes, span, raw)


class _Resource:
    """One `ResourceSpans`' resource: its tenant, PII verdict and encodings."""

    def __init__(
        self, resource: resource_pb2.Resource, sender_tenant: str, trusted: bool
    ) -> None:
        self.resource = resource
        self.tenant = (trusted and _asserted_tenant(resource.attributes)) or (
            sender_tenant
        )
        self.pii_reason = resource_pii_reason(resource)
        self._encoded: dict[tuple[str, bool], bytes] = {}

    def encoded(self, tenant: str, redacted: bool) -> bytes:
        """The resource stamped with `tenant`, redacted if asked, encoded once."""
        key = (tenant, redacted)
        encoded = self._encoded.get(key)
        if encoded is None:
            resource = redacted_resource(self.resource) if redacted else self.resource
            encoded = self._encoded[key] = tenant_resource(resource, tenant)
        return encoded


class _Scope:
    """Envelope builders for the spans of one scope, one per tenant."""

    def __init__(
        self,
        resource: _Resource,
        scope_bytes: bytes,
        resource_schema_url: str,
        scope_schema_url: str,
    ) -> None:
        self.resource = resource
        self._scope_bytes = scope_bytes
        self._schema_urls = (resource_schema_url, scope_schema_url)
        self._builders: dict[tuple[str, bool], EnvelopeBuilder] = {}

    def envelope(
        self, tenant: str, span_bytes: bytes, *, redacted: bool = False
    ) -> bytes:
        """The one-span envelope of `span_bytes` under `tenant`."""
        key = (tenant, redacted)
        builder = self._builders.get(key)
        if builder is None:
            builder = self._builders[key] = EnvelopeBuilder(
                self.resource.encoded(tenant, redacted),
                self._scope_bytes,
                *self._schema_urls,
            )
        return builder.envelope(span_bytes)


def _asserted_tenant(attributes) -> str:
    """The usable `koverage.tenant` string among `attributes`, or ""."""
    for kv in attributes:
        if kv.key == TENANT_ATTRIBUTE:
            tenant = kv.value.string_value
            if 0 < len(tenant) <= _MAX_TENANT_CHARS and tenant.isprintable():
                return tenant
            return ""
    return ""


def _ids_of(raw: bytes) -> tuple[bytes | None, bytes | None]:
    """(trace id, span id) read off an undecodable span's wire bytes, if any."""
    trace_id = span_id = None
    try:
        for number, wire_type, value in iter_fields(raw):
            if wire_type != 2 or not isinstance(value, bytes):
                continue
            if number == 1 and len(value) == 16:
                trace_id = value
            elif number == 2 and len(value) == 8:
                span_id = value
    except WireError:
        pass
    return trace_id, span_id


def _summary(reasons: list[str]) -> str:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    parts = [
        f"{n} x {reason}"
        for reason, n in list(counts.items())[:_MAX_REASONS_IN_MESSAGE]
    ]
    more = len(counts) - _MAX_REASONS_IN_MESSAGE
    suffix = f"; and {more} other reason(s)" if more > 0 else ""
    return f"{len(reasons)} span(s) rejected: " + "; ".join(parts) + suffix


def _cause(exc: DecodeError) -> str:
    text = str(exc)
    return text.rpartition(": ")[2] or text
