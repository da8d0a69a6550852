"""GenAI spans and metrics follow the OpenTelemetry GenAI conventions."""

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from koverage.llmobs import GenAIMetrics, LlmCallStatus, start_llm_span


def test_start_llm_span_names_the_span_and_sets_request_attributes():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    span = start_llm_span(
        provider.get_tracer("test"),
        "chat",
        "openrouter",
        "qwen/qwen3-8b",
        conversation_id="conv-1",
        tenant="acme",
        temperature=0.2,
        max_tokens=256,
        seed=7,
    )
    span.set_attribute("koverage.status", LlmCallStatus.COMPLETE)
    span.end()

    (exported,) = exporter.get_finished_spans()
    assert exported.name == "chat qwen/qwen3-8b"
    assert exported.kind is SpanKind.CLIENT
    assert dict(exported.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openrouter",
        "gen_ai.request.model": "qwen/qwen3-8b",
        "gen_ai.conversation.id": "conv-1",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 256,
        "gen_ai.request.seed": 7,
        "koverage.tenant": "acme",
        "koverage.simulated": False,
        "koverage.status": "complete",
    }
    provider.shutdown()


def test_start_llm_span_rejects_an_empty_model():
    with pytest.raises(ValueError, match="model=''"):
        start_llm_span(TracerProvider().get_tracer("test"), "chat", "openrouter", "")


def test_genai_metrics_record_duration_tokens_and_first_chunk():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    recorder = GenAIMetrics(provider)

    recorder.record(
        operation="chat",
        provider="simulator",
        request_model="sim-small",
        response_model="sim-small-2",
        duration_s=1.5,
        input_tokens=120,
        output_tokens=30,
        time_to_first_chunk_s=0.25,
    )

    points = {}
    for resource_metrics in reader.get_metrics_data().resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    points.setdefault(metric.name, []).append(
                        (metric.unit, dict(point.attributes), point.sum)
                    )
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "simulator",
        "gen_ai.request.model": "sim-small",
        "gen_ai.response.model": "sim-small-2",
    }
    assert points["gen_ai.client.operation.duration"] == [("s", base, 1.5)]
    assert points["gen_ai.client.operation.time_to_first_chunk"] == [("s", base, 0.25)]
    assert sorted(points["gen_ai.client.token.usage"], key=lambda p: p[2]) == [
        ("{token}", {**base, "gen_ai.token.type": "output"}, 30),
        ("{token}", {**base, "gen_ai.token.type": "input"}, 120),
    ]
    provider.shutdown()


def test_genai_metrics_reject_negative_values():
    recorder = GenAIMetrics(MeterProvider())

    with pytest.raises(ValueError, match="duration_s=-1"):
        recorder.record(
            operation="chat", provider="p", request_model="m", duration_s=-1
        )
