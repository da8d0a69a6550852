"""The worker's consumer against real Tansu and Postgres."""

import concurrent.futures
import json
import multiprocessing
import os
import signal
import sys
import time
from decimal import Decimal

import pytest
from confluent_kafka import Consumer, TopicPartition

from koverage.db import connect
from services.worker import (
    LLM_CALL_COLUMNS,
    SPAN_COLUMNS,
    SpanWriter,
    UndecodableRecord,
    copy_encoded,
    decode_record,
    encode_rows,
)
from tests.ingest.otlp import llm_attributes, make_span, read_topic, unique_topic
from tests.worker.conftest import (
    count_rows,
    envelope,
    produce,
    running_consumer,
    wait_for_rows,
)


def test_decode_pulls_the_llm_call_fields_out_of_the_span():
    span = make_span(
        "chat sim/steady",
        duration_ms=80.0,
        attributes=llm_attributes(
            **{
                "gen_ai.conversation.id": "c-1",
                "koverage.redaction_counts": '{"email": 2}',
                "error.type": None,
            }
        ),
    )
    decoded = decode_record(envelope(span, tenant="acme"))

    row = dict(zip(LLM_CALL_COLUMNS, decoded.llm_call, strict=True))
    assert row["tenant"] == "acme"
    assert row["model"] == "sim/steady" and row["provider"] == "simulator"
    assert row["input_tokens"] == 11 and row["output_tokens"] == 5
    assert row["cost_usd"] == Decimal("0.0000130")
    assert row["ttft_ms"] == 21.5 and row["latency_ms"] == pytest.approx(80.0)
    assert row["status"] == "complete" and row["finish_reasons"] == ["stop"]
    assert row["conversation_id"] == "c-1"
    # jsonb columns travel in jsonb's binary form: version byte 1, then JSON.
    assert row["redaction_counts"][:1] == b"\x01"
    assert json.loads(row["redaction_counts"][1:]) == {"email": 2}


def test_decode_prefers_koverage_ttft_ms_and_falls_back_to_the_semconv_seconds():
    def ttft_ms(**attributes):
        span = make_span("chat m", attributes=llm_attributes(**attributes))
        row = dict(zip(LLM_CALL_COLUMNS, decode_record(envelope(span)).llm_call))
        return row["ttft_ms"]

    semconv = "gen_ai.response.time_to_first_chunk"
    koverage = "koverage.time_to_first_token_ms"
    assert ttft_ms(**{koverage: 21.5, semconv: 0.9}) == 21.5
    assert ttft_ms(**{koverage: None, semconv: 0.25}) == pytest.approx(250.0)
    assert ttft_ms(**{koverage: None, semconv: "soon"}) is None
    assert ttft_ms(**{koverage: None}) is None


def test_decode_keeps_a_plain_span_without_an_llm_row():
    decoded = decode_record(envelope(make_span("db query")))
    assert decoded.llm_call is None
    assert decoded.span[5] == "db query"


def test_decode_makes_values_postgres_refuses_storable():
    span = make_span(
        "bad\x00name",
        attributes={
            "nan": float("nan"),
            "inf": float("-inf"),
            "nul\x00key": "nul\x00value",
            "nested": [1.5, "a\x00b", True],
        },
    )
    decoded = decode_record(envelope(span))

    row = dict(zip(SPAN_COLUMNS, decoded.span, strict=True))
    assert row["name"] == "badname"
    assert json.loads(row["attributes"][1:]) == {
        "nan": "nan",
        "inf": "-inf",
        "nulkey": "nulvalue",
        "nested": [1.5, "ab", True],
    }


def test_writer_stores_a_batch_holding_duplicates_and_stored_rows_once(database_url):
    spans = [make_span(f"w{i}", attributes=llm_attributes()) for i in range(6)]
    decoded = [decode_record(envelope(s)) for s in spans]
    writer = SpanWriter(database_url)
    try:
        first = writer.write(encode_rows(decoded[:3]))
        # Three stored already, one twice within the batch, two new.
        second = writer.write(encode_rows(decoded + decoded[4:5]))
        third = writer.write(encode_rows(decoded))
    finally:
        writer.close()

    assert (first.spans, first.llm_calls) == (3, 3)
    assert (second.spans, second.llm_calls) == (3, 3)
    assert (third.spans, third.llm_calls) == (0, 0)
    assert writer.conflicts == 1  # the second write fell back to the merge
    assert count_rows(database_url, "spans") == 6
    assert count_rows(database_url, "llm_calls") == 6
    with connect(database_url) as conn:
        attributes = conn.execute(
            "SELECT attributes->>'gen_ai.request.model' FROM spans LIMIT 1"
        ).fetchone()[0]
    assert attributes == "sim/steady"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (b"\xff\xff\xff", "not an OTLP"),
        (b"\x12\x00", "holds 0 spans"),
    ],
)
def test_decode_refuses_what_is_not_an_envelope(value, reason):
    with pytest.raises(UndecodableRecord, match=reason):
        decode_record(value)


def test_spans_are_stored_once_even_when_delivered_twice(
    kafka_bootstrap, topics, database_url
):
    spans = [make_span(f"s{i}") for i in range(50)]
    llm = [make_span("chat x", attributes=llm_attributes()) for _ in range(10)]
    records = [(s.trace_id, envelope(s)) for s in spans + llm]
    produce(kafka_bootstrap, topics[0], records + records)  # the same batch twice

    with running_consumer(
        kafka_bootstrap, topics, database_url, batch_size=17
    ) as consumer:
        assert wait_for_rows(database_url, "spans", 60) == 60
        assert wait_for_rows(database_url, "llm_calls", 10) == 10
        while consumer.stats.records < 120:
            time.sleep(0.1)

    assert count_rows(database_url, "spans") == 60
    assert count_rows(database_url, "llm_calls") == 10
    assert consumer.stats.spans_inserted == 60


def test_undecodable_record_goes_to_the_dead_letter_topic_and_the_rest_is_stored(
    kafka_bootstrap, topics, database_url
):
    good = [make_span(f"g{i}") for i in range(5)]
    records = [(s.trace_id, envelope(s)) for s in good]
    records.insert(2, (b"k" * 16, b"\xde\xad\xbe\xef"))
    produce(kafka_bootstrap, topics[0], records)

    with running_consumer(kafka_bootstrap, topics, database_url):
        assert wait_for_rows(database_url, "spans", 5) == 5
        (dead,) = read_topic(kafka_bootstrap, topics[1], 1)

    headers = {k: v.decode() for k, v in dead.headers()}
    assert "not an OTLP ResourceSpans" in headers["koverage-reason"]
    assert headers["koverage-stage"] == "worker"
    assert headers["koverage-source"].startswith(topics[0] + "/")
    assert dead.value() == b"\xde\xad\xbe\xef"


def test_committed_offsets_let_a_restarted_group_resume_without_rereading(
    kafka_bootstrap, topics, database_url
):
    first = [make_span(f"a{i}") for i in range(20)]
    produce(kafka_bootstrap, topics[0], [(s.trace_id, envelope(s)) for s in first])
    group = unique_topic("group")
    with running_consumer(
        kafka_bootstrap, topics, database_url, group_id=group
    ) as consumer:
        assert wait_for_rows(database_url, "spans", 20) == 20
        while consumer.stats.records < 20:
            time.sleep(0.1)

    second = [make_span(f"b{i}") for i in range(5)]
    produce(kafka_bootstrap, topics[0], [(s.trace_id, envelope(s)) for s in second])
    with running_consumer(
        kafka_bootstrap, topics, database_url, group_id=group
    ) as consumer:
        assert wait_for_rows(database_url, "spans", 25) == 25
        while consumer.stats.records < 5:
            time.sleep(0.1)
        time.sleep(1.0)
    # Only the new records were read: the first run's offsets were committed.
    assert consumer.stats.records == 5


def _set_available(database_url: str, available: bool) -> None:
    """Makes the test's own database refuse (and cut) connections, or not."""
    name = database_url.rsplit("/", 1)[1].split("?")[0]
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    with connect(admin, autocommit=True) as conn:
        conn.execute(
            f"ALTER DATABASE {name} ALLOW_CONNECTIONS {str(available).lower()}"
        )
        if not available:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s",
                (name,),
            )


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = reader.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        reader.close()
    return sum(max(0, tp.offset) for tp in offsets)


def test_offsets_are_committed_only_after_the_rows_are_stored(
    kafka_bootstrap, topics, database_url
):
    spans = [make_span(f"o{i}") for i in range(30)]
    produce(kafka_bootstrap, topics[0], [(s.trace_id, envelope(s)) for s in spans])
    group = unique_topic("group")
    _set_available(database_url, False)
    try:
        with running_consumer(
            kafka_bootstrap, topics, database_url, group_id=group, batch_size=7
        ) as consumer:
            while consumer.stats.database_retries < 2:
                time.sleep(0.05)
            # Decoded and waiting, but nothing stored: nothing committed.
            assert _committed(kafka_bootstrap, group, topics[0], 2) == 0
            assert consumer.stats.records == 0

            _set_available(database_url, True)
            assert wait_for_rows(database_url, "spans", 30) == 30
            while consumer.stats.records < 30:
                time.sleep(0.05)
            assert _committed(kafka_bootstrap, group, topics[0], 2) == 30
    finally:
        _set_available(database_url, True)
    assert count_rows(database_url, "spans") == 30


def test_postgres_outage_is_retried_without_loss(kafka_bootstrap, topics, database_url):
    # A dedicated database made unavailable: connections refused and cut.
    def set_available(available: bool) -> None:
        _set_available(database_url, available)

    with running_consumer(kafka_bootstrap, topics, database_url) as consumer:
        before = [make_span(f"p{i}") for i in range(10)]
        produce(kafka_bootstrap, topics[0], [(s.trace_id, envelope(s)) for s in before])
        assert wait_for_rows(database_url, "spans", 10) == 10

        set_available(False)
        during = [make_span(f"q{i}") for i in range(30)]
        produce(kafka_bootstrap, topics[0], [(s.trace_id, envelope(s)) for s in during])
        while consumer.stats.database_retries < 2:
            time.sleep(0.1)
        set_available(True)

        assert wait_for_rows(database_url, "spans", 40) == 40
    assert count_rows(database_url, "spans") == 40


def test_consumer_lowers_the_gil_switch_interval_only_while_running(
    kafka_bootstrap, topics, database_url
):
    before_s = sys.getswitchinterval()
    with running_consumer(kafka_bootstrap, topics, database_url) as consumer:
        assert consumer.assigned.wait(30)
        # The writer thread gets the GIL back within 0.5 ms, not 5 ms.
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == before_s


def test_consumer_with_decode_processes_keeps_the_gil_switch_interval(
    kafka_bootstrap, topics, database_url
):
    before_s = sys.getswitchinterval()
    with running_consumer(
        kafka_bootstrap, topics, database_url, decode_processes=2
    ) as consumer:
        assert consumer.assigned.wait(30)
        # Decoding happens in other processes: no thread here competes.
        assert sys.getswitchinterval() == before_s


@pytest.mark.parametrize("decode_processes", [0, 2])
def test_records_the_table_or_postgres_refuse_are_dead_lettered_and_the_rest_stored(
    kafka_bootstrap, topics, database_url, decode_processes
):
    good = [make_span(f"r{i}", attributes=llm_attributes()) for i in range(8)]
    # numeric(20, 10) holds less than 1e10: Postgres refuses this row.
    costly = make_span(
        "chat big", attributes=llm_attributes(**{"koverage.cost_usd": 1e12})
    )
    wide = make_span("wide")
    wide.kind = 40_000  # past smallint: refused before it reaches Postgres
    spans = good[:4] + [costly, wide] + good[4:]
    produce(kafka_bootstrap, topics[0], [(s.trace_id, envelope(s)) for s in spans])

    with running_consumer(
        kafka_bootstrap, topics, database_url, decode_processes=decode_processes
    ) as consumer:
        assert wait_for_rows(database_url, "spans", 8) == 8
        dead = read_topic(kafka_bootstrap, topics[1], 2)
        while consumer.stats.records < 10:
            time.sleep(0.1)

    reasons = {m.value(): dict(m.headers())["koverage-reason"].decode() for m in dead}
    assert "Postgres refused" in reasons[envelope(costly)]
    assert "numeric field overflow" in reasons[envelope(costly)]
    assert "does not fit the table" in reasons[envelope(wide)]
    assert count_rows(database_url, "spans") == 8
    assert count_rows(database_url, "llm_calls") == 8
    assert consumer.stats.dead_lettered == 2


def test_a_killed_decode_process_loses_nothing(kafka_bootstrap, topics, database_url):
    first = [make_span(f"k{i}") for i in range(20)]
    produce(kafka_bootstrap, topics[0], [(s.trace_id, envelope(s)) for s in first])
    with running_consumer(
        kafka_bootstrap, topics, database_url, decode_processes=2, batch_size=10
    ) as consumer:
        assert wait_for_rows(database_url, "spans", 20) == 20
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGKILL)

        second = [make_span(f"l{i}") for i in range(30)]
        produce(kafka_bootstrap, topics[0], [(s.trace_id, envelope(s)) for s in second])
        assert wait_for_rows(database_url, "spans", 50) == 50
        while consumer.stats.records < 50:
            time.sleep(0.1)
        # A fresh pool decodes again.
        assert len(multiprocessing.active_children()) == 2
    assert count_rows(database_url, "spans") == 50
    assert consumer.stats.dead_lettered == 0


def test_a_write_deadlocked_by_another_connection_is_retried_and_stores_once(
    database_url,
):
    first, second = (decode_record(envelope(make_span(n))) for n in ("x", "y"))
    writer = SpanWriter(database_url)
    other = connect(database_url)
    try:
        # The other connection holds `second` uncommitted; the writer inserts
        # `first`, then waits for `second`; the other then inserts `first`
        # and waits for the writer: a deadlock, which the writer (waiting
        # longer) detects first and is rolled back for.
        other.execute("SET deadlock_timeout = '10s'")
        with other.cursor() as cursor:
            copy_encoded(cursor, "spans", SPAN_COLUMNS, encode_rows([second]).spans)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            written = pool.submit(writer.write, encode_rows([first, second]))
            _wait_for_lock_wait(database_url)
            with other.cursor() as cursor:
                copy_encoded(cursor, "spans", SPAN_COLUMNS, encode_rows([first]).spans)
            other.commit()
            result = written.result(timeout=30)
    finally:
        other.close()
        writer.close()

    assert writer.deadlocks == 1
    assert (result.spans, result.llm_calls) == (0, 0)  # the other stored both
    assert count_rows(database_url, "spans") == 2


def _wait_for_lock_wait(database_url: str) -> None:
    with connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()[0]
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the writer never waited for the other connection")


def test_two_write_connections_store_repeats_in_batches_in_flight_once(
    kafka_bootstrap, topics, database_url
):
    spans = [make_span(f"t{i}", attributes=llm_attributes()) for i in range(300)]
    records = [(s.trace_id, envelope(s)) for s in spans]
    # Each span three times, in batches that are in flight together.
    produce(kafka_bootstrap, topics[0], records + records[::-1] + records)

    with running_consumer(
        kafka_bootstrap,
        topics,
        database_url,
        batch_size=100,
        write_connections=2,
        decode_processes=2,
    ) as consumer:
        assert wait_for_rows(database_url, "spans", 300, timeout_s=60) == 300
        while consumer.stats.records < 900:
            time.sleep(0.1)

    assert count_rows(database_url, "spans") == 300
    assert count_rows(database_url, "llm_calls") == 300
    assert consumer.stats.spans_inserted == 300
    assert consumer.stats.dead_lettered == 0
