"""OpenTelemetry tracing for a Koverage process, and W3C context over gRPC."""

import logging

from opentelemetry import metrics, propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from koverage.llmobs import CountingSpanExporter, RedactingSpanProcessor

logger = logging.getLogger(__name__)


def setup_tracing(
    service_name: str,
    otlp_endpoint: str = "",
    *,
    extra_processors: tuple[SpanProcessor, ...] = (),
) -> TracerProvider:
    """Installs the global tracer provider of this process.

    Spans go to `otlp_endpoint` (OTLP/gRPC, plaintext) through the export
    processor chain; with no endpoint, only `extra_processors` see them.
    Call once per process, from its entry point.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_endpoint:
        exporter = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)
        provider.add_span_processor(build_export_processor(exporter))
    for processor in extra_processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    logger.info(
        "tracing configured",
        extra={"otlp_endpoint": otlp_endpoint or None, "service": service_name},
    )
    return provider


def setup_metrics(service_name: str) -> MeterProvider:
    """Installs the global meter provider; its instruments (the GenAI client
    metrics among them) are served on the process's Prometheus endpoint."""
    provider = MeterProvider(
        resource=Resource.create({"service.name": service_name}),
        metric_readers=[PrometheusMetricReader()],
    )
    metrics.set_meter_provider(provider)
    return provider


def build_export_processor(exporter) -> SpanProcessor:
    """Returns the processor chain in front of `exporter`.

    The llmobs redacting processor wraps the batch processor, so nothing
    unredacted is queued for export.
    """
    # Export failures are counted as dropped spans, like a full queue.
    return RedactingSpanProcessor(BatchSpanProcessor(CountingSpanExporter(exporter)))


def inject_context(metadata: list[tuple[str, str]]) -> None:
    """Appends the current trace context (traceparent) to outgoing metadata."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    metadata.extend(carrier.items())


def extract_context(metadata: object):
    """Returns the OpenTelemetry context carried by incoming call metadata."""
    carrier = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            carrier[key] = value
    return propagate.extract(carrier)
