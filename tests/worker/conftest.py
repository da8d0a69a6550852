"""Worker fixtures: a real Tansu broker, a fresh migrated database per test."""

import contextlib
import threading
import time

import pytest
from confluent_kafka import Producer
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from koverage.db import connect
from koverage.local import ensure_topics
from services.ingest import TENANT_ATTRIBUTE
from services.worker import ConsumerConfig, SpanConsumer, migrate_database
from tests.engines import fresh_database, tansu_broker
from tests.ingest.otlp import any_value, unique_topic


@pytest.fixture(scope="session")
def kafka_bootstrap():
    with tansu_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def database_url():
    with fresh_database("koverage_test_worker") as url:
        migrate_database(url)
        yield url


@pytest.fixture
def topics(kafka_bootstrap):
    spans, dlq = unique_topic("spans"), unique_topic("dlq")
    ensure_topics(kafka_bootstrap, {spans: 2, dlq: 1})
    return spans, dlq


def envelope(span: trace_pb2.Span, tenant: str = "acme", service: str = "svc") -> bytes:
    """The record value the ingest service would publish for `span`."""
    return trace_pb2.ResourceSpans(
        resource=resource_pb2.Resource(
            attributes=[
                common_pb2.KeyValue(key="service.name", value=any_value(service)),
                common_pb2.KeyValue(key=TENANT_ATTRIBUTE, value=any_value(tenant)),
            ]
        ),
        scope_spans=[trace_pb2.ScopeSpans(spans=[span])],
    ).SerializeToString()


def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(10) == 0


@contextlib.contextmanager
def running_consumer(bootstrap, topics, database_url, **overrides):
    """Runs a SpanConsumer on a thread; yields it, stops it on exit."""
    spans, dlq = topics
    fields = {
        "bootstrap": bootstrap,
        "group_id": unique_topic("group"),
        "spans_topic": spans,
        "dead_letter_topic": dlq,
        "database_url": database_url,
        **overrides,
    }
    consumer = SpanConsumer(ConsumerConfig(**fields))
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        consumer.stop()
        thread.join(30)
        assert not thread.is_alive()


def count_rows(database_url: str, table: str) -> int:
    with connect(database_url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def wait_for_rows(
    database_url: str, table: str, expected: int, timeout_s: float = 30.0
) -> int:
    """Polls until `table` holds `expected` rows; returns the last count."""
    deadline = time.monotonic() + timeout_s
    count = -1
    while time.monotonic() < deadline:
        count = count_rows(database_url, table)
        if count >= expected:
            return count
        time.sleep(0.1)
    return count
