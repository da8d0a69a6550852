"""The hand-written binary COPY encoding, checked against Postgres itself."""

import datetime
import decimal
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koverage.db import connect
from services.worker import (
    LLM_CALL_COLUMNS,
    LLM_CALL_TYPES,
    SPAN_COLUMNS,
    SPAN_TYPES,
    copy_encoded,
    copy_rows,
)
from services.worker._copy_encode import (
    COPY_HEADER,
    COPY_TRAILER,
    _numeric,
    encode_llm_call_row,
    encode_span_row,
)

_UTC = datetime.UTC
_JSONB_EMPTY = b"\x01{}"


def _jsonb(value) -> bytes:
    return b"\x01" + json.dumps(value).encode()


def _span_row(i: int, **overrides) -> tuple:
    row = {
        "trace_id": bytes([i]) * 16,
        "span_id": bytes([i]) * 8,
        "parent_span_id": None,
        "tenant": "acme",
        "service_name": "chat",
        "name": "chat sim/steady",
        "kind": 3,
        "start_time": datetime.datetime(2026, 12, 4, 1, 2, 3, 456789, tzinfo=_UTC),
        "end_time": datetime.datetime(2026, 12, 4, 1, 2, 4, 1, tzinfo=_UTC),
        "duration_ms": 544.212,
        "status_code": 0,
        "status_message": "",
        "attributes": _jsonb({"k": "v"}),
        "resource_attributes": _jsonb({"service.name": "chat"}),
    }
    row.update(overrides)
    return tuple(row[c] for c in SPAN_COLUMNS)


def _llm_row(i: int, **overrides) -> tuple:
    row = {
        "trace_id": bytes([i]) * 16,
        "span_id": bytes([i]) * 8,
        "tenant": "acme",
        "start_time": datetime.datetime(2026, 12, 4, 1, 2, 3, tzinfo=_UTC),
        "latency_ms": 81.5,
        "ttft_ms": 21.5,
        "operation": "chat",
        "provider": "simulator",
        "model": "sim/steady",
        "response_model": "sim/steady",
        "input_tokens": 11,
        "output_tokens": 5,
        "cost_usd": decimal.Decimal("0.0000130"),
        "status": "complete",
        "error_type": None,
        "finish_reasons": ["stop"],
        "conversation_id": "c-1",
        "prompt_preview": "hello",
        "completion_preview": "hi there",
        "redaction_counts": _JSONB_EMPTY,
        "usage_estimated": False,
        "simulated": True,
    }
    row.update(overrides)
    return tuple(row[c] for c in LLM_CALL_COLUMNS)


# Rows at the edges of each column's type: NULLs, empty and non-ASCII text,
# times before 2000 (negative on the wire) and far ahead, numerics of every
# sign and scale, arrays with NULL and none at all.
_SPAN_ROWS = [
    _span_row(1),
    _span_row(2, parent_span_id=b"\x09" * 8, status_code=2, status_message="boom"),
    _span_row(
        3,
        tenant="テナント",
        name="🙂 span",
        service_name="",
        kind=0,
        start_time=datetime.datetime(1970, 1, 1, tzinfo=_UTC),
        end_time=datetime.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=_UTC),
        duration_ms=-0.0,
    ),
    _span_row(
        4,
        start_time=datetime.datetime(2262, 4, 11, tzinfo=_UTC),
        end_time=datetime.datetime(2262, 4, 11, 0, 0, 1, tzinfo=_UTC),
        duration_ms=1e300,
        attributes=_JSONB_EMPTY,
        kind=32767,
    ),
]
_LLM_ROWS = [
    _llm_row(1),
    _llm_row(
        2,
        ttft_ms=None,
        response_model=None,
        input_tokens=None,
        output_tokens=None,
        cost_usd=None,
        finish_reasons=None,
        conversation_id=None,
        prompt_preview=None,
        completion_preview=None,
        usage_estimated=True,
        simulated=False,
    ),
    _llm_row(
        3,
        cost_usd=decimal.Decimal("-1234567890.0123456789"),
        input_tokens=2**63 - 1,
        output_tokens=-(2**63),
        finish_reasons=[],
        status="error",
        error_type="RateLimitError",
    ),
    _llm_row(4, cost_usd=decimal.Decimal(0), finish_reasons=["stop", None, "長さ"]),
    _llm_row(5, cost_usd=decimal.Decimal("1E+5"), redaction_counts=_jsonb({"a": 1})),
    _llm_row(6, cost_usd=decimal.Decimal("0.00000000010"), prompt_preview=""),
]


def test_encoded_rows_are_stored_exactly_as_psycopg_formats_them(database_url):
    with connect(database_url) as conn:
        for table in ("spans", "llm_calls"):
            conn.execute(f"CREATE TABLE {table}_ref (LIKE {table} INCLUDING ALL)")
        with conn.cursor() as cursor:
            copy_encoded(
                cursor,
                "spans",
                SPAN_COLUMNS,
                b"".join(encode_span_row(r) for r in _SPAN_ROWS),
            )
            copy_encoded(
                cursor,
                "llm_calls",
                LLM_CALL_COLUMNS,
                b"".join(encode_llm_call_row(r) for r in _LLM_ROWS),
            )
            copy_rows(cursor, "spans_ref", SPAN_COLUMNS, SPAN_TYPES, _SPAN_ROWS)
            copy_rows(
                cursor, "llm_calls_ref", LLM_CALL_COLUMNS, LLM_CALL_TYPES, _LLM_ROWS
            )
        for table, columns, rows in (
            ("spans", SPAN_COLUMNS, _SPAN_ROWS),
            ("llm_calls", LLM_CALL_COLUMNS, _LLM_ROWS),
        ):
            names = ", ".join(columns)
            # numeric compares by value; its text shows the scale sent too.
            text_names = names.replace("cost_usd", "cost_usd::text")
            differing = conn.execute(
                f"SELECT count(*) FROM ("
                f"(SELECT {text_names} FROM {table} "
                f" EXCEPT ALL SELECT {text_names} FROM {table}_ref) UNION ALL "
                f"(SELECT {text_names} FROM {table}_ref "
                f" EXCEPT ALL SELECT {text_names} FROM {table})) AS d"
            ).fetchone()[0]
            stored = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert (stored, differing) == (len(rows), 0), table

        # And the values read back are the ones sent.
        back = conn.execute(
            f"SELECT {', '.join(SPAN_COLUMNS)} FROM spans ORDER BY trace_id"
        ).fetchall()
    assert [r[:12] for r in back] == [r[:12] for r in _SPAN_ROWS]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: abs(d.adjusted()) < 60
    )
)
def test_numeric_encoding_reads_back_as_the_same_decimal(database_url, value):
    with connect(database_url) as conn:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS n (v numeric)")
        statement = "COPY n (v) FROM STDIN (FORMAT BINARY)"
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(COPY_HEADER + b"\x00\x01" + _numeric(value) + COPY_TRAILER)
        stored, text = conn.execute("SELECT v, v::text FROM n").fetchone()
        conn.execute("DELETE FROM n")
    assert stored == value
    # The display scale is the Decimal's own number of digits after the point
    # (and numeric has no negative zero).
    assert text == format(abs(value) if value == 0 else value, "f")


def test_a_value_outside_its_column_type_does_not_encode():
    with pytest.raises(struct.error, match="format requires"):
        encode_span_row(_span_row(1, kind=40_000))
    with pytest.raises(ValueError, match="not finite"):
        encode_llm_call_row(_llm_row(1, cost_usd=decimal.Decimal("NaN")))
    with pytest.raises(ValueError, match="16 bytes"):
        encode_span_row(_span_row(1, trace_id=b"short"))
