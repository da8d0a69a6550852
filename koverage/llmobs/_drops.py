"""The counter of spans this process lost before export, and how to read it."""

import enum

import prometheus_client


class DropReason(enum.StrEnum):
    """Why a span never reached the exporter."""

    QUEUE_FULL = "queue_full"
    """The export queue was full (collector down or slow)."""
    SHUTDOWN = "shutdown"
    """The span ended after the export processor had shut down."""
    REDACTION_ERROR = "redaction_error"
    """Redaction raised; the span was dropped rather than sent unredacted."""
    EXPORT_FAILED = "export_failed"
    """The exporter reported failure for the batch that held the span."""


SPANS_DROPPED = prometheus_client.Counter(
    "koverage_spans_dropped",
    "Spans lost in this process before export, by reason.",
    ["reason"],
)


def count_dropped_spans(reason: DropReason, count: int = 1) -> None:
    """Adds `count` lost spans to `koverage_spans_dropped_total{reason=...}`."""
    SPANS_DROPPED.labels(reason=reason.value).inc(count)


def spans_dropped(reason: DropReason | None = None) -> int:
    """Returns spans dropped so far in this process, for one reason or all."""
    total = 0.0
    for metric in SPANS_DROPPED.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            if reason is None or sample.labels.get("reason") == reason.value:
                total += sample.value
    return int(total)
