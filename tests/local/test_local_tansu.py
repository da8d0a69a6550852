"""Tansu broker: topics, produce and consume through a consumer group, teardown."""

import socket
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from koverage.local import TansuBroker, consumer_config, ensure_topics
from tests.engines import pid_alive, tansu_broker

pytestmark = pytest.mark.integration

_CONSUME_DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def bootstrap():
    with tansu_broker() as address:
        yield address


def _unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _consume(consumer: Consumer, count: int) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + _CONSUME_DEADLINE_S
    while len(values) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None, message.error()
        values.append(message.value())
        consumer.commit(message=message, asynchronous=False)
    return values


def test_ensure_topics_creates_missing_topics_once(bootstrap):
    spans, dead = _unique("spans"), _unique("dead")

    ensure_topics(bootstrap, {spans: 3, dead: 1})
    ensure_topics(bootstrap, {spans: 3})  # existing: left alone, no error

    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5).topics
    assert len(topics[spans].partitions) == 3
    assert len(topics[dead].partitions) == 1


def test_ensure_topics_rejects_zero_partitions(bootstrap):
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        ensure_topics(bootstrap, {"empty": 0})


@pytest.mark.slow
def test_consumer_group_receives_and_resumes_from_committed_offsets(bootstrap):
    topic, group = _unique("records"), _unique("workers")
    ensure_topics(bootstrap, {topic: 2})
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    sent = [f"record-{i}".encode() for i in range(10)]
    for i, value in enumerate(sent):
        producer.produce(topic, key=str(i).encode(), value=value)
    assert producer.flush(10) == 0

    settings = consumer_config(
        bootstrap,
        group,
        {"auto.offset.reset": "earliest", "enable.auto.commit": False},
    )
    first = Consumer(settings)
    first.subscribe([topic])
    received = _consume(first, len(sent))
    first.close()
    assert sorted(received) == sorted(sent)

    # A new member of the same group starts after the committed offsets.
    producer.produce(topic, key=b"late", value=b"after-commit")
    assert producer.flush(10) == 0
    second = Consumer(settings)
    second.subscribe([topic])
    assert _consume(second, 1) == [b"after-commit"]
    assert second.poll(1.0) is None
    second.close()


def test_consumer_config_lets_overrides_win():
    config = consumer_config("h:1", "g", {"session.timeout.ms": 9000})

    assert config["bootstrap.servers"] == "h:1"
    assert config["group.id"] == "g"
    assert config["session.timeout.ms"] == 9000
    assert config["max.poll.interval.ms"] == 10000


def test_broker_stops_and_frees_its_port(tmp_path):
    broker = TansuBroker(run_dir=tmp_path)
    host, port = broker.start().split(":")
    pid = broker.process.pid
    assert pid_alive(pid)

    broker.stop()

    assert not pid_alive(pid)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()
    assert "listening on" in (tmp_path / "tansu.log").read_text()
