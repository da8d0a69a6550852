"""Encodes decoded rows as PostgreSQL binary COPY tuples, with no connection.

The worker decodes and encodes in separate processes (see
`services.worker._decode_pool`), which hold no database connection, so the
encoding here is done by hand rather than by psycopg's dumpers. The output
of `encode_span_row` / `encode_llm_call_row` is one tuple of the binary COPY
format (a 16-bit field count, then per field a 32-bit length and the bytes,
or -1 for NULL); `copy_data` frames joined tuples with the header and
trailer that `COPY ... FROM STDIN (FORMAT BINARY)` expects.

Values are the ones `services.worker._decode` produces, column by column:
bytes for bytea (and for jsonb, already in jsonb's wire form), str for
text, int for smallint and bigint, float for double precision, aware
datetimes for timestamptz, Decimal for numeric, a list of str for text[],
bool for boolean. Reference: the PostgreSQL manual, "COPY", section "Binary
Format", and each type's `*_send` function in the server sources (the wire
form of a value).
"""

import datetime
import decimal
import struct
from typing import NamedTuple

from services.worker._decode import DecodedSpan

SPAN_FIELDS = 14
"""Fields of a `spans` tuple (`services.worker.SPAN_COLUMNS`)."""

LLM_CALL_FIELDS = 22
"""Fields of an `llm_calls` tuple (`services.worker.LLM_CALL_COLUMNS`)."""

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
"""Signature, flags (no OIDs) and an empty header extension."""

COPY_TRAILER = struct.pack(">h", -1)

_PG_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)
_TEXT_OID = 25
_NULL = struct.pack(">i", -1)
_TRUE = b"\x00\x00\x00\x01\x01"
_FALSE = b"\x00\x00\x00\x01\x00"
_NUMERIC_POSITIVE = 0x0000
_NUMERIC_NEGATIVE = 0x4000
# Encoded fields of values that repeat (tenants, names, models, resources,
# prices), cleared whole when full. Per process: each decode process has its
# own.
_CACHE_ENTRIES = 4096
_CACHED_TEXT_MAX_BYTES = 256
_CACHED_JSONB_MAX_BYTES = 4096
_TEXT_FIELDS: dict[str, bytes] = {}
_JSONB_FIELDS: dict[bytes, bytes] = {}
_NUMERIC_FIELDS: dict[decimal.Decimal, bytes] = {}
_ARRAY_FIELDS: dict[tuple, bytes] = {}
_int4 = struct.Struct(">i").pack
_int2_field = struct.Struct(">ih").pack  # length 2, then the value
_int8_field = struct.Struct(">iq").pack  # length 8, then the value
_float8_field = struct.Struct(">id").pack  # length 8, then the value
_span_head = struct.Struct(">hi16si8s").pack  # count, trace id, span id
# kind, start, end, duration, status code: each a length, then the value.
_span_numbers = struct.Struct(">ihiqiqidih").pack
_time_and_latency = struct.Struct(">iqid").pack  # start time, latency
_array_head = struct.Struct(">iiiii").pack  # ndim, has-null, oid, size, lbound


class EncodedRows(NamedTuple):
    """Binary COPY tuples of some spans, each kind joined: what a write sends."""

    spans: bytes
    span_count: int
    llm_calls: bytes
    llm_call_count: int


def encode_rows(decoded: list[DecodedSpan]) -> EncodedRows:
    """Decoded records' rows as joined COPY tuples.

    Raises:
        ValueError, OverflowError, struct.error: a value does not fit its
            column's type (a smallint past 32767, say).
    """
    spans = [encode_span_row(d.span) for d in decoded]
    llm_calls = [encode_llm_call_row(d.llm_call) for d in decoded if d.llm_call]
    return EncodedRows(b"".join(spans), len(spans), b"".join(llm_calls), len(llm_calls))


def copy_data(tuples: bytes) -> bytes:
    """The whole COPY stream for joined `tuples` (from the `encode_*` functions)."""
    return COPY_HEADER + tuples + COPY_TRAILER


def encode_span_row(row: tuple) -> bytes:
    """One `spans` row (in `SPAN_COLUMNS` order) as a binary COPY tuple."""
    (
        trace_id, span_id, parent_span_id, tenant, service_name, name, kind,
        start_time, end_time, duration_ms, status_code, status_message,
        attributes, resource_attributes,
    ) = row  # fmt: skip
    if len(trace_id) != 16 or len(span_id) != 8:
        raise ValueError("trace_id must be 16 bytes and span_id 8")
    start_us = (start_time - _PG_EPOCH) // _MICROSECOND
    end_us = (end_time - _PG_EPOCH) // _MICROSECOND
    text = _TEXT_FIELDS.get
    return b"".join(
        (
            _span_head(SPAN_FIELDS, 16, trace_id, 8, span_id),
            _NULL if parent_span_id is None else _int4(len(parent_span_id)),
            parent_span_id or b"",
            text(tenant) or _repeated_text(tenant),
            text(service_name) or _repeated_text(service_name),
            text(name) or _repeated_text(name),
            _span_numbers(
                2, kind, 8, start_us, 8, end_us, 8, duration_ms, 2, status_code
            ),
            text(status_message) or _repeated_text(status_message),
            _int4(len(attributes)),
            attributes,
            _JSONB_FIELDS.get(resource_attributes) or _jsonb(resource_attributes),
        )
    )


def encode_llm_call_row(row: tuple) -> bytes:
    """One `llm_calls` row (in `LLM_CALL_COLUMNS` order) as a binary COPY tuple."""
    (
        trace_id, span_id, tenant, start_time, latency_ms, ttft_ms, operation,
        provider, model, response_model, input_tokens, output_tokens, cost_usd,
        status, error_type, finish_reasons, conversation_id, prompt_preview,
        completion_preview, redaction_counts, usage_estimated, simulated,
    ) = row  # fmt: skip
    text = _TEXT_FIELDS.get
    return b"".join(
        (
            _span_head(LLM_CALL_FIELDS, 16, trace_id, 8, span_id),
            text(tenant) or _repeated_text(tenant),
            _time_and_latency(
                8, (start_time - _PG_EPOCH) // _MICROSECOND, 8, latency_ms
            ),
            _NULL if ttft_ms is None else _float8_field(8, ttft_ms),
            text(operation) or _repeated_text(operation),
            text(provider) or _repeated_text(provider),
            text(model) or _repeated_text(model),
            _NULL
            if response_model is None
            else text(response_model) or _repeated_text(response_model),
            _NULL if input_tokens is None else _int8_field(8, input_tokens),
            _NULL if output_tokens is None else _int8_field(8, output_tokens),
            _NULL
            if cost_usd is None
            else _NUMERIC_FIELDS.get(cost_usd) or _numeric(cost_usd),
            text(status) or _repeated_text(status),
            _NULL
            if error_type is None
            else text(error_type) or _repeated_text(error_type),
            _text_array(finish_reasons),
            _NULL if conversation_id is None else _text(conversation_id),
            _NULL if prompt_preview is None else _text(prompt_preview),
            _NULL if completion_preview is None else _text(completion_preview),
            _JSONB_FIELDS.get(redaction_counts) or _jsonb(redaction_counts),
            _TRUE if usage_estimated else _FALSE,
            _TRUE if simulated else _FALSE,
        )
    )


def _text(value: str) -> bytes:
    data = value.encode()
    return _int4(len(data)) + data


def _repeated_text(value: str) -> bytes:
    """A text field that repeats (a name, a model, a tenant): remembered."""
    field = _text(value)
    if len(field) <= _CACHED_TEXT_MAX_BYTES:
        _remember(_TEXT_FIELDS, value, field)
    return field


def _jsonb(value: bytes) -> bytes:
    """A jsonb field (`value` is in jsonb's wire form already)."""
    field = _int4(len(value)) + value
    if len(value) <= _CACHED_JSONB_MAX_BYTES:
        # Resources and redaction receipts repeat from span to span.
        _remember(_JSONB_FIELDS, value, field)
    return field


def _remember(cache: dict, key, field: bytes) -> None:
    if len(cache) >= _CACHE_ENTRIES:
        cache.clear()
    cache[key] = field


def _text_array(values: list[str] | None) -> bytes:
    # A one-dimensional array: header, then each element as a field.
    if values is None:
        return _NULL
    key = tuple(values)
    field = _ARRAY_FIELDS.get(key)
    if field is None:
        has_null = None in key
        parts = [_array_head(1, int(has_null), _TEXT_OID, len(values), 1)]
        parts.extend(_NULL if v is None else _text(v) for v in values)
        data = b"".join(parts)
        field = _int4(len(data)) + data
        _remember(_ARRAY_FIELDS, key, field)
    return field


def _numeric(value: decimal.Decimal) -> bytes:
    """A finite Decimal in numeric's wire form: base-10000 digit groups.

    Header: number of groups, weight (the power of 10000 of the first
    group), sign, display scale (digits after the point); then the groups.
    Remembered: prices repeat from call to call.
    """
    if not value.is_finite():
        raise ValueError(f"numeric value {value} is not finite")
    sign, digits, exponent = value.as_tuple()
    scale = max(0, -exponent)
    if exponent > 0:
        digits = digits + (0,) * exponent
        exponent = 0

    # Pad with zeros so that the digits split into groups of four on both
    # sides of the decimal point.
    fraction_digits = -exponent
    right = -fraction_digits % 4
    digits = digits + (0,) * right
    left = -len(digits) % 4
    digits = (0,) * left + digits
    groups = [
        digits[i] * 1000 + digits[i + 1] * 100 + digits[i + 2] * 10 + digits[i + 3]
        for i in range(0, len(digits), 4)
    ]
    weight = (len(digits) - fraction_digits - right) // 4 - 1

    # Leading and trailing zero groups carry nothing.
    first = 0
    while first < len(groups) and groups[first] == 0:
        first += 1
    weight -= first
    last = len(groups)
    while last > first and groups[last - 1] == 0:
        last -= 1
    groups = groups[first:last]
    if not groups:
        weight = 0

    sign_word = _NUMERIC_NEGATIVE if sign and groups else _NUMERIC_POSITIVE
    data = struct.pack(
        f">hhHH{len(groups)}H", len(groups), weight, sign_word, scale, *groups
    )
    field = _int4(len(data)) + data
    _remember(_NUMERIC_FIELDS, value, field)
    return field
