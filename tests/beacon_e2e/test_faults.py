"""Faults on real parts; after each, every accepted span is stored exactly once."""

import asyncio
import os
import signal
import tempfile
import threading
import time
from typing import Self

import grpc
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from prometheus_client import REGISTRY

from koverage.db import connect, create_database
from koverage.llmobs import CountingSpanExporter, RedactingSpanProcessor, spans_dropped
from koverage.local import (
    EmbeddedPostgres,
    RotelCollector,
    Supervisor,
    free_port,
    start_service,
)
from koverage.settings import Settings
from services.ingest._servicer import SPANS_ACCEPTED
from services.worker import build_consumer
from tests.beacon_e2e.conftest import otlp_stub, running_pipeline
from tests.ingest.otlp import export_request, llm_attributes, make_span

_BATCH = 500


def _span_ids(database_url: str) -> list[bytes]:
    with connect(database_url) as conn:
        return [r[0] for r in conn.execute("SELECT span_id FROM spans").fetchall()]


def _count(database_url: str) -> int:
    try:
        with connect(database_url, connect_timeout_s=2) as conn:
            return conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    except psycopg.OperationalError:
        return -1


async def _wait_count(database_url: str, expected: int, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    count = -1
    while time.monotonic() < deadline:
        count = await asyncio.to_thread(_count, database_url)
        if count >= expected:
            return count
        await asyncio.sleep(0.2)
    return count


async def _send(
    address: str,
    batches: int,
    spans_per_batch: int = _BATCH,
    *,
    wait_for_ready=None,
    pause_s: float = 0.0,
) -> set[bytes]:
    """Exports fresh spans, `pause_s` apart per request; returns the span ids
    the ingest service accepted."""
    accepted: set[bytes] = set()
    channel, stub = otlp_stub(address)
    async with channel:
        for _ in range(batches):
            spans = [
                make_span("chat m", attributes=llm_attributes())
                if i % 10 == 0
                else make_span()
                for i in range(spans_per_batch)
            ]
            response = await stub.Export(
                export_request(spans), timeout=20, wait_for_ready=wait_for_ready
            )
            assert response.partial_success.rejected_spans == 0
            accepted.update(s.span_id for s in spans)
            await asyncio.sleep(pause_s)
    return accepted


def _assert_exactly_once(database_url: str, accepted: set[bytes]) -> None:
    stored = _span_ids(database_url)
    assert len(stored) == len(set(stored))  # guaranteed by the key; checked anyway
    assert set(stored) == accepted


@pytest.mark.slow
async def test_worker_killed_between_database_and_offset_commit_is_redelivered_once(
    kafka_bootstrap, database_url
):
    """SIGKILL lands after a batch's rows are stored, before its offsets are.

    The worker (`python -m services.worker`) is frozen with SIGSTOP whenever
    new rows appear, and killed only once the group's committed offsets are
    seen to be behind the stored rows; otherwise it is resumed and caught
    again. Spans arrive a request at a time while it runs, so after storing
    a batch it usually waits in its next poll for more (up to its poll
    timeout) before committing that batch's offsets: the window is wide
    enough to catch however fast the worker decodes. The restart runs the
    same consumer in this process so that its counters can be read: it must
    be handed every record from the committed offsets on, and store only
    those not stored before.
    """
    requests = 40  # 20,000 spans
    async with running_pipeline(
        kafka_bootstrap, database_url, worker=False
    ) as pipeline:
        settings = pipeline.settings
        address = f"127.0.0.1:{free_port()}"
        env = {
            **pipeline.env(),
            "KOVERAGE_WORKER_ADDRESS": address,
            "KOVERAGE_WORKER_BATCH_SIZE": str(_BATCH),
        }
        with Supervisor(tempfile.mkdtemp(prefix="koverage-kill-")) as supervisor:
            worker = start_service(supervisor, "worker", address, env=env)
            sending = asyncio.create_task(
                _send(pipeline.ingest_address, requests, pause_s=0.3)
            )
            caught = await asyncio.to_thread(
                _freeze_between_commits, worker.pid, settings, requests * _BATCH
            )
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
            supervisor.stop_process("worker")
            # Ingest keeps accepting while the worker is down.
            accepted = await sending
        assert caught, "never froze the worker between its two commits"

        # Final figures, read once the dead worker's sessions are gone.
        await _until(lambda: not _other_sessions(database_url), "backends to end")
        stored_at_kill = _count(database_url)
        committed_at_kill = await asyncio.to_thread(_committed_total, settings)
        assert 0 < committed_at_kill < stored_at_kill < len(accepted)  # (a)

        duplicates_before = _duplicates_counted()
        consumer = build_consumer(settings, batch_size=_BATCH)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        try:
            await _until(
                lambda: consumer.stats.records >= len(accepted) - committed_at_kill,
                "the restarted worker to read the rest of the topic",
            )
            await asyncio.sleep(1.0)  # anything delivered twice has had time to land
        finally:
            consumer.stop()
            await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive()

    # The restart read from the committed offsets, so the stored but
    # uncommitted records came again; the idempotent merge skipped exactly
    # those (a plain COPY stores all of a batch or nothing, so fewer spans
    # inserted than records read means the ON CONFLICT path ran).
    redelivered = stored_at_kill - committed_at_kill
    assert consumer.stats.records == len(accepted) - committed_at_kill
    assert consumer.stats.spans_inserted == len(accepted) - stored_at_kill
    assert consumer.stats.records - consumer.stats.spans_inserted == redelivered
    # ... and says so on /metrics, where an operator sees redeliveries.
    assert _duplicates_counted() - duplicates_before == redelivered
    _assert_exactly_once(database_url, accepted)
    # One span in ten is an LLM call (`_send`), each with one llm_calls row.
    assert _llm_call_keys(database_url) == (len(accepted) // 10,) * 2


def _freeze_between_commits(pid: int, settings: Settings, total: int) -> bool:
    """Freezes `pid` (SIGSTOP) while its stored rows run ahead of its offsets.

    Each time the span count grows, the worker has just committed a batch to
    Postgres and, a moment later, commits its offsets to Kafka; it is frozen
    at once and the two are compared, and resumed (SIGCONT) to try the next
    batch if the offsets had caught up. Bounded by the stream: once every
    span is stored there is no window left to catch.

    Returns:
        Whether the worker was frozen with 0 < committed offsets < stored
        rows; it is then left stopped, for the caller to kill.
    """
    deadline = time.monotonic() + 180.0
    last = 0
    with connect(settings.database_url) as conn:
        conn.autocommit = True
        while time.monotonic() < deadline:
            stored = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
            if stored >= total:
                return False
            if stored == last:
                time.sleep(0.001)
                continue
            last = stored
            os.kill(pid, signal.SIGSTOP)
            # Let an offset commit already on the wire land before reading.
            time.sleep(0.2)
            stored = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
            # Past the first batch, so a committed offset is there to read.
            if 0 < _committed_total(settings) < stored:
                return True
            os.kill(pid, signal.SIGCONT)
    return False


def _duplicates_counted() -> float:
    """The worker metric of records skipped as already stored, in this process."""
    value = REGISTRY.get_sample_value(
        "koverage_worker_records_total", {"outcome": "duplicate"}
    )
    return value or 0.0


def _committed_total(settings: Settings) -> int:
    """The group's committed offsets summed over the spans topic's partitions.

    Offsets of the test's fresh topic start at 0, one record per span, so
    the sum is the number of records the group will not be sent again.
    """
    reader = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.worker_group_id,
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = [
            TopicPartition(settings.kafka_spans_topic, p)
            for p in range(settings.kafka_spans_partitions)
        ]
        committed = reader.committed(partitions, timeout=10)
    finally:
        reader.close()
    return sum(max(tp.offset, 0) for tp in committed)


def _other_sessions(database_url: str) -> int:
    with connect(database_url) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]


def _llm_call_keys(database_url: str) -> tuple[int, int]:
    """Rows of `llm_calls`, and distinct (trace id, span id) among them."""
    with connect(database_url) as conn:
        return conn.execute(
            "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM llm_calls"
        ).fetchone()


@pytest.mark.slow
async def test_postgres_stopped_during_ingestion_and_restarted(
    kafka_bootstrap, tmp_path
):
    # A real, separate embedded Postgres that this test stops and starts.
    server = EmbeddedPostgres(tmp_path / "pg", ready_timeout_s=60)
    admin_url = server.start()
    try:
        database_url = create_database(admin_url, "beacon_outage")
        async with running_pipeline(kafka_bootstrap, database_url) as pipeline:
            accepted = await _send(pipeline.ingest_address, 4)
            assert await _wait_count(database_url, len(accepted)) == len(accepted)

            await asyncio.to_thread(server.stop)
            accepted |= await _send(pipeline.ingest_address, 6)  # Kafka takes them
            # The worker must meet the dead server (and retry) before it returns.
            deadline = time.monotonic() + 30
            while pipeline.consumer.stats.database_retries < 2:
                assert time.monotonic() < deadline, "the worker never hit the outage"
                await asyncio.sleep(0.1)
            await asyncio.to_thread(server.start)

            assert await _wait_count(database_url, len(accepted), 90) == len(accepted)
            await asyncio.sleep(1.0)
            _assert_exactly_once(database_url, accepted)
    finally:
        server.stop()


@pytest.mark.slow
async def test_collector_stopped_then_replaced(kafka_bootstrap, database_url, tmp_path):
    async with running_pipeline(kafka_bootstrap, database_url) as pipeline:
        grpc_port, http_port = free_port(), free_port()
        collector = RotelCollector(
            pipeline.ingest_address,
            run_dir=tmp_path,
            grpc_port=grpc_port,
            http_port=http_port,
        )
        endpoint = collector.start()
        accepted = await _send(endpoint, 2)
        assert await _wait_count(database_url, len(accepted)) == len(accepted)

        collector.stop()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _send(endpoint, 1)  # nobody accepts these
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

        collector = RotelCollector(
            pipeline.ingest_address,
            run_dir=tmp_path,
            grpc_port=grpc_port,
            http_port=http_port,
        )
        collector.start()
        try:
            # gRPC shares the refused subchannel; wait out its reconnect backoff.
            accepted |= await _send(endpoint, 2, wait_for_ready=True)
            assert await _wait_count(database_url, len(accepted)) == len(accepted)
            await asyncio.sleep(1.0)
        finally:
            collector.stop()
        _assert_exactly_once(database_url, accepted)


class _AcknowledgedIds:
    """An exporter wrapper that remembers the ids of spans the collector took."""

    def __init__(self, exporter) -> None:
        self._exporter = exporter
        self.ids: set[bytes] = set()

    def export(self, spans) -> SpanExportResult:
        result = self._exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.ids.update(s.context.span_id.to_bytes(8, "big") for s in spans)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class _SteadySpans:
    """Ends spans on a thread, about 1,000 a second, until the block exits."""

    def __init__(self, tracer) -> None:
        self._tracer = tracer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.ids: list[bytes] = []

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            for _ in range(20):
                with self._tracer.start_as_current_span(f"work {n}") as span:
                    span.set_attribute("app.n", n)
                self.ids.append(span.get_span_context().span_id.to_bytes(8, "big"))
                n += 1
            time.sleep(0.02)


def _accepted_total() -> int:
    # What ingest published to Kafka in this process (all tenants).
    return int(
        sum(
            sample.value
            for metric in SPANS_ACCEPTED.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
    )


async def _until(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_collector_stopped_mid_export_loses_nothing_uncounted(
    kafka_bootstrap, database_url, tmp_path
):
    accepted_before = _accepted_total()
    dropped_before = spans_dropped()
    async with running_pipeline(kafka_bootstrap, database_url) as pipeline:
        ports = {"grpc_port": free_port(), "http_port": free_port()}
        collector = RotelCollector(pipeline.ingest_address, run_dir=tmp_path, **ports)
        endpoint = collector.start()

        # The chain every Koverage service exports through, with a short
        # exporter timeout and queue so the outage turns into counted drops
        # within seconds.
        acknowledged = _AcknowledgedIds(
            OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=2)
        )
        provider = TracerProvider()
        provider.add_span_processor(
            RedactingSpanProcessor(
                BatchSpanProcessor(
                    CountingSpanExporter(acknowledged),
                    schedule_delay_millis=50,
                    max_export_batch_size=200,
                    max_queue_size=1000,
                )
            )
        )
        try:
            with _SteadySpans(provider.get_tracer("faults")) as sender:
                await _until(
                    lambda: _accepted_total() - accepted_before >= 500,
                    "spans to flow through the collector",
                )
                # Stopped while the SDK exports every 50 ms; off the event
                # loop, which also runs ingest (Rotel flushes to it on stop).
                await asyncio.to_thread(collector.stop)
                await _until(
                    lambda: spans_dropped() > dropped_before,
                    "the sender to count spans lost to the outage",
                )
                restarted_at = _accepted_total()
                collector = RotelCollector(
                    pipeline.ingest_address, run_dir=tmp_path, **ports
                )
                await asyncio.to_thread(collector.start)
                await _until(
                    lambda: _accepted_total() - restarted_at >= 500,
                    "spans to flow again after the restart",
                )
            assert await asyncio.to_thread(provider.force_flush, 30_000)
            await _until(
                lambda: _count(database_url) >= _accepted_total() - accepted_before,
                "the worker to store every accepted span",
            )
            await asyncio.sleep(1.0)  # anything redelivered has had time to land
        finally:
            provider.shutdown()
            await asyncio.to_thread(collector.stop)
        accepted = _accepted_total() - accepted_before

    produced = set(sender.ids)
    stored = _span_ids(database_url)
    dropped = spans_dropped() - dropped_before
    assert len(stored) == len(set(stored)) == accepted  # accepted, exactly once
    assert acknowledged.ids <= set(stored)  # what the collector took, it delivered
    assert set(stored) <= produced
    # Every span lost to the outage is counted. The queue-full count may run
    # over by a span or two (the export thread can make room right after the
    # check), so this is an inequality.
    assert 0 < len(produced) - len(stored) <= dropped


async def test_same_batch_sent_twice_is_stored_once(kafka_bootstrap, database_url):
    spans = [make_span() for _ in range(300)]
    async with running_pipeline(kafka_bootstrap, database_url) as pipeline:
        channel, stub = otlp_stub(pipeline.ingest_address)
        async with channel:
            for _ in range(2):
                await stub.Export(export_request(spans), timeout=20)
        assert await _wait_count(database_url, 300) == 300
        # Both copies went through Kafka; wait until the worker read them all.
        deadline = time.monotonic() + 30
        while pipeline.consumer.stats.records < 600 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert pipeline.consumer.stats.records == 600
    _assert_exactly_once(database_url, {s.span_id for s in spans})
