"""Ingest fixtures: one real Tansu broker per session, an in-process ingest server."""

import contextlib

import pytest

from koverage.local import ensure_topics
from koverage.serving import connect
from koverage.settings import Settings
from services.ingest import build_server
from tests.engines import tansu_broker
from tests.ingest.otlp import unique_topic


@pytest.fixture(scope="session")
def kafka_bootstrap():
    with tansu_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def topics(kafka_bootstrap):
    spans, dlq = unique_topic("spans"), unique_topic("dlq")
    ensure_topics(kafka_bootstrap, {spans: 2, dlq: 1})
    return spans, dlq


@contextlib.asynccontextmanager
async def running_ingest(kafka_bootstrap: str, topics, **overrides):
    """Starts an ingest server; yields (server, settings)."""
    spans, dlq = topics
    fields = {
        "ingest_address": "127.0.0.1:0",
        "metrics_port": -1,
        "kafka_bootstrap": kafka_bootstrap,
        "kafka_spans_topic": spans,
        "kafka_dead_letter_topic": dlq,
        "kafka_spans_partitions": 2,
        "shutdown_grace_s": 1.0,
        **overrides,
    }
    settings = Settings.from_env({}, **fields)
    server = build_server(settings)
    await server.start()
    try:
        yield server, settings
    finally:
        await server.stop(0.5)


def export_call(address: str, api_key: str = ""):
    """A raw-bytes Export callable and its channel."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    from tests.ingest.otlp import EXPORT_METHOD

    channel = connect(address, api_key=api_key)
    call = channel.unary_unary(
        EXPORT_METHOD,
        request_serializer=None,
        response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
    )
    return channel, call
