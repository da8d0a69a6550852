"""TelemetryService over real Postgres rows written by the worker's writer."""

import datetime
import os
from decimal import Decimal

import grpc
import numpy as np
import pytest

from koverage.serving import connect
from koverage.settings import Settings
from koverage.telemetry.v1 import telemetry_pb2, telemetry_pb2_grpc
from services.worker import SpanWriter, build_worker, decode_record, encode_rows
from tests.ingest.otlp import llm_attributes, make_span
from tests.worker.conftest import envelope

_BASE = datetime.datetime(2026, 1, 5, 12, 0, tzinfo=datetime.UTC)


def _ns(moment: datetime.datetime) -> int:
    return int(moment.timestamp()) * 10**9


def _window(start, end) -> telemetry_pb2.TimeWindow:
    window = telemetry_pb2.TimeWindow()
    window.start_time.FromDatetime(start)
    window.end_time.FromDatetime(end)
    return window


@pytest.fixture
async def telemetry(database_url):
    settings = Settings.from_env(
        {},
        worker_address="127.0.0.1:0",
        metrics_port=-1,
        database_url=database_url,
        api_keys="ka=acme,kb=beta",
        auth_required=True,
    )
    server, _ = await build_worker(settings, consume=False)
    await server.start()
    channels = {
        t: connect(server.address, api_key=k)
        for t, k in (("acme", "ka"), ("beta", "kb"))
    }
    yield {t: telemetry_pb2_grpc.TelemetryServiceStub(c) for t, c in channels.items()}
    for channel in channels.values():
        await channel.close()
    await server.stop(0.5)


def _store(database_url, spans_with_tenants):
    writer = SpanWriter(database_url)
    try:
        writer.write(
            encode_rows(
                [decode_record(envelope(s, tenant=t)) for s, t in spans_with_tenants]
            )
        )
    finally:
        writer.close()


async def test_latency_percentiles_match_numpy_over_the_window(database_url, telemetry):
    rng = np.random.default_rng(7)
    latencies = rng.gamma(2.0, 150.0, size=200).round(3)
    ttfts = rng.gamma(2.0, 20.0, size=200).round(3)
    spans = [
        (
            make_span(
                "chat m",
                start_ns=_ns(_BASE) + i * 10**9,
                duration_ms=float(lat),
                attributes=llm_attributes(
                    **{"koverage.time_to_first_token_ms": float(t)}
                ),
            ),
            "acme",
        )
        for i, (lat, t) in enumerate(zip(latencies, ttfts, strict=True))
    ]
    # Outside the window, and another tenant's call: neither may count.
    spans.append(
        (
            make_span(
                "chat m",
                start_ns=_ns(_BASE) - 10**9,
                duration_ms=9e6 / 1e3,
                attributes=llm_attributes(),
            ),
            "acme",
        )
    )
    spans.append(
        (
            make_span(
                "chat m",
                start_ns=_ns(_BASE),
                duration_ms=9e5,
                attributes=llm_attributes(),
            ),
            "beta",
        )
    )
    _store(database_url, spans)

    response = await telemetry["acme"].GetLatency(
        telemetry_pb2.GetLatencyRequest(
            window=_window(_BASE, _BASE + datetime.timedelta(minutes=10))
        ),
        timeout=10,
    )
    assert response.latency.sample_count == 200
    expected = np.percentile(latencies, [50, 95, 99])  # linear = percentile_cont
    assert [
        response.latency.p50_ms,
        response.latency.p95_ms,
        response.latency.p99_ms,
    ] == (pytest.approx(list(expected), rel=1e-6))
    expected_ttft = np.percentile(ttfts, [50, 95, 99])
    assert response.time_to_first_token.p99_ms == pytest.approx(
        expected_ttft[2], rel=1e-6
    )


async def test_error_rate_cost_and_throughput_per_tenant(database_url, telemetry):
    def call(second, **attrs):
        return make_span(
            "chat",
            start_ns=_ns(_BASE) + second * 10**9,
            attributes=llm_attributes(**attrs),
        )

    _store(
        database_url,
        [
            (
                call(0, **{"koverage.cost_usd": "0.25", "gen_ai.request.model": "a"}),
                "acme",
            ),
            (
                call(1, **{"koverage.cost_usd": "0.50", "gen_ai.request.model": "a"}),
                "acme",
            ),
            (
                call(61, **{"koverage.cost_usd": "2.00", "gen_ai.request.model": "b"}),
                "acme",
            ),
            (
                call(
                    62,
                    **{
                        "koverage.status": "error",
                        "error.type": "Timeout",
                        "koverage.cost_usd": "0",
                    },
                ),
                "acme",
            ),
            (
                call(63, **{"koverage.status": "refused", "koverage.cost_usd": "0"}),
                "acme",
            ),
            (call(2, **{"koverage.cost_usd": "9.99"}), "beta"),
        ],
    )
    window = _window(_BASE, _BASE + datetime.timedelta(minutes=3))

    errors = await telemetry["acme"].GetErrorRate(
        telemetry_pb2.GetErrorRateRequest(window=window), timeout=10
    )
    assert (errors.call_count, errors.error_count, errors.refused_count) == (5, 1, 1)
    assert errors.error_rate == pytest.approx(0.2)
    assert dict(errors.errors_by_type) == {"Timeout": 1}

    cost = await telemetry["acme"].GetCostByModel(
        telemetry_pb2.GetCostByModelRequest(window=window), timeout=10
    )
    assert [(m.model, Decimal(m.cost_usd), m.call_count) for m in cost.models][:2] == [
        ("b", Decimal("2.00"), 1),
        ("a", Decimal("0.75"), 2),
    ]
    assert Decimal(cost.total_cost_usd) == Decimal("2.75")

    throughput = await telemetry["acme"].GetThroughput(
        telemetry_pb2.GetThroughputRequest(window=window), timeout=10
    )
    assert [b.call_count for b in throughput.buckets] == [2, 3, 0]
    assert throughput.call_count == 5
    assert throughput.calls_per_second == pytest.approx(5 / 180)


async def test_waterfall_of_a_trace_and_of_a_conversation(database_url, telemetry):
    trace = os.urandom(16)
    root = make_span("client", trace_id=trace, start_ns=_ns(_BASE), duration_ms=100)
    server = make_span(
        "router",
        trace_id=trace,
        parent_span_id=root.span_id,
        start_ns=_ns(_BASE) + 1000,
        duration_ms=90,
    )
    llm = make_span(
        "chat m",
        trace_id=trace,
        parent_span_id=server.span_id,
        start_ns=_ns(_BASE) + 2000,
        duration_ms=80,
        attributes=llm_attributes(**{"gen_ai.conversation.id": "conv-1"}),
    )
    _store(database_url, [(llm, "acme"), (server, "acme"), (root, "acme")])

    by_trace = await telemetry["acme"].GetTraceWaterfall(
        telemetry_pb2.GetTraceWaterfallRequest(trace_id=trace.hex()), timeout=10
    )
    assert [(s.name, s.depth) for s in by_trace.spans] == [
        ("client", 0),
        ("router", 1),
        ("chat m", 2),
    ]
    assert by_trace.spans[2].time_to_first_token.ToNanoseconds() == 21_500_000

    by_conversation = await telemetry["acme"].GetTraceWaterfall(
        telemetry_pb2.GetTraceWaterfallRequest(conversation_id="conv-1"), timeout=10
    )
    assert [s.span_id for s in by_conversation.spans] == [
        s.span_id for s in by_trace.spans
    ]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await telemetry["beta"].GetTraceWaterfall(
            telemetry_pb2.GetTraceWaterfallRequest(trace_id=trace.hex()), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_conversations_traces_come_in_time_order_not_id_order(
    database_url, telemetry
):
    # Turn 1 has the larger trace id, so id order would put turn 2 first;
    # within turn 2 the child span is stored first and has the smaller id.
    turn_1, turn_2 = b"\xf0" + os.urandom(15), b"\x0f" + os.urandom(15)
    first = make_span(
        "chat m",
        trace_id=turn_1,
        start_ns=_ns(_BASE),
        attributes=llm_attributes(**{"gen_ai.conversation.id": "conv-2"}),
    )
    root = make_span(
        "client", trace_id=turn_2, span_id=b"\xff" * 8, start_ns=_ns(_BASE) + 10**9
    )
    second = make_span(
        "chat m",
        trace_id=turn_2,
        span_id=b"\x01" * 8,
        parent_span_id=root.span_id,
        start_ns=_ns(_BASE) + 10**9 + 5000,
        attributes=llm_attributes(**{"gen_ai.conversation.id": "conv-2"}),
    )
    _store(database_url, [(second, "acme"), (first, "acme"), (root, "acme")])

    response = await telemetry["acme"].GetTraceWaterfall(
        telemetry_pb2.GetTraceWaterfallRequest(conversation_id="conv-2"), timeout=10
    )
    assert [(bytes.fromhex(s.trace_id), s.name) for s in response.spans] == [
        (turn_1, "chat m"),
        (turn_2, "client"),
        (turn_2, "chat m"),
    ]
    assert min(s.trace_id for s in response.spans) == turn_2.hex()  # id order differs


@pytest.mark.parametrize(
    "request_",
    [
        telemetry_pb2.GetTraceWaterfallRequest(),
        telemetry_pb2.GetTraceWaterfallRequest(trace_id="abc"),
        telemetry_pb2.GetTraceWaterfallRequest(trace_id="0" * 32, conversation_id="c"),
    ],
)
async def test_bad_waterfall_requests_are_invalid_argument(telemetry, request_):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await telemetry["acme"].GetTraceWaterfall(request_, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_window_is_invalid_argument(telemetry):
    backwards = _window(_BASE, _BASE - datetime.timedelta(seconds=1))
    too_long = _window(_BASE, _BASE + datetime.timedelta(days=40))
    for window in (backwards, too_long, telemetry_pb2.TimeWindow()):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await telemetry["acme"].GetLatency(
                telemetry_pb2.GetLatencyRequest(window=window), timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
