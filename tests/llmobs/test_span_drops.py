"""Spans lost to a full export queue are counted; on_end never blocks."""

import threading

import prometheus_client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from koverage.llmobs import (
    CountingSpanExporter,
    DropReason,
    RedactingSpanProcessor,
    spans_dropped,
)

_QUEUE_SIZE = 4
_BATCH_SIZE = 2
_WAIT_S = 10.0


class _BlockingExporter(SpanExporter):
    """Stands for a collector that stopped answering: export waits on a gate."""

    def __init__(self):
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.exported = 0

    def export(self, spans):
        self.entered.set()
        self.gate.wait(_WAIT_S)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        self.gate.set()


class _FailingExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.FAILURE

    def shutdown(self):
        pass


def test_drops_are_counted_when_the_exporter_blocks_and_on_end_does_not_wait():
    exporter = _BlockingExporter()
    batch = BatchSpanProcessor(
        exporter,
        max_queue_size=_QUEUE_SIZE,
        max_export_batch_size=_BATCH_SIZE,
        schedule_delay_millis=10,
    )
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor(batch))
    tracer = provider.get_tracer("test")
    before = spans_dropped(DropReason.QUEUE_FULL)

    # One batch takes the worker into the blocked export; the queue is empty.
    for _ in range(_BATCH_SIZE):
        tracer.start_span("first").end()
    assert exporter.entered.wait(_WAIT_S)

    # 50 more spans while the export is stuck: 4 fit, 46 are dropped. Ending
    # them happens on another thread, which must finish while the exporter is
    # still blocked (the gate is opened only afterwards).
    ended = threading.Event()

    def end_spans():
        for index in range(50):
            tracer.start_span(f"span {index}").end()
        ended.set()

    threading.Thread(target=end_spans, daemon=True).start()
    assert ended.wait(_WAIT_S)
    assert not exporter.gate.is_set()
    assert spans_dropped(DropReason.QUEUE_FULL) == before + 46
    exposed = prometheus_client.REGISTRY.get_sample_value(
        "koverage_spans_dropped_total", {"reason": "queue_full"}
    )
    assert exposed == before + 46

    exporter.gate.set()
    assert provider.force_flush()
    assert exporter.exported == _BATCH_SIZE + _QUEUE_SIZE
    provider.shutdown()


def test_spans_ended_after_shutdown_are_counted():
    exporter = _BlockingExporter()
    exporter.gate.set()
    processor = RedactingSpanProcessor(BatchSpanProcessor(exporter))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    span = tracer.start_span("late")
    processor.shutdown()
    before = spans_dropped(DropReason.SHUTDOWN)

    span.end()

    assert spans_dropped(DropReason.SHUTDOWN) == before + 1


def test_failed_exports_are_counted_by_the_counting_exporter():
    exporter = CountingSpanExporter(_FailingExporter())
    before = spans_dropped(DropReason.EXPORT_FAILED)
    total_before = spans_dropped()

    result = exporter.export([object(), object(), object()])

    assert result is SpanExportResult.FAILURE
    assert spans_dropped(DropReason.EXPORT_FAILED) == before + 3
    assert spans_dropped() == total_before + 3
