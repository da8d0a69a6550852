"""The Kafka record format between the ingest service and the worker.

Spans topic (`Settings.kafka_spans_topic`), one record per accepted span:

    key      the span's 16-byte trace id, so a trace stays on one partition
    value    an OTLP `opentelemetry.proto.trace.v1.ResourceSpans` holding
             exactly one `ScopeSpans` with exactly one `Span`; the resource
             carries the sender's resource attributes plus `koverage.tenant`,
             set by the ingest service: the caller's tenant, or for a trusted
             relay the tenant the span names (see `services.ingest._servicer`)
    headers  `koverage-tenant` (the same tenant, for tools that do not
             decode the value)

Dead-letter topic (`Settings.kafka_dead_letter_topic`), one record per
rejected span or undecodable record:

    key      the trace id when known, else empty
    value    from ingest: the envelope above with every string of the span
             and its resource redacted, when the span parsed; empty when its
             bytes do not decode (they cannot be redacted; the reason names
             the span id). From the worker: the spans-topic record as read
    headers  `koverage-reason` (why, in words), `koverage-stage` ("ingest"
             or "worker"), `koverage-tenant` when known, and for records
             the worker rejected, `koverage-source` (topic/partition/offset)

The envelope is standard OTLP so any OTLP tool can read a record; it is
built by concatenating encoded fields, which protobuf defines as merging.
"""

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from services.ingest._wire import encode_varint, length_delimited

TENANT_ATTRIBUTE = "koverage.tenant"
"""Resource attribute naming the tenant that sent the span."""

TENANT_HEADER = "koverage-tenant"
REASON_HEADER = "koverage-reason"
STAGE_HEADER = "koverage-stage"
SOURCE_HEADER = "koverage-source"

# Field numbers in opentelemetry/proto/trace/v1/trace.proto.
_RESOURCE_SPANS_RESOURCE = 1
_RESOURCE_SPANS_SCOPE_SPANS = 2
_RESOURCE_SPANS_SCHEMA_URL = 3
_SCOPE_SPANS_SCOPE = 1
_SCOPE_SPANS_SPANS = 2
_SCOPE_SPANS_SCHEMA_URL = 3
_WIRE_LENGTH_DELIMITED = 2


def tenant_resource(resource: resource_pb2.Resource, tenant: str) -> bytes:
    """Encodes `resource` with `koverage.tenant` set to `tenant` (replacing any)."""
    stamped = resource_pb2.Resource()
    stamped.CopyFrom(resource)
    kept = [kv for kv in stamped.attributes if kv.key != TENANT_ATTRIBUTE]
    del stamped.attributes[:]
    stamped.attributes.extend(kept)
    stamped.attributes.append(
        common_pb2.KeyValue(
            key=TENANT_ATTRIBUTE, value=common_pb2.AnyValue(string_value=tenant)
        )
    )
    return stamped.SerializeToString()


class EnvelopeBuilder:
    """Builds envelopes for the spans of one (resource, scope) pair.

    Encodes the resource and scope once; each span then costs two length
    prefixes and a concatenation.
    """

    def __init__(
        self,
        resource_bytes: bytes,
        scope_bytes: bytes,
        resource_schema_url: str = "",
        scope_schema_url: str = "",
    ) -> None:
        self._head = length_delimited(_RESOURCE_SPANS_RESOURCE, resource_bytes)
        self._tail = (
            length_delimited(_RESOURCE_SPANS_SCHEMA_URL, resource_schema_url.encode())
            if resource_schema_url
            else b""
        )
        self._scope_head = length_delimited(_SCOPE_SPANS_SCOPE, scope_bytes)
        self._spans_tag = encode_varint(
            _SCOPE_SPANS_SPANS << 3 | _WIRE_LENGTH_DELIMITED
        )
        self._scope_spans_tag = encode_varint(
            _RESOURCE_SPANS_SCOPE_SPANS << 3 | _WIRE_LENGTH_DELIMITED
        )
        self._scope_tail = (
            length_delimited(_SCOPE_SPANS_SCHEMA_URL, scope_schema_url.encode())
            if scope_schema_url
            else b""
        )

    def envelope(self, span_bytes: bytes) -> bytes:
        """Returns the encoded one-span `ResourceSpans` for `span_bytes`."""
        scope_spans = b"".join(
            (
                self._scope_head,
                self._spans_tag,
                encode_varint(len(span_bytes)),
                span_bytes,
                self._scope_tail,
            )
        )
        return b"".join(
            (
                self._head,
                self._scope_spans_tag,
                encode_varint(len(scope_spans)),
                scope_spans,
                self._tail,
            )
        )
