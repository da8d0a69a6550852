"""TelemetryService read-path benchmark: each query over a million LLM calls.

Loads 1,000,000 `llm_calls` rows and their spans (250,000 traces of one root
span and four LLM call spans; two traces per conversation) for four tenants
over seven days into a fresh, migrated database with binary COPY, then
`VACUUM ANALYZE`s it, as autovacuum would after a load. Then it starts the
worker's real gRPC server (read API only) and times every TelemetryService
query for the largest tenant over the last hour, day and week: latency and
TTFT percentiles (all models and one model), throughput buckets, error rate,
cost by model, and trace waterfalls by trace id and by conversation id.
Each figure is the median of several calls, timed at the client.

For each query's SQL it also prints what `EXPLAIN (ANALYZE)` shows: the
scans used (an index scan names its index) and any sequential scan over the
telemetry tables, which would mean the query does not scale.

Run: .venv/bin/python benchmarks/bench_telemetry_queries.py [--calls 1000000]
"""

import argparse
import asyncio
import datetime
import json
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from koverage.db import connect
from koverage.serving import connect as grpc_connect
from koverage.settings import Settings
from koverage.telemetry.v1 import telemetry_pb2, telemetry_pb2_grpc
from services.worker import (
    LLM_CALL_COLUMNS,
    LLM_CALL_TYPES,
    SPAN_COLUMNS,
    SPAN_TYPES,
    build_worker,
    copy_rows,
    migrate_database,
)
from services.worker import _telemetry as telemetry_sql
from tests.engines import fresh_database

_END = datetime.datetime(2026, 1, 12, tzinfo=datetime.UTC)
_DAYS = 7
_CALLS_PER_TRACE = 4
_TRACES_PER_CONVERSATION = 2
_TENANTS = ("acme", "beta", "gamma", "delta")
_TENANT_SHARES = (0.4, 0.3, 0.2, 0.1)
# (model, provider, USD per 1k input tokens, USD per 1k output tokens)
_MODELS = (
    ("openai/gpt-4o-mini", "openrouter", 0.00015, 0.0006),
    ("anthropic/claude-3.5-haiku", "openrouter", 0.0008, 0.004),
    ("qwen/qwen3-8b", "modal", 0.0, 0.0),
    ("sim/steady", "simulator", 0.0001, 0.0002),
    ("sim/flaky", "simulator", 0.0001, 0.0002),
    ("google/gemini-2.0-flash", "openrouter", 0.0001, 0.0004),
)
_ERROR_TYPES = ("timeout", "rate_limited", "upstream_5xx")
_CHUNK_TRACES = 25_000
_RUNS = 5
_API_KEY = "bench-key"


def load(database_url: str, calls: int, seed: int = 11) -> dict:
    """Fills `spans` and `llm_calls`; returns ids to look up afterwards."""
    rng = np.random.default_rng(seed)
    traces = calls // _CALLS_PER_TRACE
    sample: dict = {}
    with connect(database_url) as conn:
        for first in range(0, traces, _CHUNK_TRACES):
            count = min(_CHUNK_TRACES, traces - first)
            spans, llm_calls = _chunk(rng, first, count, sample)
            with conn.cursor() as cursor:
                copy_rows(cursor, "spans", SPAN_COLUMNS, SPAN_TYPES, spans)
                copy_rows(
                    cursor, "llm_calls", LLM_CALL_COLUMNS, LLM_CALL_TYPES, llm_calls
                )
            conn.commit()
    with connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE spans")
        conn.execute("VACUUM ANALYZE llm_calls")
    return sample


def _chunk(rng, first_trace: int, count: int, sample: dict):
    """Rows for traces first_trace .. first_trace + count - 1."""
    week_us = _DAYS * 24 * 3600 * 10**6
    trace_start_us = rng.integers(0, week_us, size=count)
    conversation = (first_trace + np.arange(count)) // _TRACES_PER_CONVERSATION
    # A conversation's traces share its tenant.
    conversation_tenant = rng.choice(
        len(_TENANTS), size=conversation[-1] - conversation[0] + 1, p=_TENANT_SHARES
    )
    tenant_of = conversation_tenant[conversation - conversation[0]]
    trace_ids = rng.bytes(16 * count)
    span_ids = rng.bytes(8 * count * (_CALLS_PER_TRACE + 1))

    n = count * _CALLS_PER_TRACE
    model_of = rng.integers(0, len(_MODELS), size=n)
    latency_ms = rng.gamma(2.0, 400.0, size=n).round(3)
    ttft_ms = (latency_ms * rng.uniform(0.05, 0.4, size=n)).round(3)
    input_tokens = rng.integers(20, 4000, size=n)
    output_tokens = rng.integers(1, 800, size=n)
    outcome = rng.random(size=n)
    error_of = rng.integers(0, len(_ERROR_TYPES), size=n)

    start = _END - datetime.timedelta(days=_DAYS)
    spans: list[tuple] = []
    llm_calls: list[tuple] = []
    for t in range(count):
        tenant = _TENANTS[tenant_of[t]]
        trace_id = trace_ids[16 * t : 16 * t + 16]
        root_id = span_ids[8 * t * 5 : 8 * t * 5 + 8]
        conversation_id = f"conv-{conversation[t]}"
        at_us = int(trace_start_us[t])
        root_start = start + datetime.timedelta(microseconds=at_us)
        for c in range(_CALLS_PER_TRACE):
            i = t * _CALLS_PER_TRACE + c
            span_id = span_ids[8 * (t * 5 + c + 1) : 8 * (t * 5 + c + 2)]
            model, provider, in_price, out_price = _MODELS[model_of[i]]
            call_start = start + datetime.timedelta(microseconds=at_us)
            latency = float(latency_ms[i])
            at_us += int(latency * 1000) + 1000
            status, error_type, status_code = "complete", None, 1
            if outcome[i] < 0.02:
                status, error_type, status_code = "error", _ERROR_TYPES[error_of[i]], 2
            elif outcome[i] < 0.03:
                status = "refused"
            cost = Decimal(
                f"{(input_tokens[i] * in_price + output_tokens[i] * out_price) / 1000:.10f}"
            )
            attributes = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
                "gen_ai.usage.input_tokens": int(input_tokens[i]),
                "gen_ai.usage.output_tokens": int(output_tokens[i]),
                "gen_ai.conversation.id": conversation_id,
                "koverage.status": status,
            }
            spans.append(
                (
                    trace_id,
                    span_id,
                    root_id,
                    tenant,
                    "router",
                    f"chat {model}",
                    3,
                    call_start,
                    call_start + datetime.timedelta(milliseconds=latency),
                    latency,
                    status_code,
                    "",
                    b"\x01" + json.dumps(attributes).encode(),
                    _resource(tenant, "router"),
                )
            )
            llm_calls.append(
                (
                    trace_id,
                    span_id,
                    tenant,
                    call_start,
                    latency,
                    float(ttft_ms[i]) if status != "error" else None,
                    "chat",
                    provider,
                    model,
                    model,
                    int(input_tokens[i]),
                    int(output_tokens[i]),
                    cost,
                    status,
                    error_type,
                    ["stop"] if status == "complete" else None,
                    conversation_id,
                    "Summarise the [EMAIL] thread",
                    "Here is a short summary.",
                    b"\x01{}",
                    False,
                    provider == "simulator",
                )
            )
        end = start + datetime.timedelta(microseconds=at_us)
        spans.append(
            (
                trace_id,
                root_id,
                None,
                tenant,
                "chat",
                "chat turn",
                2,
                root_start,
                end,
                (end - root_start).total_seconds() * 1000,
                1,
                "",
                b'\x01{"koverage.turn": 1}',
                _resource(tenant, "chat"),
            )
        )
        if tenant == _TENANTS[0] and "trace_id" not in sample:
            sample["trace_id"] = trace_id.hex()
            sample["conversation_id"] = conversation_id
    return spans, llm_calls


def _resource(tenant: str, service: str) -> bytes:
    return (
        b"\x01"
        + json.dumps({"service.name": service, "koverage.tenant": tenant}).encode()
    )


def _window(hours: int) -> telemetry_pb2.TimeWindow:
    window = telemetry_pb2.TimeWindow()
    window.start_time.FromDatetime(_END - datetime.timedelta(hours=hours))
    window.end_time.FromDatetime(_END)
    return window


def _bucket(hours: int):
    from google.protobuf import duration_pb2

    # About 60 to 170 buckets per window, as a dashboard would draw.
    seconds = {1: 60, 24: 900, 168: 3600}[hours]
    return duration_pb2.Duration(seconds=seconds)


async def time_queries(database_url: str, sample: dict) -> list[tuple[str, float]]:
    settings = Settings.from_env(
        {},
        worker_address="127.0.0.1:0",
        metrics_port=-1,
        database_url=database_url,
        api_keys=f"{_API_KEY}={_TENANTS[0]}",
        auth_required=True,
        dashboard_address="",
    )
    server, _ = await build_worker(settings, consume=False)
    await server.start()
    results = []
    try:
        async with grpc_connect(server.address, api_key=_API_KEY) as channel:
            stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
            for name, call in _calls(stub, sample):
                await call()  # warm: plan cache, buffers
                times = []
                for _ in range(_RUNS):
                    started = time.perf_counter()
                    await call()
                    times.append(time.perf_counter() - started)
                results.append((name, statistics.median(times) * 1000))
    finally:
        await server.stop(1.0)
    return results


def _calls(stub, sample: dict):
    for label, hours in (("1 h", 1), ("24 h", 24), ("7 d", 168)):
        window = _window(hours)
        yield (
            f"latency + TTFT percentiles, {label}",
            lambda w=window: stub.GetLatency(
                telemetry_pb2.GetLatencyRequest(window=w), timeout=30
            ),
        )
        yield (
            f"latency + TTFT percentiles, one model, {label}",
            lambda w=window: stub.GetLatency(
                telemetry_pb2.GetLatencyRequest(window=w, model=_MODELS[0][0]),
                timeout=30,
            ),
        )
        yield (
            f"throughput buckets, {label}",
            lambda w=window, h=hours: stub.GetThroughput(
                telemetry_pb2.GetThroughputRequest(window=w, bucket=_bucket(h)),
                timeout=30,
            ),
        )
        yield (
            f"error rate, {label}",
            lambda w=window: stub.GetErrorRate(
                telemetry_pb2.GetErrorRateRequest(window=w), timeout=30
            ),
        )
        yield (
            f"cost by model, {label}",
            lambda w=window: stub.GetCostByModel(
                telemetry_pb2.GetCostByModelRequest(window=w), timeout=30
            ),
        )
    yield (
        "waterfall by trace id",
        lambda: stub.GetTraceWaterfall(
            telemetry_pb2.GetTraceWaterfallRequest(trace_id=sample["trace_id"]),
            timeout=30,
        ),
    )
    yield (
        "waterfall by conversation id",
        lambda: stub.GetTraceWaterfall(
            telemetry_pb2.GetTraceWaterfallRequest(
                conversation_id=sample["conversation_id"]
            ),
            timeout=30,
        ),
    )


def explain_all(database_url: str, sample: dict) -> list[tuple[str, str, float]]:
    """(query, scans used, execution ms) from EXPLAIN ANALYZE of each SQL."""
    week = {
        "tenant": _TENANTS[0],
        "start": _END - datetime.timedelta(days=_DAYS),
        "end": _END,
    }
    trace_id = bytes.fromhex(sample["trace_id"])
    statements = [
        ("latency", telemetry_sql._LATENCY_SQL, {**week, "model": ""}),
        (
            "latency, one model",
            telemetry_sql._LATENCY_SQL,
            {**week, "model": _MODELS[0][0]},
        ),
        (
            "throughput",
            telemetry_sql._THROUGHPUT_SQL,
            {**week, "bucket": datetime.timedelta(hours=1)},
        ),
        ("error counts", telemetry_sql._COUNTS_SQL, week),
        ("errors by type", telemetry_sql._ERRORS_BY_TYPE_SQL, week),
        ("cost by model", telemetry_sql._COST_SQL, week),
        (
            "conversation traces",
            telemetry_sql._CONVERSATION_TRACES_SQL,
            {"tenant": _TENANTS[0], "conversation_id": sample["conversation_id"]},
        ),
        (
            "trace spans",
            telemetry_sql._TRACE_SPANS_SQL,
            {"tenant": _TENANTS[0], "trace_ids": [trace_id], "limit": 10_000},
        ),
    ]
    out = []
    with connect(database_url) as conn:
        for name, sql, params in statements:
            (plan,) = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params
            ).fetchone()
            scans: list[str] = []
            _scans(plan[0]["Plan"], scans)
            out.append((name, ", ".join(scans), plan[0]["Execution Time"]))
    return out


def _scans(node: dict, out: list[str]) -> None:
    kind = node["Node Type"]
    if "Scan" in kind and node.get("Relation Name") in ("spans", "llm_calls"):
        where = node.get("Index Name") or node["Relation Name"]
        heap = node.get("Heap Fetches")
        extra = f" (heap fetches {heap})" if heap is not None else ""
        out.append(f"{kind} on {where}{extra}")
    elif kind == "Bitmap Index Scan":
        out.append(f"{kind} on {node['Index Name']}")
    for child in node.get("Plans", ()):
        _scans(child, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()

    with fresh_database("koverage_bench_telemetry") as db:
        migrate_database(db)
        started = time.monotonic()
        sample = load(db, args.calls)
        load_s = time.monotonic() - started
        with connect(db) as conn:
            calls, spans = conn.execute(
                "SELECT (SELECT count(*) FROM llm_calls), (SELECT count(*) FROM spans)"
            ).fetchone()
            tenant_calls = conn.execute(
                "SELECT count(*) FROM llm_calls WHERE tenant = %s", (_TENANTS[0],)
            ).fetchone()[0]
        timings = asyncio.run(time_queries(db, sample))
        plans = explain_all(db, sample)

    print(
        f"loaded {calls:,} llm_calls and {spans:,} spans in {load_s:.0f} s "
        f"(COPY + VACUUM ANALYZE); tenant {_TENANTS[0]} has {tenant_calls:,} calls"
    )
    print(f"\nmedian of {_RUNS} calls through the gRPC server, tenant {_TENANTS[0]}:")
    for name, ms in timings:
        flag = "" if ms < 1000 else "   <-- over 1 s"
        print(f"  {name:48s} {ms:8.1f} ms{flag}")
    print("\nEXPLAIN ANALYZE, 7-day window (or one lookup):")
    for name, scans, ms in plans:
        seq = "SEQ SCAN! " if "Seq Scan" in scans else ""
        print(f"  {name:22s} {ms:8.1f} ms  {seq}{scans}")


if __name__ == "__main__":
    main()
