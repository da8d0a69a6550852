"""A router call becomes an LLM call record and a linked trace in Postgres."""

import asyncio
import json
import time
import uuid
from decimal import Decimal

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

from koverage.db import connect
from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import connect as grpc_connect
from koverage.telemetry.v1 import telemetry_pb2, telemetry_pb2_grpc
from tests.beacon_e2e.conftest import router_process, running_pipeline

_tracer = trace.get_tracer("tests.beacon_e2e")


def _fetch_one(database_url: str, sql: str, params):
    with connect(database_url) as conn:
        return conn.execute(sql, params).fetchone()


async def _wait_for_row(database_url: str, sql: str, params, timeout_s: float = 30.0):
    # Async: the ingest server and worker API share this event loop.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = await asyncio.to_thread(_fetch_one, database_url, sql, params)
        if row is not None:
            return row
        await asyncio.sleep(0.2)
    raise AssertionError(f"no row for {sql} {params} within {timeout_s} s")


async def test_router_call_lands_as_an_llm_record_with_a_linked_trace(
    kafka_bootstrap, database_url, finished_spans
):
    conversation_id = str(uuid.uuid4())
    prompt = "Please write to e2e.person@example.com about the invoice"
    async with running_pipeline(
        kafka_bootstrap, database_url, collector=True
    ) as pipeline:
        with router_process(pipeline.collector) as router_address:
            channel = grpc_connect(router_address)
            async with channel:
                stub = router_pb2_grpc.RouterServiceStub(channel)
                with _tracer.start_as_current_span("e2e caller", kind=SpanKind.CLIENT):
                    summary = None
                    async for event in stub.Generate(
                        router_pb2.GenerateRequest(
                            model="sim/steady",
                            messages=[
                                router_pb2.ChatMessage(
                                    role=router_pb2.ROLE_USER, content=prompt
                                )
                            ],
                            conversation_id=conversation_id,
                        ),
                        timeout=20,
                    ):
                        if event.HasField("summary"):
                            summary = event.summary

            # The caller's own span goes through the same collector.
            (parent,) = [
                s for s in finished_spans.get_finished_spans() if s.name == "e2e caller"
            ]
            exporter = OTLPSpanExporter(endpoint=pipeline.collector, insecure=True)
            result = await asyncio.to_thread(exporter.export, [parent])
            assert result == SpanExportResult.SUCCESS
            exporter.shutdown()

            trace_id = bytes.fromhex(summary.trace_id)
            row = await _wait_for_row(
                database_url,
                "SELECT model, provider, input_tokens, output_tokens, cost_usd, ttft_ms,"
                " status, prompt_preview, redaction_counts, conversation_id, tenant,"
                " latency_ms, simulated FROM llm_calls WHERE trace_id = %s",
                (trace_id,),
            )
            await _wait_for_row(
                database_url,
                "SELECT 1 FROM spans WHERE trace_id = %s HAVING count(*) >= 3",
                (trace_id,),
            )

        telemetry_channel = grpc_connect(pipeline.worker_address)
        async with telemetry_channel:
            waterfall = await telemetry_pb2_grpc.TelemetryServiceStub(
                telemetry_channel
            ).GetTraceWaterfall(
                telemetry_pb2.GetTraceWaterfallRequest(conversation_id=conversation_id),
                timeout=10,
            )

    (model, provider, tokens_in, tokens_out, cost, ttft_ms, status, preview,
     redactions, conversation, tenant, latency_ms, simulated) = row  # fmt: skip
    assert (model, provider, status, conversation, tenant) == (
        "sim/steady",
        "simulator",
        "complete",
        conversation_id,
        "default",
    )
    assert (tokens_in, tokens_out) == (
        summary.usage.input_tokens,
        summary.usage.output_tokens,
    )
    assert tokens_out > 0 and simulated
    assert cost == Decimal(summary.cost_usd) and cost > 0
    router_ttft_ms = summary.time_to_first_token.ToNanoseconds() / 1e6
    assert abs(ttft_ms - router_ttft_ms) < 1.0
    assert 0 < ttft_ms <= latency_ms
    assert "e2e.person@example.com" not in preview and "[EMAIL]" in preview
    assert redactions == {"email": 1}

    # caller -> router server span -> provider call span, in one trace.
    names = [(s.name, s.depth) for s in waterfall.spans]
    assert names[0] == ("e2e caller", 0)
    assert ("koverage.router.v1.RouterService/Generate", 1) in names
    assert ("chat sim/steady", 2) in names
    chat = next(s for s in waterfall.spans if s.name == "chat sim/steady")
    server = next(s for s in waterfall.spans if s.depth == 1)
    assert chat.parent_span_id == server.span_id
    assert server.parent_span_id == waterfall.spans[0].span_id
    assert json.loads(chat.attributes["gen_ai.request.model"]) == "sim/steady"
    # The semconv TTFT, in seconds, beside Koverage's own in ms.
    ttft_chunk_s = json.loads(chat.attributes["gen_ai.response.time_to_first_chunk"])
    assert isinstance(ttft_chunk_s, float)
    assert abs(ttft_chunk_s * 1000 - router_ttft_ms) < 1.0
