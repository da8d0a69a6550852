"""Rotel collector: forwards OTLP spans to a TraceService, then stops cleanly."""

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from koverage.local import RotelCollector
from tests.engines import pid_alive, rotel_collector
from tests.fixtures.otlp_sink import RecordingTraceService

pytestmark = pytest.mark.integration

_FORWARD_DEADLINE_S = 20.0


def _exported_spans(service: RecordingTraceService) -> list[tuple]:
    request = service.requests.get(timeout=_FORWARD_DEADLINE_S)
    found = []
    for resource_spans in request.resource_spans:
        resource = {
            a.key: a.value.string_value for a in resource_spans.resource.attributes
        }
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {a.key: a.value.string_value for a in span.attributes}
                found.append(
                    (
                        span.name,
                        attributes,
                        resource.get("service.name"),
                        span.trace_id.hex(),
                    )
                )
    return found


def test_rotel_forwards_a_span_to_the_trace_service(trace_sink):
    sink_address, service = trace_sink

    with rotel_collector(sink_address) as endpoint:
        provider = TracerProvider(
            resource=Resource.create({"service.name": "rotel-test"})
        )
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
        )
        with provider.get_tracer("tests").start_as_current_span("forwarded") as span:
            span.set_attribute("koverage.check", "through-rotel")
        trace_id = format(span.get_span_context().trace_id, "032x")
        provider.shutdown()

        spans = _exported_spans(service)

    assert spans == [
        ("forwarded", {"koverage.check": "through-rotel"}, "rotel-test", trace_id)
    ]


def test_rotel_stops_without_leftovers(tmp_path, trace_sink):
    collector = RotelCollector(trace_sink[0], run_dir=tmp_path)
    endpoint = collector.start()
    pid = collector.process.pid

    collector.stop()

    assert endpoint.startswith("127.0.0.1:")
    assert collector.http_endpoint.startswith("http://127.0.0.1:")
    assert not pid_alive(pid)
    assert "Starting Rotel" in (tmp_path / "rotel.log").read_text()


def test_rotel_needs_an_export_endpoint():
    with pytest.raises(ValueError, match="export_to"):
        RotelCollector("")
