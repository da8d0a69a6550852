"""The dashboard's reads: Beacon's telemetry and Underwriter's evaluation runs.

The window aggregates (percentiles, throughput, error rate, cost by model)
and the trace waterfall come from the worker's own `TelemetryServicer`, so
the dashboard shows exactly what `TelemetryService` answers over gRPC. The
SQL below covers only what that service has no RPC for: per-bucket series
for the charts, the conversation list, the LLM call fields of a waterfall's
spans, and the evaluation runs (`underwriter_runs`,
`underwriter_model_indexes`, owned by the underwriter, in the same
database). Every query is scoped to one tenant.
"""

import dataclasses
import datetime
import logging
import uuid
from decimal import Decimal

import psycopg
from google.protobuf import json_format
from psycopg_pool import AsyncConnectionPool

from koverage.errors import InvalidArgumentError, NotFoundError
from koverage.serving import set_current_tenant
from koverage.telemetry.v1 import telemetry_pb2
from services.worker._telemetry import TelemetryServicer

_CONVERSATIONS_LIMIT = 200
_RUNS_LIMIT = 100

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Window:
    """A dashboard window: its length and the chart bucket width."""

    name: str
    length: datetime.timedelta
    bucket: datetime.timedelta


WINDOWS = {
    w.name: w
    for w in (
        Window("15m", datetime.timedelta(minutes=15), datetime.timedelta(seconds=30)),
        Window("1h", datetime.timedelta(hours=1), datetime.timedelta(minutes=1)),
        Window("24h", datetime.timedelta(hours=24), datetime.timedelta(minutes=30)),
        Window("7d", datetime.timedelta(days=7), datetime.timedelta(hours=6)),
    )
}
"""The windows the page offers, by name."""

_SERIES_SQL = """
WITH buckets AS (
    SELECT date_bin(%(bucket)s, start_time, %(start)s) AS bucket,
           percentile_cont(ARRAY[0.5, 0.95, 0.99])
               WITHIN GROUP (ORDER BY latency_ms) AS latency,
           percentile_cont(ARRAY[0.5, 0.95, 0.99])
               WITHIN GROUP (ORDER BY ttft_ms) AS ttft,
           count(*) AS calls,
           count(*) FILTER (WHERE status = 'error') AS errors,
           count(*) FILTER (WHERE status = 'refused') AS refused
    FROM llm_calls
    WHERE tenant = %(tenant)s AND start_time >= %(start)s AND start_time < %(end)s
    GROUP BY 1
)
SELECT series.bucket, b.latency, b.ttft, coalesce(b.calls, 0),
       coalesce(b.errors, 0), coalesce(b.refused, 0)
FROM generate_series(%(start)s::timestamptz,
                     %(end)s::timestamptz - interval '1 microsecond',
                     %(bucket)s::interval) AS series(bucket)
LEFT JOIN buckets b ON b.bucket = series.bucket
ORDER BY series.bucket
"""

_CONVERSATIONS_SQL = """
SELECT conversation_id,
       min(start_time) AS first_call,
       max(start_time) AS last_call,
       count(*) AS calls,
       count(DISTINCT trace_id) AS traces,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE status = 'error') AS errors,
       count(*) FILTER (WHERE status = 'refused') AS refused,
       array_agg(DISTINCT model) AS models,
       (array_agg(prompt_preview ORDER BY start_time))[1] AS first_prompt
FROM llm_calls
WHERE tenant = %(tenant)s AND conversation_id IS NOT NULL
  AND start_time >= %(start)s AND start_time < %(end)s
GROUP BY conversation_id
ORDER BY max(start_time) DESC
LIMIT %(limit)s
"""

_CALLS_OF_CONVERSATION_SQL = """
SELECT trace_id, span_id, model, provider, status, error_type, ttft_ms,
       input_tokens, output_tokens, cost_usd, prompt_preview,
       completion_preview, redaction_counts, usage_estimated, simulated
FROM llm_calls
WHERE tenant = %(tenant)s AND conversation_id = %(conversation_id)s
"""

_RUNS_SQL = """
SELECT id, state, created_at, finished_at, spec, scorecard,
       report_pdf IS NOT NULL AS has_pdf, error
FROM underwriter_runs
WHERE tenant = %(tenant)s
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""

_MODEL_HISTORY_SQL = """
SELECT run_id, created_at, model, temperature, simulated, guardrail_arm, index,
       index_ci_low, index_ci_high, tier, tier_uncertain
FROM underwriter_model_indexes
WHERE tenant = %(tenant)s AND model = %(model)s
ORDER BY created_at, run_id, temperature, guardrail_arm
"""

_MODELS_SQL = """
SELECT DISTINCT model FROM underwriter_model_indexes
WHERE tenant = %(tenant)s ORDER BY model
"""

_REPORT_SQL = """
SELECT report_pdf FROM underwriter_runs WHERE id = %(id)s AND tenant = %(tenant)s
"""

_TENANTS_SQL = "SELECT DISTINCT tenant FROM llm_calls ORDER BY tenant LIMIT 500"


class DashboardQueries:
    """Reads for the dashboard over one pool; every method takes the tenant.

    Args:
        pool: A pool on the database that holds the worker's tables (and,
            when the underwriter shares it, `underwriter_runs`).
    """

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._telemetry = TelemetryServicer(pool)

    async def overview(
        self, tenant: str, window: Window, now: datetime.datetime
    ) -> dict:
        """Everything the live view shows for `window` ending at `now`."""
        end = now
        start = end - window.length
        proto_window = telemetry_pb2.TimeWindow()
        proto_window.start_time.FromDatetime(start)
        proto_window.end_time.FromDatetime(end)

        # The aggregates are TelemetryService's own answers.
        throughput_request = telemetry_pb2.GetThroughputRequest(window=proto_window)
        throughput_request.bucket.FromTimedelta(window.bucket)
        latency, throughput, errors, cost = await self._as_tenant(
            tenant,
            [
                ("GetLatency", telemetry_pb2.GetLatencyRequest(window=proto_window)),
                ("GetThroughput", throughput_request),
                (
                    "GetErrorRate",
                    telemetry_pb2.GetErrorRateRequest(window=proto_window),
                ),
                (
                    "GetCostByModel",
                    telemetry_pb2.GetCostByModelRequest(window=proto_window),
                ),
            ],
        )
        series = await self._fetch(
            _SERIES_SQL,
            {"tenant": tenant, "start": start, "end": end, "bucket": window.bucket},
        )
        return {
            "tenant": tenant,
            "window": window.name,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "bucket_s": window.bucket.total_seconds(),
            "latency": _message(latency),
            "throughput": _message(throughput),
            "errors": _message(errors),
            "cost": _message(cost),
            "series": _series(series, throughput),
        }

    async def conversations(
        self, tenant: str, window: Window, now: datetime.datetime
    ) -> list[dict]:
        """The tenant's conversations with calls in the window, newest first."""
        rows = await self._fetch(
            _CONVERSATIONS_SQL,
            {
                "tenant": tenant,
                "start": now - window.length,
                "end": now,
                "limit": _CONVERSATIONS_LIMIT,
            },
        )
        keys = (
            "conversation_id", "first_call", "last_call", "calls", "traces",
            "input_tokens", "output_tokens", "cost_usd", "errors", "refused",
            "models", "first_prompt",
        )  # fmt: skip
        return [_plain(dict(zip(keys, row, strict=True))) for row in rows]

    async def waterfall(self, tenant: str, conversation_id: str) -> dict:
        """A conversation's spans (every trace), with each LLM call's fields.

        Raises:
            NotFoundError: the tenant has no spans for the conversation.
        """
        request = telemetry_pb2.GetTraceWaterfallRequest(
            conversation_id=conversation_id
        )
        (response,) = await self._as_tenant(tenant, [("GetTraceWaterfall", request)])
        calls = await self._fetch(
            _CALLS_OF_CONVERSATION_SQL,
            {"tenant": tenant, "conversation_id": conversation_id},
        )
        by_span = {(row[0].hex(), row[1].hex()): row for row in calls}
        spans = []
        for span in response.spans:
            entry = _message(span)
            entry.pop("attributes", None)
            entry["start_time"] = span.start_time.ToDatetime(
                tzinfo=datetime.UTC
            ).isoformat()
            entry["duration_ms"] = span.duration.ToNanoseconds() / 1e6
            entry["ttft_ms"] = (
                span.time_to_first_token.ToNanoseconds() / 1e6
                if span.HasField("time_to_first_token")
                else None
            )
            call = by_span.get((span.trace_id, span.span_id))
            entry["llm_call"] = _llm_call(call) if call else None
            spans.append(entry)
        return {"conversation_id": conversation_id, "spans": spans}

    async def runs(self, tenant: str) -> list[dict]:
        """The tenant's evaluation runs, newest first, with scorecard summaries.

        Known limitation: an `underwriter_runs` table in another database
        (the underwriter pointed at its own Postgres) is invisible here; the
        list is then empty and `evaluation_available` is false.
        """
        rows = await self._fetch_optional(
            _RUNS_SQL, {"tenant": tenant, "limit": _RUNS_LIMIT}
        )
        return [_run(row) for row in rows or []]

    async def evaluation_available(self) -> bool:
        """Whether the underwriter's tables exist in this database."""
        rows = await self._fetch(
            "SELECT to_regclass('underwriter_runs') IS NOT NULL", {}
        )
        return bool(rows[0][0])

    async def model_history(self, tenant: str, model: str) -> list[dict]:
        """One model's index in every succeeded run, oldest first."""
        rows = await self._fetch_optional(
            _MODEL_HISTORY_SQL, {"tenant": tenant, "model": model}
        )
        keys = (
            "run_id", "created_at", "model", "temperature", "simulated",
            "guardrail_arm", "index", "index_ci_low", "index_ci_high", "tier",
            "tier_uncertain",
        )  # fmt: skip
        return [_plain(dict(zip(keys, row, strict=True))) for row in rows or []]

    async def evaluated_models(self, tenant: str) -> list[str]:
        """Models that appear in any succeeded run of the tenant."""
        rows = await self._fetch_optional(_MODELS_SQL, {"tenant": tenant})
        return [row[0] for row in rows or []]

    async def report_pdf(self, tenant: str, run_id: str) -> bytes:
        """The run's PDF report.

        Raises:
            InvalidArgumentError: run_id is not a UUID.
            NotFoundError: no such run for the tenant, or it has no report.
        """
        try:
            parsed = uuid.UUID(run_id)
        except ValueError:
            raise InvalidArgumentError(
                "run id must be a UUID", field="run_id"
            ) from None
        rows = await self._fetch_optional(_REPORT_SQL, {"id": parsed, "tenant": tenant})
        if not rows or rows[0][0] is None:
            raise NotFoundError(f"run {parsed} has no report")
        return bytes(rows[0][0])

    async def tenants(self) -> list[str]:
        """Tenants with recorded calls (offered only when keys are optional)."""
        return [row[0] for row in await self._fetch(_TENANTS_SQL, {})]

    async def _as_tenant(self, tenant: str, calls: list[tuple[str, object]]) -> list:
        # TelemetryServicer reads the tenant from the RPC context variable,
        # which the gRPC interceptor sets; here the dashboard's auth sets it.
        token = set_current_tenant(tenant)
        try:
            return [
                await getattr(self._telemetry, method)(request, None)
                for method, request in calls
            ]
        finally:
            token.var.reset(token)

    async def _fetch(self, sql: str, params: dict) -> list[tuple]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    async def _fetch_optional(self, sql: str, params: dict) -> list[tuple] | None:
        """Like `_fetch`, but None when the underwriter's tables are absent."""
        try:
            return await self._fetch(sql, params)
        except psycopg.errors.UndefinedTable:
            return None


def _message(message) -> dict:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def _series(rows: list[tuple], throughput) -> dict:
    """Column arrays for the charts; percentiles are null in empty buckets."""
    tokens = {
        b.start_time.ToDatetime(tzinfo=datetime.UTC): b.output_tokens
        for b in throughput.buckets
    }
    columns: dict[str, list] = {
        name: []
        for name in (
            "t", "latency_p50", "latency_p95", "latency_p99", "ttft_p50",
            "ttft_p95", "ttft_p99", "calls", "errors", "refused", "output_tokens",
        )
    }  # fmt: skip
    for bucket, latency, ttft, calls, errors, refused in rows:
        columns["t"].append(bucket.timestamp())
        for prefix, values in (("latency", latency), ("ttft", ttft)):
            for i, p in enumerate(("p50", "p95", "p99")):
                columns[f"{prefix}_{p}"].append(values[i] if values else None)
        columns["calls"].append(calls)
        columns["errors"].append(errors)
        columns["refused"].append(refused)
        columns["output_tokens"].append(int(tokens.get(bucket, 0)))
    return columns


def _llm_call(row: tuple) -> dict:
    keys = (
        "trace_id", "span_id", "model", "provider", "status", "error_type",
        "ttft_ms", "input_tokens", "output_tokens", "cost_usd", "prompt_preview",
        "completion_preview", "redaction_counts", "usage_estimated", "simulated",
    )  # fmt: skip
    call = _plain(dict(zip(keys, row, strict=True)))
    del call["trace_id"], call["span_id"]
    return call


def _run(row: tuple) -> dict:
    run_id, state, created, finished, spec, scorecard, has_pdf, error = row
    entries = []
    for entry in (scorecard or {}).get("entries", []):
        arms = {}
        for arm, summary in (entry.get("arms") or {}).items():
            arms[arm] = {
                "index": summary.get("index"),
                "index_ci": summary.get("index_ci"),
                "tier": summary.get("tier"),
                "tier_uncertain": summary.get("tier_uncertain"),
                "axes": {
                    axis: {"risk": a.get("risk"), "ci": a.get("ci"), "n": a.get("n")}
                    for axis, a in (summary.get("axes") or {}).items()
                },
            }
        entries.append(
            {
                "model": entry.get("model"),
                "temperature": entry.get("temperature"),
                "simulated": entry.get("simulated"),
                "arms": arms,
            }
        )
    agreement = {
        axis: {
            "kappa": a.get("kappa_quadratic"),
            "kappa_ci": a.get("kappa_ci"),
            "raw": a.get("raw"),
            "n": a.get("n"),
            "soft": a.get("soft"),
        }
        for axis, a in ((scorecard or {}).get("agreement") or {}).items()
    }
    return _plain(
        {
            "id": run_id,
            "state": state,
            "created_at": created,
            "finished_at": finished,
            "models": (spec or {}).get("models")
            or (scorecard or {}).get("manifest", {}).get("models", []),
            "entries": entries,
            "agreement": agreement,
            "recommendation": (scorecard or {}).get("recommendation", ""),
            "has_pdf": has_pdf,
            "error": error,
        }
    )


def _plain(value):
    """JSON-ready values: Decimal as text, times as ISO 8601, UUIDs as text."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value
