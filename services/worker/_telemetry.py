"""TelemetryService: Beacon's read API over the worker's tables.

Every query is scoped to the caller's tenant and a time window, and every
aggregate (percentiles, counts, sums) is computed in Postgres; Python only
reshapes the result. Percentiles are `percentile_cont` (linear
interpolation between the closest ranks, as in Hyndman & Fan 1996 type 7).
The window queries read `llm_calls_tenant_start_idx`, which covers every
column they need, so Postgres answers from the index alone.
"""

import datetime
import json
import logging
from decimal import Decimal

import psycopg
from psycopg_pool import AsyncConnectionPool

from koverage.errors import InvalidArgumentError, NotFoundError, UnavailableError
from koverage.serving import current_tenant
from koverage.telemetry.v1 import telemetry_pb2

_MAX_WINDOW = datetime.timedelta(days=31)
_MIN_BUCKET = datetime.timedelta(seconds=1)
_MAX_BUCKET = datetime.timedelta(days=1)
_DEFAULT_BUCKET = datetime.timedelta(minutes=1)
_MAX_BUCKETS = 50_000
_MAX_WATERFALL_SPANS = 10_000
_TRACE_ID_HEX = 32

logger = logging.getLogger(__name__)

_LATENCY_SQL = """
SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms),
       count(*),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ttft_ms),
       count(ttft_ms)
FROM llm_calls
WHERE tenant = %(tenant)s AND start_time >= %(start)s AND start_time < %(end)s
  AND (%(model)s = '' OR model = %(model)s)
"""

_THROUGHPUT_SQL = """
WITH buckets AS (
    SELECT date_bin(%(bucket)s, start_time, %(start)s) AS bucket,
           count(*) AS calls, coalesce(sum(output_tokens), 0) AS tokens
    FROM llm_calls
    WHERE tenant = %(tenant)s AND start_time >= %(start)s AND start_time < %(end)s
    GROUP BY 1
)
SELECT series.bucket, coalesce(b.calls, 0), coalesce(b.tokens, 0)
FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 microsecond',
                     %(bucket)s::interval) AS series(bucket)
LEFT JOIN buckets b ON b.bucket = series.bucket
ORDER BY series.bucket
"""

_ERRORS_BY_TYPE_SQL = """
SELECT error_type, count(*)
FROM llm_calls
WHERE tenant = %(tenant)s AND start_time >= %(start)s AND start_time < %(end)s
  AND status = 'error' AND error_type IS NOT NULL
GROUP BY error_type
"""

_COUNTS_SQL = """
SELECT count(*),
       count(*) FILTER (WHERE status = 'error'),
       count(*) FILTER (WHERE status = 'refused')
FROM llm_calls
WHERE tenant = %(tenant)s AND start_time >= %(start)s AND start_time < %(end)s
"""

_COST_SQL = """
SELECT model, provider, count(*), coalesce(sum(input_tokens), 0),
       coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0)
FROM llm_calls
WHERE tenant = %(tenant)s AND start_time >= %(start)s AND start_time < %(end)s
GROUP BY model, provider
ORDER BY 6 DESC, model
"""

# Traces in the order they started (a conversation's turns read top to
# bottom), the trace id breaking ties; spans within a trace by start time.
_TRACE_SPANS_SQL = """
SELECT s.trace_id, s.span_id, s.parent_span_id, s.name, s.service_name,
       s.start_time, s.duration_ms, s.status_code, s.attributes, c.ttft_ms
FROM spans s
LEFT JOIN llm_calls c ON c.trace_id = s.trace_id AND c.span_id = s.span_id
WHERE s.tenant = %(tenant)s AND s.trace_id = ANY(%(trace_ids)s)
ORDER BY min(s.start_time) OVER (PARTITION BY s.trace_id), s.trace_id,
         s.start_time, s.span_id
LIMIT %(limit)s
"""

_CONVERSATION_TRACES_SQL = """
SELECT DISTINCT trace_id FROM llm_calls
WHERE tenant = %(tenant)s AND conversation_id = %(conversation_id)s
"""

_STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}


class TelemetryServicer:
    """Implements `koverage.telemetry.v1.TelemetryService` over a pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def GetLatency(self, request, context):
        start, end = _window(request.window)
        rows = await self._query(
            _LATENCY_SQL,
            {
                "tenant": current_tenant(),
                "start": start,
                "end": end,
                "model": request.model,
            },
        )
        latency, count, ttft, ttft_count = rows[0]
        return telemetry_pb2.GetLatencyResponse(
            latency=_percentiles(latency, count),
            time_to_first_token=_percentiles(ttft, ttft_count),
        )

    async def GetThroughput(self, request, context):
        start, end = _window(request.window)
        bucket = _bucket(request)
        if (end - start) / bucket > _MAX_BUCKETS:
            raise InvalidArgumentError(
                f"window / bucket gives more than {_MAX_BUCKETS} buckets; widen the bucket",
                field="bucket",
            )
        rows = await self._query(
            _THROUGHPUT_SQL,
            {"tenant": current_tenant(), "start": start, "end": end, "bucket": bucket},
        )
        response = telemetry_pb2.GetThroughputResponse()
        seconds = (end - start).total_seconds()
        calls = tokens = 0
        for bucket_start, bucket_calls, bucket_tokens in rows:
            entry = response.buckets.add(
                call_count=bucket_calls, output_tokens=int(bucket_tokens)
            )
            entry.start_time.FromDatetime(bucket_start)
            calls += bucket_calls
            tokens += int(bucket_tokens)
        response.call_count = calls
        response.calls_per_second = calls / seconds
        response.output_tokens_per_second = tokens / seconds
        return response

    async def GetErrorRate(self, request, context):
        start, end = _window(request.window)
        params = {"tenant": current_tenant(), "start": start, "end": end}
        ((calls, errors, refused),) = await self._query(_COUNTS_SQL, params)
        by_type = await self._query(_ERRORS_BY_TYPE_SQL, params)
        return telemetry_pb2.GetErrorRateResponse(
            call_count=calls,
            error_count=errors,
            refused_count=refused,
            error_rate=errors / calls if calls else 0.0,
            refusal_rate=refused / calls if calls else 0.0,
            errors_by_type={error_type: n for error_type, n in by_type},
        )

    async def GetCostByModel(self, request, context):
        start, end = _window(request.window)
        rows = await self._query(
            _COST_SQL, {"tenant": current_tenant(), "start": start, "end": end}
        )
        response = telemetry_pb2.GetCostByModelResponse()
        total = Decimal(0)
        for model, provider, calls, input_tokens, output_tokens, cost in rows:
            response.models.add(
                model=model,
                provider=provider,
                call_count=calls,
                input_tokens=int(input_tokens),
                output_tokens=int(output_tokens),
                cost_usd=_decimal_text(cost),
            )
            total += cost
        response.total_cost_usd = _decimal_text(total)
        return response

    async def GetTraceWaterfall(self, request, context):
        tenant = current_tenant()
        if bool(request.trace_id) == bool(request.conversation_id):
            raise InvalidArgumentError(
                "give exactly one of trace_id and conversation_id", field="trace_id"
            )
        if request.trace_id:
            trace_ids = [_trace_id(request.trace_id)]
        else:
            rows = await self._query(
                _CONVERSATION_TRACES_SQL,
                {"tenant": tenant, "conversation_id": request.conversation_id},
            )
            trace_ids = [row[0] for row in rows]
        rows = []
        if trace_ids:
            rows = await self._query(
                _TRACE_SPANS_SQL,
                {
                    "tenant": tenant,
                    "trace_ids": trace_ids,
                    "limit": _MAX_WATERFALL_SPANS,
                },
            )
        if not rows:
            subject = (
                f"trace {request.trace_id}"
                if request.trace_id
                else f"conversation {request.conversation_id}"
            )
            raise NotFoundError(f"no spans recorded for {subject}")
        return telemetry_pb2.GetTraceWaterfallResponse(spans=_waterfall(rows))

    async def _query(self, sql: str, params: dict) -> list[tuple]:
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchall()
        except psycopg.OperationalError as exc:
            raise UnavailableError(
                f"the telemetry database is unavailable: {exc}"
            ) from exc


def _window(
    window: telemetry_pb2.TimeWindow,
) -> tuple[datetime.datetime, datetime.datetime]:
    if not window.HasField("start_time") or not window.HasField("end_time"):
        raise InvalidArgumentError(
            "window needs start_time and end_time", field="window"
        )
    start = window.start_time.ToDatetime(tzinfo=datetime.UTC)
    end = window.end_time.ToDatetime(tzinfo=datetime.UTC)
    if end <= start:
        raise InvalidArgumentError(
            "window end_time must be after start_time", field="window"
        )
    if end - start > _MAX_WINDOW:
        raise InvalidArgumentError("window may be at most 31 days long", field="window")
    return start, end


def _bucket(request: telemetry_pb2.GetThroughputRequest) -> datetime.timedelta:
    if not request.HasField("bucket") or request.bucket.ToNanoseconds() == 0:
        return _DEFAULT_BUCKET
    bucket = request.bucket.ToTimedelta()
    if not _MIN_BUCKET <= bucket <= _MAX_BUCKET:
        raise InvalidArgumentError(
            "bucket must be between 1 s and 1 day", field="bucket"
        )
    return bucket


def _percentiles(values, count: int) -> telemetry_pb2.Percentiles:
    if not count or values is None:
        return telemetry_pb2.Percentiles(sample_count=count or 0)
    p50, p95, p99 = values
    return telemetry_pb2.Percentiles(
        p50_ms=p50, p95_ms=p95, p99_ms=p99, sample_count=count
    )


def _trace_id(text: str) -> bytes:
    if len(text) != _TRACE_ID_HEX:
        raise InvalidArgumentError("trace_id must be 32 hex digits", field="trace_id")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise InvalidArgumentError(
            "trace_id must be 32 hex digits", field="trace_id"
        ) from None


def _decimal_text(value: Decimal) -> str:
    text = format(value.normalize(), "f") if value else "0"
    return text


def _waterfall(rows: list[tuple]) -> list[telemetry_pb2.WaterfallSpan]:
    depths = _depths({(row[0], row[1]): row[2] for row in rows})
    spans = []
    for (
        trace_id,
        span_id,
        parent,
        name,
        service,
        start,
        duration_ms,
        status,
        attrs,
        ttft,
    ) in rows:
        span = telemetry_pb2.WaterfallSpan(
            trace_id=trace_id.hex(),
            span_id=span_id.hex(),
            parent_span_id=parent.hex() if parent else "",
            name=name,
            service_name=service,
            depth=depths[(trace_id, span_id)],
            status=_STATUS_NAMES.get(status, "unset"),
            attributes={k: json.dumps(v) for k, v in (attrs or {}).items()},
        )
        span.start_time.FromDatetime(start)
        span.duration.FromNanoseconds(int(duration_ms * 1e6))
        if ttft is not None:
            span.time_to_first_token.FromNanoseconds(int(ttft * 1e6))
        spans.append(span)
    return spans


def _depths(parents: dict[tuple[bytes, bytes], bytes | None]) -> dict:
    """Depth of each (trace id, span id); a span whose parent is absent is a root."""
    depths: dict[tuple[bytes, bytes], int] = {}
    for key in parents:
        chain: list[tuple[bytes, bytes]] = []
        current = key
        while current not in depths:
            parent = parents[current]
            parent_key = (current[0], parent) if parent else None
            if (
                parent_key not in parents
                or parent_key in chain
                or parent_key == current
            ):
                depths[current] = 0
                break
            chain.append(current)
            current = parent_key
        depth = depths[current]
        for child in reversed(chain):
            depth += 1
            depths[child] = depth
    return depths
