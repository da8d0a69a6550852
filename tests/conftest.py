"""Suite-wide fixtures: one in-memory span exporter for the whole process, and
a loopback OTLP sink (`trace_sink`)."""

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.fixtures.otlp_sink import trace_sink  # noqa: F401 (shared fixture)

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider(resource=Resource.create({"service.name": "koverage-tests"}))
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_PROVIDER)


@pytest.fixture
def finished_spans():
    """Spans finished during the test (in-memory exporter, cleared per test)."""
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()
