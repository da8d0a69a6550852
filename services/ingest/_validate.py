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
- a string value in its name, attributes, status message, events or link
  attributes holds PII that the sender's redaction should have removed (an
  email address, card number, credential...), as judged by
  `koverage.llmobs.contains_pii`.

The resource is checked once per resource (`resource_pii_reason`): a
resource holding PII rejects every span under it, since the worker stores the
resource attributes with each span.

Known limitation: the PII check judges by shape, as the redactor does, so a
value that merely looks like an IP address or phone number (a peer address
recorded by an instrumentation library, a long spaced figure) rejects its
span too. Senders should redact such attributes before export, as the llmobs
processor does; an allow-list of keys would relax this if it ever bites.
"""

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
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
_ZERO_TRACE_ID = bytes(_TRACE_ID_BYTES)
_ZERO_SPAN_ID = bytes(_SPAN_ID_BYTES)
_REQUIRED_KEYS = frozenset(REQUIRED_GENAI_ATTRIBUTES)
# A separator no redaction pattern can match across.
_PII_JOINER = "\n\x00\n"


def validate_span(span: trace_pb2.Span, size_bytes: int, max_span_bytes: int) -> str:
    """Returns why `span` must be rejected, or "" when it is acceptable.

    Every span of every export passes here, so the accepting path reads each
    field once and walks the attributes once; working out which attribute
    holds PII happens only when the span has some.

    Args:
        span: The parsed span.
        size_bytes: Its encoded size.
        max_span_bytes: The largest encoded size accepted.
    """
    problem = _check_ids(span) or _check_shape(span, size_bytes, max_span_bytes)
    if problem:
        return problem

    texts = [span.name]
    present: dict[str, bool] = {}
    _scan_attributes(span.attributes, texts, present)
    if "gen_ai.operation.name" in present:
        missing = [k for k in REQUIRED_GENAI_ATTRIBUTES if not present.get(k)]
        if missing:
            return f"LLM span lacks required attribute(s) {', '.join(missing)}"
    for event in span.events:
        texts.append(event.name)
        _scan_attributes(event.attributes, texts, None)
    for link in span.links:
        _scan_attributes(link.attributes, texts, None)
    texts.append(span.status.message)
    if not contains_pii(_PII_JOINER.join(texts)):
        return ""
    return _locate_pii(span)


def resource_pii_reason(resource: resource_pb2.Resource) -> str:
    """Returns why spans under `resource` must be rejected for PII, or "".

    Args:
        resource: The parsed resource of one `ResourceSpans`.
    """
    texts: list[str] = []
    _scan_attributes(resource.attributes, texts, None)
    if not texts or not contains_pii(_PII_JOINER.join(texts)):
        return ""
    located: list[tuple[str, str]] = []
    _collect_strings(resource.attributes, "resource attribute ", located)
    for where, text in located:
        if contains_pii(text):
            return f"{PII_REASON_PREFIX} in {where}: redact it before export"
    return ""


def _scan_attributes(attributes, texts: list[str], present: dict | None) -> None:
    """Appends every string value to `texts`; notes required GenAI keys.

    `present[key]` says whether a required key holds a usable value (the
    last occurrence of a repeated key wins, as in a decoded map).
    """
    for kv in attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value":
            text = value.string_value
            texts.append(text)
            usable = bool(text)
        else:
            if kind == "array_value" or kind == "kvlist_value":
                _scan_value(value, kind, texts)
            usable = kind is not None
        if present is not None:
            key = kv.key
            if key in _REQUIRED_KEYS:
                present[key] = usable


def _scan_value(value: common_pb2.AnyValue, kind: str, texts: list[str]) -> None:
    if kind == "array_value":
        items = value.array_value.values
    else:
        items = [kv.value for kv in value.kvlist_value.values]
    for item in items:
        item_kind = item.WhichOneof("value")
        if item_kind == "string_value":
            texts.append(item.string_value)
        elif item_kind == "array_value" or item_kind == "kvlist_value":
            _scan_value(item, item_kind, texts)


def _check_ids(span: trace_pb2.Span) -> str:
    trace_id = span.trace_id
    if len(trace_id) != _TRACE_ID_BYTES or trace_id == _ZERO_TRACE_ID:
        return f"bad trace_id: need 16 non-zero bytes, got {len(trace_id)} bytes"
    span_id = span.span_id
    if len(span_id) != _SPAN_ID_BYTES or span_id == _ZERO_SPAN_ID:
        return f"bad span_id: need 8 non-zero bytes, got {len(span_id)} bytes"
    parent = span.parent_span_id
    if parent and len(parent) != _SPAN_ID_BYTES:
        return f"bad parent_span_id: need empty or 8 bytes, got {len(parent)} bytes"
    return ""


def _check_shape(span: trace_pb2.Span, size_bytes: int, max_span_bytes: int) -> str:
    if size_bytes > max_span_bytes:
        return f"span too large: {size_bytes} bytes, limit {max_span_bytes}"
    name = span.name
    if not name:
        return "span name is empty"
    if len(name) > _MAX_NAME_CHARS:
        return f"span name too long: {len(name)} chars, limit {_MAX_NAME_CHARS}"
    start_ns = span.start_time_unix_nano
    end_ns = span.end_time_unix_nano
    if start_ns == 0:
        return "start_time_unix_nano is missing"
    if end_ns < start_ns:
        return "end_time_unix_nano is before start_time_unix_nano"
    if end_ns - start_ns > _MAX_DURATION_NS:
        return "span lasts longer than a day"
    attribute_count = len(span.attributes)
    if attribute_count > _MAX_ATTRIBUTES:
        return f"too many attributes: {attribute_count}, limit {_MAX_ATTRIBUTES}"
    event_count = len(span.events)
    if event_count > _MAX_EVENTS:
        return f"too many events: {event_count}, limit {_MAX_EVENTS}"
    return ""


def _locate_pii(span: trace_pb2.Span) -> str:
    """The rejection reason naming where the PII is (only for a dirty span)."""
    texts: list[tuple[str, str]] = [("span name", span.name)]
    _collect_strings(span.attributes, "attribute ", texts)
    for event in span.events:
        texts.append((f"event {event.name!r}", event.name))
        _collect_strings(event.attributes, f"event {event.name!r} attribute ", texts)
    for index, link in enumerate(span.links):
        _collect_strings(link.attributes, f"link {index} attribute ", texts)
    texts.append(("status message", span.status.message))
    for where, text in texts:
        if contains_pii(text):
            return f"{PII_REASON_PREFIX} in {where}: redact it before export"
    # Only the joined text matched: no single value holds PII.
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


def redacted_copy(span: trace_pb2.Span) -> trace_pb2.Span:
    """Returns `span` with every string value redacted, for the dead-letter topic.

    A rejected span must not carry PII into Kafka either, whatever the reason
    it was rejected for (a span too large or with bad ids was never checked).
    """
    copy = trace_pb2.Span()
    copy.CopyFrom(span)
    copy.name = redact(copy.name)[0]
    _redact_attributes(copy.attributes)
    for event in copy.events:
        event.name = redact(event.name)[0]
        _redact_attributes(event.attributes)
    for link in copy.links:
        _redact_attributes(link.attributes)
    copy.status.message = redact(copy.status.message)[0]
    return copy


def redacted_resource(resource: resource_pb2.Resource) -> resource_pb2.Resource:
    """Returns `resource` with every string attribute value redacted."""
    copy = resource_pb2.Resource()
    copy.CopyFrom(resource)
    _redact_attributes(copy.attributes)
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
