"""Turns a Kafka span record (see `services.ingest._envelope`) into table rows.

`decode_record` returns one `spans` row and, for an LLM call span (one with
`gen_ai.operation.name`), one `llm_calls` row. Rows are tuples in the column
order of `SPAN_COLUMNS` and `LLM_CALL_COLUMNS`, typed for a binary COPY:
bytes for `bytea`, aware datetimes for `timestamptz`, and for the `jsonb`
columns jsonb's binary wire form, a version byte (1) then the UTF-8 JSON
text, encoded once here so the writer passes it through untouched. A
record that is not a one-span envelope raises `UndecodableRecord` and goes to
the dead-letter topic.

This runs once per span on the worker's hot path, so it reads each protobuf
field once, handles the common attribute kinds inline and caches what every
span of one export shares (the resource).
"""

import datetime
import decimal
import json
import math
from typing import NamedTuple

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1 import trace_pb2

from services.ingest import TENANT_ATTRIBUTE

SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "tenant", "service_name", "name",
    "kind", "start_time", "end_time", "duration_ms", "status_code",
    "status_message", "attributes", "resource_attributes",
)  # fmt: skip
"""Columns of a `spans` row, in tuple order."""

SPAN_TYPES = (
    "bytea", "bytea", "bytea", "text", "text", "text",
    "int2", "timestamptz", "timestamptz", "float8", "int2",
    "text", "jsonb", "jsonb",
)  # fmt: skip
"""Postgres types of `SPAN_COLUMNS`, for a binary COPY."""

LLM_CALL_COLUMNS = (
    "trace_id", "span_id", "tenant", "start_time", "latency_ms", "ttft_ms",
    "operation", "provider", "model", "response_model", "input_tokens",
    "output_tokens", "cost_usd", "status", "error_type", "finish_reasons",
    "conversation_id", "prompt_preview", "completion_preview",
    "redaction_counts", "usage_estimated", "simulated",
)  # fmt: skip
"""Columns of an `llm_calls` row, in tuple order."""

LLM_CALL_TYPES = (
    "bytea", "bytea", "text", "timestamptz", "float8", "float8",
    "text", "text", "text", "text", "int8",
    "int8", "numeric", "text", "text", "text[]",
    "text", "text", "text",
    "jsonb", "bool", "bool",
)  # fmt: skip
"""Postgres types of `LLM_CALL_COLUMNS`, for a binary COPY."""

_RESOURCE_CACHE_SIZE = 1024
_RESOURCE_CACHE: dict[bytes, tuple[str, str, bytes]] = {}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_STATUS_ERROR = 2
_JSONB_VERSION = b"\x01"
_EMPTY_JSONB = b"\x01{}"
_parse_envelope = trace_pb2.ResourceSpans.FromString


class UndecodableRecord(ValueError):
    """The record is not a span envelope; the message says why."""


class DecodedSpan(NamedTuple):
    """The rows one record becomes."""

    span: tuple
    llm_call: tuple | None


def decode_record(value: bytes | None) -> DecodedSpan:
    """Decodes one spans-topic record value.

    Raises:
        UndecodableRecord: not a `ResourceSpans` with one span, or the span
            lacks valid ids, a tenant or a start time.
    """
    if not value:
        raise UndecodableRecord("empty record value")
    try:
        envelope = _parse_envelope(value)
    except DecodeError as exc:
        raise UndecodableRecord(f"not an OTLP ResourceSpans: {exc}") from None
    span = _only_span(envelope)
    trace_id = span.trace_id
    span_id = span.span_id
    if len(trace_id) != 16 or len(span_id) != 8:
        raise UndecodableRecord("span ids have the wrong length")

    tenant, service_name, resource_json = _resource(envelope.resource)
    start_ns = span.start_time_unix_nano
    if start_ns == 0:
        raise UndecodableRecord("span has no start time")

    attributes = _attributes(span.attributes)
    end_ns = span.end_time_unix_nano
    end_ns = max(end_ns, start_ns)
    start = _EPOCH + datetime.timedelta(microseconds=start_ns // 1000)
    duration_ms = (end_ns - start_ns) / 1e6
    status = span.status
    status_code = status.code
    row = (
        trace_id,
        span_id,
        span.parent_span_id or None,
        tenant,
        service_name,
        _clean(span.name),
        span.kind,
        start,
        _EPOCH + datetime.timedelta(microseconds=end_ns // 1000),
        duration_ms,
        status_code,
        _clean(status.message),
        _jsonb(attributes) if attributes else _EMPTY_JSONB,
        resource_json,
    )
    if "gen_ai.operation.name" not in attributes:
        return DecodedSpan(row, None)
    llm_call = _llm_call_row(
        trace_id, span_id, status_code, attributes, tenant, start, duration_ms
    )
    return DecodedSpan(row, llm_call)


def _only_span(envelope: trace_pb2.ResourceSpans) -> trace_pb2.Span:
    scope_spans = envelope.scope_spans
    if len(scope_spans) == 1:
        spans = scope_spans[0].spans
        if len(spans) == 1:
            return spans[0]
    spans = [s for scope in scope_spans for s in scope.spans]
    if len(spans) != 1:
        raise UndecodableRecord(f"envelope holds {len(spans)} spans, not 1")
    return spans[0]


def _llm_call_row(
    trace_id, span_id, status_code, attributes: dict, tenant, start, duration_ms
) -> tuple:
    get = attributes.get
    status = get("koverage.status")
    if not isinstance(status, str) or not status:
        status = "error" if status_code == _STATUS_ERROR else "complete"
    finish_reasons = get("gen_ai.response.finish_reasons")
    if isinstance(finish_reasons, str):
        finish_reasons = [finish_reasons]
    elif isinstance(finish_reasons, list):
        finish_reasons = [
            r if isinstance(r, str) else _json_text(r) for r in finish_reasons
        ]
    else:
        finish_reasons = None
    return (
        trace_id,
        span_id,
        tenant,
        start,
        duration_ms,
        _ttft_ms(get),
        _string(get("gen_ai.operation.name")),
        _string(get("gen_ai.provider.name", "")),
        _string(get("gen_ai.request.model", "")),
        _text(get("gen_ai.response.model")),
        _integer(get("gen_ai.usage.input_tokens")),
        _integer(get("gen_ai.usage.output_tokens")),
        _decimal(get("koverage.cost_usd")),
        status,
        _text(get("error.type")),
        finish_reasons,
        _text(get("gen_ai.conversation.id")),
        _text(get("koverage.prompt_preview")),
        _text(get("koverage.completion_preview")),
        _redaction_counts(get("koverage.redaction_counts")),
        bool(get("koverage.usage_estimated", False)),
        bool(get("koverage.simulated", False)),
    )


def _resource(resource) -> tuple[str, str, bytes]:
    """(tenant, service name, attributes as jsonb) of a resource, cached.

    Every span of one export shares its resource, so a batch of records
    usually repeats a handful of resources; decoding each once saves a
    third of the decode time.
    """
    key = resource.SerializeToString(deterministic=True)
    cached = _RESOURCE_CACHE.get(key)
    if cached is not None:
        return cached
    attributes = _attributes(resource.attributes)
    tenant = attributes.get(TENANT_ATTRIBUTE)
    if not isinstance(tenant, str) or not tenant:
        raise UndecodableRecord(f"resource lacks the {TENANT_ATTRIBUTE} attribute")
    decoded = (
        tenant,
        _string(attributes.get("service.name", "")),
        _jsonb(attributes),
    )
    if len(_RESOURCE_CACHE) >= _RESOURCE_CACHE_SIZE:
        _RESOURCE_CACHE.clear()
    _RESOURCE_CACHE[key] = decoded
    return decoded


def _attributes(key_values) -> dict:
    """OTLP key-values as a JSON-ready dict, NUL-free (Postgres refuses NUL).

    Strings are the common case and are handled inline; the other kinds go
    through `_plain`.
    """
    attributes = {}
    for kv in key_values:
        key = kv.key
        if "\x00" in key:
            key = key.replace("\x00", "")
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value":
            text = value.string_value
            attributes[key] = text.replace("\x00", "") if "\x00" in text else text
        else:
            attributes[key] = _plain(value, kind)
    return attributes


def _plain(value, kind: str | None):
    if kind is None:
        return None
    if kind == "string_value":
        return _clean(value.string_value)
    if kind == "double_value":
        number = value.double_value
        # JSON (and so jsonb) has no NaN or infinity: keep them as words.
        return number if math.isfinite(number) else str(number)
    if kind == "array_value":
        return [_plain(v, v.WhichOneof("value")) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def _ttft_ms(get) -> float | None:
    """Time to first token in ms: Koverage's attribute, else the semconv one.

    `koverage.time_to_first_token_ms` is preferred (what Koverage's router
    sets); `gen_ai.response.time_to_first_chunk`, in seconds, covers spans
    from other GenAI instrumentations.
    """
    ttft_ms = _number(get("koverage.time_to_first_token_ms"))
    if ttft_ms is not None:
        return ttft_ms
    ttft_s = _number(get("gen_ai.response.time_to_first_chunk"))
    return None if ttft_s is None else ttft_s * 1000.0


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _integer(value) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _string(value) -> str:
    # Attribute strings are NUL-free already (see `_attributes`).
    return value if isinstance(value, str) else _json_text(value)


def _text(value) -> str | None:
    if value is None:
        return None
    return _string(value)


def _clean(text: str) -> str:
    # Postgres text cannot hold NUL characters, which OTLP strings may.
    return text.replace("\x00", "") if "\x00" in text else text


def _decimal(value) -> decimal.Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _redaction_counts(value) -> bytes:
    if not isinstance(value, str) or value == "{}":
        return _EMPTY_JSONB
    try:
        parsed = json.loads(value)
    except ValueError:
        return _EMPTY_JSONB
    if not isinstance(parsed, dict):
        return _EMPTY_JSONB
    counts = {
        _clean(k): v
        for k, v in parsed.items()
        if isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63
    }
    return _jsonb(counts)


def _jsonb(value: dict) -> bytes:
    """`value` in jsonb's binary wire form (version byte, then JSON text)."""
    try:
        return _JSONB_VERSION + orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        # Only nesting deeper than orjson allows gets here.
        raise UndecodableRecord(f"attributes do not encode as JSON: {exc}") from None


def _json_text(value) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise UndecodableRecord(f"attribute does not encode as JSON: {exc}") from None
