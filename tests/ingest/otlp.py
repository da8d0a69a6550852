"""Builders for OTLP spans and requests, and a Kafka topic reader, for Beacon tests."""

import os
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def any_value(value) -> common_pb2.AnyValue:
    """`value` as an OTLP AnyValue; None is an AnyValue with no kind set."""
    if value is None:
        return common_pb2.AnyValue()
    if isinstance(value, bytes):
        return common_pb2.AnyValue(bytes_value=value)
    if isinstance(value, dict):
        return common_pb2.AnyValue(
            kvlist_value=common_pb2.KeyValueList(
                values=[
                    common_pb2.KeyValue(key=k, value=any_value(v))
                    for k, v in value.items()
                ]
            )
        )
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        return common_pb2.AnyValue(
            array_value=common_pb2.ArrayValue(values=[any_value(v) for v in value])
        )
    return common_pb2.AnyValue(string_value=str(value))


def make_span(
    name: str = "work",
    *,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent_span_id: bytes = b"",
    start_ns: int | None = None,
    duration_ms: float = 12.5,
    attributes: dict | None = None,
    status_code: int = 0,
) -> trace_pb2.Span:
    start_ns = start_ns or time.time_ns()
    return trace_pb2.Span(
        trace_id=os.urandom(16) if trace_id is None else trace_id,
        span_id=os.urandom(8) if span_id is None else span_id,
        parent_span_id=parent_span_id,
        name=name,
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + int(duration_ms * 1e6),
        attributes=[
            common_pb2.KeyValue(key=k, value=any_value(v))
            for k, v in (attributes or {}).items()
        ],
        status=trace_pb2.Status(code=status_code),
    )


def llm_attributes(**overrides) -> dict:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "simulator",
        "gen_ai.request.model": "sim/steady",
        "gen_ai.response.model": "steady",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.response.finish_reasons": ["stop"],
        "koverage.cost_usd": "0.0000130",
        "koverage.time_to_first_token_ms": 21.5,
        "koverage.status": "complete",
        "koverage.prompt_preview": "Say hello",
        "koverage.completion_preview": "Hello there.",
        "koverage.redaction_counts": "{}",
        "koverage.simulated": True,
    }
    attributes.update(overrides)
    return {k: v for k, v in attributes.items() if v is not None}


def export_request(
    spans, service_name: str = "test-service"
) -> trace_service_pb2.ExportTraceServiceRequest:
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[
                        common_pb2.KeyValue(
                            key="service.name", value=any_value(service_name)
                        )
                    ]
                ),
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        scope=common_pb2.InstrumentationScope(name="tests"),
                        spans=list(spans),
                    )
                ],
            )
        ]
    )


def unique_topic(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def read_topic(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    partitions: int = 1,
    timeout_s: float = 15.0,
    quiet_s: float = 0.5,
) -> list:
    """Reads a topic from the start of every partition to its end (no group join).

    Reads until `count` records came (or `timeout_s` passed), then on until
    no record arrives for `quiet_s`, so records beyond the expected count are
    returned too. Watermarks are not used: Tansu's do not mark the end.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader-" + uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
    )
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.2):
                if message.error() is None:
                    records.append(message)
        quiet_until = time.monotonic() + quiet_s
        while time.monotonic() < quiet_until:
            batch = [
                m for m in consumer.consume(1000, timeout=0.2) if m.error() is None
            ]
            if batch:
                records += batch
                quiet_until = time.monotonic() + quiet_s
    finally:
        consumer.close()
    return records
