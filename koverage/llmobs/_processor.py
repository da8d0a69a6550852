"""The span processor that redacts spans before they are queued for export.

`RedactingSpanProcessor` sits in front of the export processor (normally a
`BatchSpanProcessor`). In `on_start` it copies the parent's `koverage.tenant`
onto a child span that names none, so every span of an RPC carries the
caller's tenant (the server interceptor sets it on the RPC's span) and the
ingest service can attribute spans relayed by a shared collector. In
`on_end`, on the caller's thread, it:

1. replaces PII and credentials in string attributes (and string sequences),
   in event attributes and in the status description;
2. cuts `koverage.prompt_preview` and `koverage.completion_preview` to
   `preview_max_chars`;
3. adds the receipt `koverage.redaction_counts`, a JSON object string of
   kind -> values replaced (`{}` on an LLM span where nothing was found);
4. counts the span in `koverage_spans_dropped_total` if the export queue is
   full or shut down, then hands it to the next processor, which never blocks.

An ended span is immutable, so a changed span is handed on as a new
`ReadableSpan` carrying the redacted values; a span with nothing to change is
handed on as it is, at no copy cost.
"""

import json
import logging
import time
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status

from koverage.llmobs._drops import DropReason, count_dropped_spans
from koverage.llmobs._redactor import redact
from koverage.llmobs._semconv import (
    GEN_AI_OPERATION_NAME,
    KOVERAGE_COMPLETION_PREVIEW,
    KOVERAGE_PROMPT_PREVIEW,
    KOVERAGE_REDACTION_COUNTS,
    KOVERAGE_TENANT,
)

_DEFAULT_PREVIEW_MAX_CHARS = 256
_PREVIEW_KEYS = (KOVERAGE_PROMPT_PREVIEW, KOVERAGE_COMPLETION_PREVIEW)
# A preview is redacted on a window this much longer than what is kept, so a
# value that straddles the cut is still recognised whole and replaced.
_PREVIEW_SCAN_MARGIN_CHARS = 64
_ERROR_LOG_INTERVAL_S = 60.0
# Short values (model names, providers, tenants, ids) repeat from span to
# span; those found clean are remembered. Longer text is always scanned.
_KNOWN_CLEAN_MAX_CHARS = 128
_KNOWN_CLEAN_VALUES = 4096
_KNOWN_CLEAN: set[str] = set()
_SEQUENCE_TYPES = frozenset((tuple, list))

logger = logging.getLogger(__name__)


class RedactingSpanProcessor(SpanProcessor):
    """Redacts ended spans, then hands them to `next_processor`.

    Known limitation: the queue-full count reads the private queue of the
    SDK's `BatchSpanProcessor` (`_batch_processor._queue`, a bounded deque,
    opentelemetry-sdk 1.45). With another next processor, or an SDK that
    moves that field, spans lost to a full queue are not counted here (a
    warning says so once at construction). Replacing the batch processor
    with one of our own would remove the dependency.

    Known limitation: a preview is redacted on its first `preview_max_chars`
    + 64 characters and then cut, so a value straddling the cut is replaced
    whole; but a JWT whose header and payload together run more than 64
    characters past the cut is not recognised, and its head survives in the
    preview (the PEM and prefixed-key patterns still match a cut-off value).
    Scanning the whole text would fix it at a cost that grows with the text.

    Known limitation: link attributes, resource attributes and span names are
    not redacted. Span names come from `start_llm_span` and instrumentation
    and carry no user text; links and resources are set by our own code. The
    ingest service checks all three and rejects a span holding PII there, so
    such a span is lost (and counted as rejected) rather than stored.
    """

    def __init__(
        self,
        next_processor: SpanProcessor,
        *,
        preview_max_chars: int = _DEFAULT_PREVIEW_MAX_CHARS,
    ) -> None:
        """Wraps `next_processor`.

        Args:
            next_processor: Receives every redacted span; normally a
                `BatchSpanProcessor` in front of the OTLP exporter.
            preview_max_chars: Longest preview kept, in characters.

        Raises:
            ValueError: `preview_max_chars` is below 1.
        """
        if preview_max_chars < 1:
            raise ValueError(
                f"preview_max_chars={preview_max_chars!r}: must be at least 1"
            )
        self._next = next_processor
        self._preview_max_chars = preview_max_chars
        self._batch = _batch_internals(next_processor)
        self._last_error_log_s = float("-inf")

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Inherits the parent's tenant, then forwards to the next processor."""
        parent = trace.get_current_span(parent_context)
        parent_attributes = getattr(parent, "attributes", None)
        if parent_attributes:
            tenant = parent_attributes.get(KOVERAGE_TENANT)
            if tenant and span.attributes.get(KOVERAGE_TENANT) is None:
                span.set_attribute(KOVERAGE_TENANT, tenant)
        self._next.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        """Redacts `span` and queues it; never raises, never blocks."""
        try:
            cleaned = self._redact_span(span)
        except Exception:  # noqa: BLE001 - a sink never raises into its caller
            # Sending the span unredacted is worse than losing it.
            count_dropped_spans(DropReason.REDACTION_ERROR)
            self._log_error_rate_limited("redaction failed; span dropped")
            return

        batch = self._batch
        if batch is not None:
            if batch._shutdown:
                count_dropped_spans(DropReason.SHUTDOWN)
            elif len(batch._queue) >= batch._max_queue_size:
                # The batch processor makes room by discarding its oldest span.
                count_dropped_spans(DropReason.QUEUE_FULL)
        self._next.on_end(cleaned)

    def shutdown(self) -> None:
        """Shuts the next processor down (flushing what it holds)."""
        self._next.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flushes the next processor; returns whether it finished in time."""
        return self._next.force_flush(timeout_millis)

    def _redact_span(self, span: ReadableSpan) -> ReadableSpan:
        counts: dict[str, int] = {}
        source = _plain_attributes(span)
        attributes = self._redact_attributes(source, counts, previews=True)
        events = self._redact_events(span, counts)
        original_status = status = span.status
        if status.description:
            description, found = redact(status.description)
            if found:
                status = Status(status.status_code, description)
                _add_counts(counts, found)

        is_llm = GEN_AI_OPERATION_NAME in source
        if (
            attributes is None
            and events is None
            and status is original_status
            and not is_llm
        ):
            return span

        attributes = dict(source) if attributes is None else attributes
        attributes[KOVERAGE_REDACTION_COUNTS] = _receipt(
            source.get(KOVERAGE_REDACTION_COUNTS), counts
        )
        return _RedactedSpan.copy_of(
            span, attributes=attributes, events=events, status=status
        )

    def _redact_attributes(
        self, source, counts: dict[str, int], *, previews: bool
    ) -> dict | None:
        # Returns a changed copy, or None when nothing needed changing.
        changed: dict | None = None
        if previews:
            for key in _PREVIEW_KEYS:
                value = source.get(key)
                if type(value) is not str:
                    continue
                new_value = self._redact_preview(value, counts)
                if new_value is not value:
                    if changed is None:
                        changed = dict(source)
                    changed[key] = new_value

        # The hot loop. Most values (model names, ids, finish reasons,
        # numbers) are the same clean values span after span: numbers are
        # skipped on their type, and strings known to be clean on one set
        # lookup, before any call.
        for key, value in source.items():
            value_type = type(value)
            if value_type is str:
                if value in _KNOWN_CLEAN or (previews and key in _PREVIEW_KEYS):
                    continue
                new_value = _redact_value(value, counts)
            elif value_type in _SEQUENCE_TYPES:
                if _KNOWN_CLEAN.issuperset(value):
                    continue
                new_value = _redact_sequence(value, counts)
            else:
                continue
            if new_value is not value:
                if changed is None:
                    changed = dict(source)
                changed[key] = new_value
        return changed

    def _redact_preview(self, text: str, counts: dict[str, int]) -> str:
        limit = self._preview_max_chars
        window = text[: limit + _PREVIEW_SCAN_MARGIN_CHARS]
        redacted, found = redact(window)
        if found:
            _add_counts(counts, found)
        if len(redacted) <= limit and redacted is text:
            return text
        return redacted[:limit]

    def _redact_events(self, span: ReadableSpan, counts: dict[str, int]):
        # Returns a new tuple of events, or None when none needed changing.
        events = _events_of(span)
        if not events:
            return None
        changed = False
        result = []
        for event in events:
            attributes = (
                self._redact_attributes(event.attributes, counts, previews=False)
                if event.attributes
                else None
            )
            if attributes is None:
                result.append(event)
                continue
            changed = True
            result.append(Event(event.name, attributes, event.timestamp))
        return tuple(result) if changed else None

    def _log_error_rate_limited(self, message: str) -> None:
        now_s = time.monotonic()
        if now_s - self._last_error_log_s >= _ERROR_LOG_INTERVAL_S:
            self._last_error_log_s = now_s
            logger.exception(message)


class CountingSpanExporter(SpanExporter):
    """Wraps an exporter and counts the spans of every failed export.

    Put it between the batch processor and the OTLP exporter
    (`BatchSpanProcessor(CountingSpanExporter(exporter))`) so spans lost to an
    unreachable collector appear in `koverage_spans_dropped_total` with
    reason `export_failed`.
    """

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Exports through the wrapped exporter; counts the batch on failure."""
        try:
            result = self._exporter.export(spans)
        except Exception:
            count_dropped_spans(DropReason.EXPORT_FAILED, len(spans))
            raise
        if result is not SpanExportResult.SUCCESS:
            count_dropped_spans(DropReason.EXPORT_FAILED, len(spans))
        return result

    def shutdown(self) -> None:
        """Shuts the wrapped exporter down."""
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flushes the wrapped exporter."""
        return self._exporter.force_flush(timeout_millis)


class _RedactedSpan(ReadableSpan):
    # A copy of an ended span with redacted attributes, events and status.
    # Drop counts are read from the original (kept as `_original`): the copy
    # holds plain containers, whose own counts would read 0. The original
    # holds only what the caller's own `Span` object still holds.

    def __init__(self, original: ReadableSpan, *, attributes, events, status) -> None:
        # The general copy, through the public properties of any ReadableSpan.
        super().__init__(
            name=original.name,
            context=original.context,
            parent=original.parent,
            resource=original.resource,
            attributes=attributes,
            events=original.events if events is None else events,
            links=original.links,
            kind=original.kind,
            status=status,
            start_time=original.start_time,
            end_time=original.end_time,
            instrumentation_scope=original.instrumentation_scope,
        )
        self._original = original

    @classmethod
    def copy_of(
        cls, original: ReadableSpan, *, attributes: dict, events, status
    ) -> "_RedactedSpan":
        """Copies `original`, replacing attributes, events (unless None), status.

        The SDK hands `on_end` a plain `ReadableSpan` whose fields all live in
        its instance dict, so that dict is copied in one C call and three
        fields are replaced, at a fraction of the cost of `__init__`, which
        reads every property again (events and links through the SDK's
        locked `BoundedList`). Any other kind of span takes the general copy.
        """
        if type(original) is not ReadableSpan:
            return cls(original, attributes=attributes, events=events, status=status)

        copy = cls.__new__(cls)
        fields = copy.__dict__
        fields.update(original.__dict__)
        fields["_attributes"] = attributes
        if events is not None:
            fields["_events"] = events
        fields["_status"] = status
        fields["_original"] = original
        return copy

    @property
    def dropped_attributes(self) -> int:
        return self._original.dropped_attributes

    @property
    def dropped_events(self) -> int:
        return self._original.dropped_events

    @property
    def dropped_links(self) -> int:
        return self._original.dropped_links


def _plain_attributes(span: ReadableSpan) -> dict:
    # The SDK keeps attributes in a BoundedAttributes whose Python-level
    # mapping methods cost about a microsecond per key; its inner dict is read
    # directly when present (opentelemetry-sdk 1.45), for the same content.
    inner = getattr(span._attributes, "_dict", None)
    if isinstance(inner, dict):
        return inner
    return dict(span.attributes or {})


def _events_of(span: ReadableSpan) -> Sequence[Event]:
    # The SDK's ended span keeps its events in a BoundedList, whose Python
    # `__len__` and locked `__iter__` cost more than the redaction of a span
    # without events; its inner deque is read directly when present
    # (opentelemetry-sdk 1.45). Nothing appends to an ended span's events.
    events = span._events
    inner = getattr(events, "_dq", None)
    if inner is not None:
        return inner
    return span.events


def _redact_value(value: str, counts: dict[str, int]) -> str:
    new_value, found = redact(value)
    if found:
        _add_counts(counts, found)
    elif len(value) <= _KNOWN_CLEAN_MAX_CHARS:
        if len(_KNOWN_CLEAN) >= _KNOWN_CLEAN_VALUES:
            _KNOWN_CLEAN.clear()  # a crude bound; the common values return
        _KNOWN_CLEAN.add(value)
    return new_value


def _redact_sequence(values: Sequence, counts: dict[str, int]):
    # Returns a tuple with redacted strings, or `values` itself if unchanged.
    if type(values[0]) is not str:
        return values
    result: list | None = None
    for index, item in enumerate(values):
        if type(item) is not str or item in _KNOWN_CLEAN:
            continue
        new_item = _redact_value(item, counts)
        if new_item is not item:
            if result is None:
                result = list(values)
            result[index] = new_item
    return values if result is None else tuple(result)


def _add_counts(counts: dict[str, int], found: dict[str, int]) -> None:
    for kind, count in found.items():
        counts[kind] = counts.get(kind, 0) + count


def _receipt(existing, counts: dict[str, int]) -> str:
    # Merges with a receipt already on the span (redaction done upstream).
    if isinstance(existing, str) and existing:
        try:
            earlier = json.loads(existing)
        except ValueError:
            earlier = {}
        if isinstance(earlier, dict):
            for kind, count in earlier.items():
                if isinstance(count, int):
                    counts[kind] = counts.get(kind, 0) + count
    if not counts:
        return "{}"
    # Kinds are fixed identifiers, so the JSON object is written directly.
    return "{" + ",".join(f'"{kind}":{counts[kind]}' for kind in sorted(counts)) + "}"


def _batch_internals(processor: SpanProcessor):
    # The SDK batch processor's inner BatchProcessor, if it has the fields the
    # queue-full check reads; None otherwise.
    inner = getattr(processor, "_batch_processor", None)
    if isinstance(processor, BatchSpanProcessor) and all(
        hasattr(inner, field) for field in ("_queue", "_max_queue_size", "_shutdown")
    ):
        return inner
    if isinstance(processor, BatchSpanProcessor):
        logger.warning(
            "BatchSpanProcessor internals changed; spans dropped on a full "
            "queue will not be counted"
        )
    return None
