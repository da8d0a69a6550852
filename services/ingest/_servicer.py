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

Known limitation: the tenant of every span is the tenant of the API key that
sent the export. Behind one shared collector all spans land in the
collector's tenant, whatever `koverage.tenant` the router recorded; per-tenant
collectors (or trusting that attribute from a designated mesh key) would fix
it. A span that does not decode at all goes to the dead-letter topic as raw
bytes, which cannot be redacted; the same is true of its siblings' encoding
only when the resource or scope fails too (then the whole request is refused).
The rate limiter's buckets live in one process, so N ingest replicas allow N
times the configured rate.
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
    TENANT_HEADER,
    EnvelopeBuilder,
    tenant_resource,
)
from services.ingest._publisher import KafkaPublisher, Record
from services.ingest._ratelimit import TenantRateLimiter
from services.ingest._validate import PII_REASON_PREFIX, redacted_copy, validate_span
from services.ingest._wire import WireError, iter_fields

_MAX_REASONS_IN_MESSAGE = 10

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

        SPANS_ACCEPTED.labels(tenant).inc(batch.accepted)
        response = trace_service_pb2.ExportTraceServiceResponse()
        if batch.reasons:
            SPANS_REJECTED.labels(tenant).inc(len(batch.reasons))
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
        self._tenant_header = (TENANT_HEADER, tenant.encode())
        self.records: list[Record] = []
        self.reasons: list[str] = []
        self.span_count = 0
        self.accepted = 0

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
            resource = tenant_resource(resource_spans.resource, self._tenant)
            for scope_spans in resource_spans.scope_spans:
                builder = EnvelopeBuilder(
                    resource,
                    scope_spans.scope.SerializeToString(),
                    resource_spans.schema_url,
                    scope_spans.schema_url,
                )
                for span in scope_spans.spans:
                    self._add(builder, span, span.SerializeToString())

    def _add(self, builder: EnvelopeBuilder, span: trace_pb2.Span, raw: bytes) -> None:
        self.span_count += 1
        reason = validate_span(span, len(raw), self._config.max_span_bytes)
        if reason:
            if reason.startswith(PII_REASON_PREFIX):
                # The dead-letter copy must not carry the PII either.
                raw = redacted_copy(span).SerializeToString()
            self._reject(reason, span.trace_id or None, builder.envelope(raw))
            return
        self.accepted += 1
        self.records.append(
            Record(
                self._config.spans_topic,
                bytes(span.trace_id),
                builder.envelope(raw),
                (self._tenant_header,),
            )
        )

    def _reject(self, reason: str, key: bytes | None, value: bytes) -> None:
        self.reasons.append(reason)
        self.records.append(
            Record(
                self._config.dead_letter_topic,
                key,
                value,
                (
                    self._tenant_header,
                    (REASON_HEADER, reason.encode()),
                    (STAGE_HEADER, b"ingest"),
                ),
            )
        )

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
        encoded_resource = tenant_resource(resource, self._tenant)
        for scope_spans in scopes:
            self._split_scope_spans(encoded_resource, schema_url, scope_spans)

    def _split_scope_spans(self, resource: bytes, schema_url: str, data: bytes) -> None:
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
        builder = EnvelopeBuilder(
            resource, scope.SerializeToString(), schema_url, scope_schema_url
        )
        for raw in spans:
            try:
                span = trace_pb2.Span.FromString(raw)
            except DecodeError as exc:
                self.span_count += 1
                self._reject(f"span does not decode: {_cause(exc)}", None, raw)
                continue
            self._add(builder, span, raw)


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
