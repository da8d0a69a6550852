"""RedactingSpanProcessor: what reaches the exporter, and what it forwards."""

import json

import pytest
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import Status, StatusCode

from koverage.llmobs import (
    KOVERAGE_COMPLETION_PREVIEW,
    KOVERAGE_PROMPT_PREVIEW,
    KOVERAGE_REDACTION_COUNTS,
    KOVERAGE_TENANT,
    DropReason,
    RedactingSpanProcessor,
    _processor,
    spans_dropped,
    start_llm_span,
)


@pytest.fixture
def pipeline():
    exporter = InMemorySpanExporter()
    processor = RedactingSpanProcessor(
        SimpleSpanProcessor(exporter), preview_max_chars=40
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    yield provider.get_tracer("test"), exporter, processor
    provider.shutdown()


def test_llm_span_attributes_and_events_are_redacted_with_a_receipt(pipeline):
    tracer, exporter, _ = pipeline

    span = start_llm_span(tracer, "chat", "simulator", "sim-small")
    span.set_attribute("app.user_note", "mail me at ana@example.org")
    span.set_attribute("app.hosts", ["10.1.2.3", "db.internal", "10.9.8.7"])
    span.set_attribute("gen_ai.usage.input_tokens", 12)
    span.add_event("retry", {"reason": "key sk-abcdefghijklmnopqrstuvwxyz leaked"})
    span.set_status(Status(StatusCode.ERROR, "bad card 4111 1111 1111 1111"))
    span.end()

    (exported,) = exporter.get_finished_spans()
    attributes = exported.attributes
    assert attributes["app.user_note"] == "mail me at [EMAIL]"
    assert attributes["app.hosts"] == ("[IP]", "db.internal", "[IP]")
    assert attributes["gen_ai.usage.input_tokens"] == 12
    assert exported.events[0].attributes["reason"] == "key [CREDENTIAL] leaked"
    assert exported.status.description == "bad card [CARD]"
    assert json.loads(attributes[KOVERAGE_REDACTION_COUNTS]) == {
        "email": 1,
        "ip": 2,
        "credential": 1,
        "card": 1,
    }
    assert exported.name == "chat sim-small"
    assert exported.context.span_id == span.get_span_context().span_id


def test_previews_are_redacted_then_cut_to_the_limit(pipeline):
    tracer, exporter, _ = pipeline
    prompt = "My email is bob@example.com and " + "x" * 200
    # The card straddles the 40-character cut: it must not leak in part.
    completion = "The number you gave, 4111 1111 1111 1111, is stored."

    span = start_llm_span(tracer, "chat", "simulator", "sim-small")
    span.set_attribute(KOVERAGE_PROMPT_PREVIEW, prompt)
    span.set_attribute(KOVERAGE_COMPLETION_PREVIEW, completion)
    span.end()

    attributes = exporter.get_finished_spans()[0].attributes
    assert (
        attributes[KOVERAGE_PROMPT_PREVIEW]
        == ("My email is [EMAIL] and " + "x" * 200)[:40]
    )
    assert (
        attributes[KOVERAGE_COMPLETION_PREVIEW]
        == "The number you gave, [CARD], is stored."[:40]
    )
    assert "1111" not in attributes[KOVERAGE_COMPLETION_PREVIEW]
    assert json.loads(attributes[KOVERAGE_REDACTION_COUNTS]) == {"email": 1, "card": 1}


def test_clean_llm_span_gets_an_empty_receipt(pipeline):
    tracer, exporter, _ = pipeline

    start_llm_span(tracer, "chat", "simulator", "sim-small").end()

    attributes = exporter.get_finished_spans()[0].attributes
    assert attributes[KOVERAGE_REDACTION_COUNTS] == "{}"


def test_clean_non_llm_span_passes_through_unchanged(pipeline):
    tracer, exporter, _ = pipeline

    with tracer.start_as_current_span("router.Generate") as span:
        span.set_attribute("rpc.method", "Generate")

    (exported,) = exporter.get_finished_spans()
    # The SDK's own ended-span object, not a redacted copy.
    assert not isinstance(exported, _processor._RedactedSpan)
    assert dict(exported.attributes) == {"rpc.method": "Generate"}
    assert KOVERAGE_REDACTION_COUNTS not in exported.attributes


def test_existing_receipt_is_merged(pipeline):
    tracer, exporter, _ = pipeline

    span = start_llm_span(
        tracer,
        "chat",
        "simulator",
        "sim-small",
        attributes={KOVERAGE_REDACTION_COUNTS: '{"email": 2}', "note": "x@y.io"},
    )
    span.end()

    receipt = exporter.get_finished_spans()[0].attributes[KOVERAGE_REDACTION_COUNTS]
    assert json.loads(receipt) == {"email": 3}


def test_span_is_dropped_and_counted_when_redaction_fails(pipeline, monkeypatch):
    tracer, exporter, _ = pipeline

    def broken(_text):
        raise RuntimeError("boom")

    monkeypatch.setattr(_processor, "redact", broken)
    before = spans_dropped(DropReason.REDACTION_ERROR)

    span = start_llm_span(tracer, "chat", "simulator", "sim-small")
    span.set_attribute("note", "anything")
    span.end()

    assert exporter.get_finished_spans() == ()
    assert spans_dropped(DropReason.REDACTION_ERROR) == before + 1


class _RecordingProcessor:
    """A next processor that records what it was asked to do."""

    def __init__(self):
        self.calls = []

    def on_start(self, span, parent_context=None):
        self.calls.append(("on_start", span.name, parent_context))

    def on_end(self, span):
        self.calls.append(("on_end", span.name))

    def shutdown(self):
        self.calls.append(("shutdown",))

    def force_flush(self, timeout_millis=30000):
        self.calls.append(("force_flush", timeout_millis))
        return False


def test_on_start_shutdown_and_force_flush_are_forwarded():
    recorder = _RecordingProcessor()
    processor = RedactingSpanProcessor(recorder)
    provider = TracerProvider()
    provider.add_span_processor(processor)

    provider.get_tracer("test").start_span("op").end()
    flushed = processor.force_flush(1234)
    processor.shutdown()

    assert recorder.calls == [
        ("on_start", "op", None),
        ("on_end", "op"),
        ("force_flush", 1234),
        ("shutdown",),
    ]
    assert flushed is False


def test_preview_limit_is_validated():
    with pytest.raises(ValueError, match="preview_max_chars=0"):
        RedactingSpanProcessor(
            SimpleSpanProcessor(InMemorySpanExporter()), preview_max_chars=0
        )


def test_redacted_copy_keeps_the_drop_counts_of_the_original():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_attributes=4, max_events=1))
    provider.add_span_processor(RedactingSpanProcessor(SimpleSpanProcessor(exporter)))
    tracer = provider.get_tracer("test")

    span = start_llm_span(tracer, "chat", "simulator", "sim-small")
    for index in range(6):
        span.set_attribute(f"app.note_{index}", f"mail {index}@example.org")
    span.add_event("first", {"note": "call +1-415-555-0134"})
    span.add_event("second", {"note": "call +1-415-555-0135"})
    span.end()

    (exported,) = exporter.get_finished_spans()
    assert isinstance(exported, _processor._RedactedSpan)
    assert exported.dropped_attributes == span.dropped_attributes > 0
    assert exported.dropped_events == 1
    assert exported.events[0].attributes["note"] == "call [PHONE]"
    assert all("@" not in str(value) for value in exported.attributes.values())
    provider.shutdown()


def test_clean_short_values_are_scanned_once_and_dirty_ones_every_time(
    pipeline, monkeypatch
):
    tracer, exporter, _ = pipeline
    scanned = []
    real_redact = _processor.redact

    def recording_redact(text):
        scanned.append(text)
        return real_redact(text)

    monkeypatch.setattr(_processor, "redact", recording_redact)
    clean = "tenant-7f3e-unique-to-this-test"
    dirty = "reach me at zoe@example.net"

    for _ in range(3):
        span = start_llm_span(tracer, "chat", "simulator", "sim-small")
        span.set_attribute("app.tenant", clean)
        span.set_attribute("app.note", dirty)
        span.set_attribute("app.tags", (clean, "x"))
        span.end()

    assert scanned.count(clean) == 1
    assert scanned.count(dirty) == 3
    for exported in exporter.get_finished_spans():
        assert exported.attributes["app.tenant"] == clean
        assert exported.attributes["app.note"] == "reach me at [EMAIL]"
        assert exported.attributes["app.tags"] == (clean, "x")


def test_a_value_shared_by_a_preview_and_another_attribute_is_redacted_in_both(
    pipeline,
):
    tracer, exporter, _ = pipeline
    text = "write to ana@example.org"

    span = start_llm_span(tracer, "chat", "simulator", "sim-small")
    span.set_attribute(KOVERAGE_PROMPT_PREVIEW, text)
    span.set_attribute("app.last_user_message", text)
    span.end()

    attributes = exporter.get_finished_spans()[0].attributes
    assert attributes[KOVERAGE_PROMPT_PREVIEW] == "write to [EMAIL]"
    assert attributes["app.last_user_message"] == "write to [EMAIL]"
    assert json.loads(attributes[KOVERAGE_REDACTION_COUNTS]) == {"email": 2}


def test_child_spans_inherit_the_tenant_of_their_parent(pipeline):
    tracer, exporter, _ = pipeline

    with tracer.start_as_current_span("rpc") as rpc:
        # The server interceptor names the tenant after the span started.
        rpc.set_attribute(KOVERAGE_TENANT, "acme")
        with (
            tracer.start_as_current_span("db query"),
            tracer.start_as_current_span("row decode"),
        ):
            pass
        start_llm_span(tracer, "chat", "simulator", "sim-small").end()
        own = tracer.start_span("own tenant", attributes={KOVERAGE_TENANT: "beta"})
        own.end()
    with tracer.start_as_current_span("outside any rpc"):
        pass

    tenants = {
        s.name: s.attributes.get(KOVERAGE_TENANT) for s in exporter.get_finished_spans()
    }
    assert tenants == {
        "rpc": "acme",
        "db query": "acme",
        "row decode": "acme",
        "chat sim-small": "acme",
        "own tenant": "beta",
        "outside any rpc": None,
    }
