"""Turns a Kafka span record (see `services.ingest._envelope`) into table rows.

`decode_record` returns one `spans` row and, for an LLM call span (one with
`gen_ai.operation.name`), one `llm_calls` row. Rows are tuples in the column
order of `SPAN_COLUMNS` and `LLM_CALL_COLUMNS`, typed for a binary COPY:
bytes for `bytea`, aware datetimes for `timestamptz`, and for the `jsonb`
columns jsonb's binary wire form, a version byte (1) then the UTF-8 JSON
text, encoded once here so the writer passes it through untouched. A
record that is not a one-span envelope raises `UndecodableRecord` and goes to
the dead-letter topic.

This runs once per span on the worker's hot path (in its decode processes,
see `services.worker._decode_pool`), so it reads each protobuf field once,
handles the common attribute kinds inline and caches what every span of one
export shares (the resource and the scope). A record laid out as the ingest
service writes it is split by hand (a few length prefixes) and only its span
is parsed by protobuf; any other layout takes the general path, which gives
the same rows and the same errors. Ahead of both, the C fast path
(`_span_wire.c`, where it was built) reads a record in the ingest's layout
with plain attribute kinds straight from the wire, and hands anything else
to protobuf.
"""

import datetime
import decimal
import functools
import json
import math
from typing import NamedTuple

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from services.ingest import TENANT_ATTRIBUTE

try:
    from services.worker._span_wire import split_span as _split_span
except ImportError:  # the C extension was not built: protobuf does it all
    _split_span = None

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
_SCOPE_CACHE_SIZE = 1024
_VALID_SCOPES: set[bytes] = set()
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_timedelta = datetime.timedelta  # called positionally: (days, seconds, us)
_STATUS_ERROR = 2
_JSONB_VERSION = b"\x01"
_EMPTY_JSONB = b"\x01{}"
_parse_envelope = trace_pb2.ResourceSpans.FromString
_parse_span = trace_pb2.Span.FromString
_parse_resource = resource_pb2.Resource.FromString
_parse_scope = common_pb2.InstrumentationScope.FromString
# Tags of the length-delimited fields the ingest service writes: field 1
# (`resource`, `scope`) and field 2 (`scope_spans`, `spans`), wire type 2.
_TAG_FIELD_1 = 0x0A
_TAG_FIELD_2 = 0x12


class UndecodableRecord(ValueError):
    """The record is not a span envelope; the message says why."""


class DecodedSpan(NamedTuple):
    """The rows one record becomes."""

    span: tuple
    llm_call: tuple | None


# DecodedSpan((span, llm_call)) without the Python-level `__new__`.
_decoded = functools.partial(tuple.__new__, DecodedSpan)


def fast_path_built() -> bool:
    """Whether the C fast path (`_span_wire.c`) was compiled and loads."""
    return _split_span is not None


def decode_record(value: bytes | None) -> DecodedSpan:
    """Decodes one spans-topic record value.

    Raises:
        UndecodableRecord: not a `ResourceSpans` with one span, or the span
            lacks valid ids, a tenant or a start time.
    """
    if not value:
        raise UndecodableRecord("empty record value")
    fields = _fast_fields(value) if _split_span is not None else None
    (
        resource_key, resource, trace_id, span_id, parent_span_id, name, kind,
        start_ns, end_ns, status_code, status_message, attributes,
    ) = fields or _protobuf_fields(value)  # fmt: skip
    if len(trace_id) != 16 or len(span_id) != 8:
        raise UndecodableRecord("span ids have the wrong length")

    tenant, service_name, resource_json = _resource(resource_key, resource)

    if start_ns == 0:
        raise UndecodableRecord("span has no start time")

    end_ns = max(end_ns, start_ns)
    start = _EPOCH + _timedelta(0, 0, start_ns // 1000)
    duration_ms = (end_ns - start_ns) / 1e6
    row = (
        trace_id,
        span_id,
        parent_span_id,
        tenant,
        service_name,
        name,
        kind,
        start,
        _EPOCH + _timedelta(0, 0, end_ns // 1000),
        duration_ms,
        status_code,
        status_message,
        _jsonb(attributes) if attributes else _EMPTY_JSONB,
        resource_json,
    )
    if "gen_ai.operation.name" not in attributes:
        return _decoded((row, None))
    llm_call = _llm_call_row(
        trace_id, span_id, status_code, attributes, tenant, start, duration_ms
    )
    return _decoded((row, llm_call))


def _fast_fields(value: bytes) -> tuple | None:
    """The span's fields by the C fast path, or None for the protobuf path.

    The C code (`_span_wire.c`) reads a record in the ingest's layout with
    common attribute kinds; the scope and resource are checked here, as
    `_split_envelope` does.
    """
    fields = _split_span(value)
    if fields is None:
        return None
    resource_bytes, scope_bytes = fields[0], fields[1]
    try:
        _check_scope(scope_bytes)
        resource = None
        if resource_bytes not in _RESOURCE_CACHE:
            resource = _parse_resource(resource_bytes)
    except DecodeError:
        return None
    return (resource_bytes, resource, *fields[2:])


def _protobuf_fields(value: bytes) -> tuple:
    """The span's fields, as `_fast_fields` gives them, by protobuf's parser."""
    split = _split_envelope(value)
    span, resource_key, resource = split or _parse_whole(value)
    status = span.status
    name = span.name
    return (
        resource_key,
        resource,
        span.trace_id,
        span.span_id,
        span.parent_span_id or None,
        name.replace("\x00", "") if "\x00" in name else name,
        span.kind,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        status.code,
        _clean(status.message),
        _attributes(span.attributes),
    )


def _parse_whole(value: bytes) -> tuple:
    """(span, resource key, resource) of any record, by a full protobuf parse."""
    try:
        envelope = _parse_envelope(value)
    except DecodeError as exc:
        raise UndecodableRecord(f"not an OTLP ResourceSpans: {exc}") from None
    span = _only_span(envelope)
    resource = envelope.resource
    return span, resource.SerializeToString(deterministic=True), resource


def _split_envelope(value: bytes) -> tuple | None:
    """(span, resource key, resource) of a record in the ingest's layout.

    The ingest service writes `resource`, then one `scope_spans` holding
    `scope` then one span, with no schema URLs unless the sender set them
    (see `services.ingest._envelope`). Such a record is split by its length
    prefixes, so protobuf parses only the span, and the resource and scope
    are parsed once per distinct encoding (the resource is None when
    `_resource` has it cached already). Returns None for any other
    layout, or for bytes protobuf refuses, so that `_parse_whole` decides
    (with the same error a full parse gives).
    """
    try:
        if value[0] != _TAG_FIELD_1:
            return None
        size, at = _varint(value, 1)
        resource_bytes = value[at : at + size]
        at += size
        if value[at] != _TAG_FIELD_2:
            return None
        size, at = _varint(value, at + 1)
        if at + size != len(value):
            return None
        if value[at] == _TAG_FIELD_1:
            size, at = _varint(value, at + 1)
            scope_bytes = value[at : at + size]
            at += size
        else:
            scope_bytes = b""
        if value[at] != _TAG_FIELD_2:
            return None
        size, at = _varint(value, at + 1)
        if at + size != len(value):
            return None
        span = _parse_span(value[at:])
        _check_scope(scope_bytes)
        resource = None
        if resource_bytes not in _RESOURCE_CACHE:
            resource = _parse_resource(resource_bytes)
    except (IndexError, DecodeError):
        return None
    return span, resource_bytes, resource


def _check_scope(scope_bytes: bytes) -> None:
    """Parses an InstrumentationScope once per distinct encoding.

    Raises:
        DecodeError: the bytes are not a scope.
    """
    if scope_bytes not in _VALID_SCOPES:
        _parse_scope(scope_bytes)
        if len(_VALID_SCOPES) >= _SCOPE_CACHE_SIZE:
            _VALID_SCOPES.clear()
        _VALID_SCOPES.add(scope_bytes)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """(value, index after it) of the base-128 varint at `data[at]`."""
    byte = data[at]
    if byte < 0x80:
        return byte, at + 1
    value = byte & 0x7F
    shift = 7
    while True:
        at += 1
        byte = data[at]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at + 1
        shift += 7


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


def _resource(key: bytes, resource=None) -> tuple[str, str, bytes]:
    """(tenant, service name, attributes as jsonb) of a resource, cached.

    Every span of one export shares its resource, so a batch of records
    usually repeats a handful of resources; each is decoded once. `key` is
    an encoding of the resource (as received, or re-serialized) and
    `resource` the parsed message, or None to parse `key` if need be.
    """
    cached = _RESOURCE_CACHE.get(key)
    if cached is not None:
        return cached
    if resource is None:
        resource = _parse_resource(key)
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
        # A non-empty string_value means the string kind is set (the other
        # kinds read as ""), which saves a WhichOneof on the common case.
        text = value.string_value
        if text:
            attributes[key] = text.replace("\x00", "") if "\x00" in text else text
        else:
            attributes[key] = _plain(value, value.WhichOneof("value"))
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
