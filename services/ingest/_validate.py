"""Checks one OTLP span before it may enter the pipeline.

A span is rejected, with a reason a person can act on, when:

- its trace id is not 16 bytes or is all zeros, its span id is not 8 bytes
  or is all zeros, or its parent span id is neither empty nor 8 bytes;
- its start time is missing, its end is before its start, or it lasts
  longer than a day;
- its name is empty or too long, it is larger than the size limit, or it
  carries too many attributes or events;
- it is an LLM call span (it has `gen_ai.operation.name`) and lacks one of
  the GenAI fields every such span needs (`REQUIRED_GENAI_ATTRIBUTES`);
- a string value in its name, attributes or events holds PII that the
  sender's redaction should have removed (an email address, card number,
  credential...), as judged by `koverage.llmobs.contains_pii`.

Known limitation: the PII check judges by shape, as the redactor does, so a
value that merely looks like an IP address or phone number (a peer address
recorded by an instrumentation library, a long spaced figure) rejects its
span too. Senders should redact such attributes before export, as the llmobs
processor does; an allow-list of keys would relax this if it ever bites.
"""

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from koverage.llmobs import contains_pii, redact

REQUIRED_GENAI_ATTRIBUTES = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
)
"""Attributes an LLM call span must carry to become an LLM call record."""

PII_REASON_PREFIX = "unredacted PII"
"""Start of the reason given for a span rejected for carrying PII."""

_TRACE_ID_BYTES = 16
_SPAN_ID_BYTES = 8
_MAX_NAME_CHARS = 1024
_MAX_ATTRIBUTES = 256
_MAX_EVENTS = 256
_MAX_DURATION_NS = 24 * 3600 * 10**9
# A separator no redaction pattern can match across.
_PII_JOINER = "\n\x00\n"


def validate_span(span: trace_pb2.Span, size_bytes: int, max_span_bytes: int) -> str:
    """Returns why `span` must be rejected, or "" when it is acceptable.

    Args:
        span: The parsed span.
        size_bytes: Its encoded size.
        max_span_bytes: The largest encoded size accepted.
    """
    problem = _check_ids(span) or _check_shape(span, size_bytes, max_span_bytes)
    if problem:
        return problem

    attributes = {kv.key: kv.value for kv in span.attributes}
    if "gen_ai.operation.name" in attributes:
        missing = [
            k for k in REQUIRED_GENAI_ATTRIBUTES if not _present(attributes.get(k))
        ]
        if missing:
            return f"LLM span lacks required attribute(s) {', '.join(missing)}"
    return _check_pii(span)


def _check_ids(span: trace_pb2.Span) -> str:
    if len(span.trace_id) != _TRACE_ID_BYTES or not any(span.trace_id):
        return f"bad trace_id: need 16 non-zero bytes, got {len(span.trace_id)} bytes"
    if len(span.span_id) != _SPAN_ID_BYTES or not any(span.span_id):
        return f"bad span_id: need 8 non-zero bytes, got {len(span.span_id)} bytes"
    if span.parent_span_id and len(span.parent_span_id) != _SPAN_ID_BYTES:
        return (
            "bad parent_span_id: need empty or 8 bytes, "
            f"got {len(span.parent_span_id)} bytes"
        )
    return ""


def _check_shape(span: trace_pb2.Span, size_bytes: int, max_span_bytes: int) -> str:
    if size_bytes > max_span_bytes:
        return f"span too large: {size_bytes} bytes, limit {max_span_bytes}"
    if not span.name:
        return "span name is empty"
    if len(span.name) > _MAX_NAME_CHARS:
        return f"span name too long: {len(span.name)} chars, limit {_MAX_NAME_CHARS}"
    if span.start_time_unix_nano == 0:
        return "start_time_unix_nano is missing"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return "end_time_unix_nano is before start_time_unix_nano"
    if span.end_time_unix_nano - span.start_time_unix_nano > _MAX_DURATION_NS:
        return "span lasts longer than a day"
    if len(span.attributes) > _MAX_ATTRIBUTES:
        return f"too many attributes: {len(span.attributes)}, limit {_MAX_ATTRIBUTES}"
    if len(span.events) > _MAX_EVENTS:
        return f"too many events: {len(span.events)}, limit {_MAX_EVENTS}"
    return ""


def _check_pii(span: trace_pb2.Span) -> str:
    # One scan over everything joined; only a hit pays for finding the key.
    texts: list[tuple[str, str]] = [("span name", span.name)]
    _collect_strings(span.attributes, "attribute ", texts)
    for event in span.events:
        texts.append((f"event {event.name!r}", event.name))
        _collect_strings(event.attributes, f"event {event.name!r} attribute ", texts)
    if not contains_pii(_PII_JOINER.join(text for _, text in texts)):
        return ""
    for where, text in texts:
        if contains_pii(text):
            return f"{PII_REASON_PREFIX} in {where}: redact it before export"
    return ""


def _collect_strings(attributes, prefix: str, out: list[tuple[str, str]]) -> None:
    for kv in attributes:
        _collect_value(kv.value, f"{prefix}{kv.key!r}", out)


def _collect_value(value: common_pb2.AnyValue, where: str, out: list) -> None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        out.append((where, value.string_value))
    elif kind == "array_value":
        for item in value.array_value.values:
            _collect_value(item, where, out)
    elif kind == "kvlist_value":
        for kv in value.kvlist_value.values:
            _collect_value(kv.value, f"{where}.{kv.key}", out)


def _present(value: common_pb2.AnyValue | None) -> bool:
    if value is None:
        return False
    kind = value.WhichOneof("value")
    return kind is not None and not (kind == "string_value" and not value.string_value)


def redacted_copy(span: trace_pb2.Span) -> trace_pb2.Span:
    """Returns `span` with every string value redacted, for the dead-letter topic.

    A span rejected for PII must not carry that PII into Kafka either.
    """
    copy = trace_pb2.Span()
    copy.CopyFrom(span)
    copy.name = redact(copy.name)[0]
    _redact_attributes(copy.attributes)
    for event in copy.events:
        event.name = redact(event.name)[0]
        _redact_attributes(event.attributes)
    copy.status.message = redact(copy.status.message)[0]
    return copy


def _redact_attributes(attributes) -> None:
    for kv in attributes:
        _redact_value(kv.value)


def _redact_value(value: common_pb2.AnyValue) -> None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        value.string_value = redact(value.string_value)[0]
    elif kind == "array_value":
        for item in value.array_value.values:
            _redact_value(item)
    elif kind == "kvlist_value":
        for kv in value.kvlist_value.values:
            _redact_value(kv.value)
