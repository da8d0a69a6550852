"""The worker's Kafka consumer loop: spans topic -> Postgres, at least once.

Per batch: consume up to `batch_size` records; decode each (into binary
COPY tuples); write the decodable ones to Postgres in one transaction;
publish the undecodable ones (and rows that do not fit the tables' types)
to the dead-letter topic and wait for Kafka's ack; only then commit the
batch's offsets. A crash anywhere before the offset commit means the batch
is delivered again, and the write skips what is already stored, so nothing
is lost and nothing is stored twice.

Decoding (Python, CPU) and writing (mostly Postgres's time) overlap: the
consumer thread owns every Kafka call, consumes batches and hands each to
the decode pool (`services.worker._decode_pool`: child processes, or the
consumer thread itself when it has none) and then to the writer threads,
one per write connection. Up to `write_connections + _BATCHES_DECODING`
batches are consumed and uncommitted at once: one being written on each
connection, the next ones decoding, so a writer finds its next batch
ready. Batch n's offsets are committed, by the consumer thread, only after
batch n's database commit, and batches are committed in the order consumed
(batches on two connections, or one retried after an outage, may be
written in another order; every write is idempotent, and two writes that
hold the same span are resolved by Postgres's deadlock detection, see
`SpanWriter.write`).

While Postgres is down the loop pauses its partitions (no more fetching) but
keeps polling, so it stays in the consumer group, and retries the same batch
with capped exponential backoff until the write succeeds. It never skips the
batch.

A batch Postgres refuses for its content (not connectivity) is written one
record at a time, and each refused record goes to the dead-letter topic with
Postgres's message, so one poison record cannot stall a partition.

When decoding runs on the consumer thread (no decode processes), the two
threads share one GIL. With CPython's default switch interval (5 ms) the
writer, which needs the GIL only briefly between socket waits, waits up to
5 ms for the decoding thread each time; measured here that doubled a
batch's write time. So `run()` then lowers the process's switch interval to
`_GIL_SWITCH_INTERVAL_S` while it runs.

Known limitation: a child process that dies (killed, out of memory) breaks
the pool; the batch it held is decoded again on the writer thread and the
pool is started afresh, so nothing is lost, but that batch is slow. The
switch interval (no decode processes only) is a process-wide setting:
anything else running Python in the worker's process (the TelemetryService
server) switches threads as often, which costs it a little CPU and gains it
latency. A write that hangs (not fails) keeps the consumer thread waiting
without polling; past `max.poll.interval.ms` the group drops the worker and
its uncommitted batches go to another member, where the idempotent write
absorbs the repeat.
"""

import collections
import concurrent.futures
import concurrent.futures.process
import dataclasses
import logging
import queue
import sys
import threading
import time

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from prometheus_client import Counter

from koverage.local import consumer_config
from services.ingest import REASON_HEADER, SOURCE_HEADER, STAGE_HEADER
from services.worker._decode import fast_path_built
from services.worker._decode_pool import (
    DecodedBatch,
    DecodePool,
    EncodedBatch,
    encode_batch,
)
from services.worker._writer import (
    DatabaseUnavailableError,
    RowsRejectedError,
    SpanWriter,
    WriteResult,
)

_POLL_TIMEOUT_S = 0.2
_BACKOFF_START_S = 0.2
_BACKOFF_MAX_S = 5.0
_DLQ_TIMEOUT_S = 10.0
# Batches consumed and not yet committed are one per write connection (being
# written) and this many more (decoding or decoded), so that a writer finds
# its next batch ready.
_BATCHES_DECODING = 2
# A tenth of CPython's default; see the module docstring.
_GIL_SWITCH_INTERVAL_S = 0.0005

RECORDS_WRITTEN = Counter(
    "koverage_worker_records_total", "Span records processed", ["outcome"]
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ConsumerStats:
    """Running totals, for tests, the benchmark and logs."""

    records: int = 0
    spans_inserted: int = 0
    llm_calls_inserted: int = 0
    dead_lettered: int = 0
    batches: int = 0
    database_retries: int = 0


@dataclasses.dataclass(frozen=True)
class ConsumerConfig:
    """Where the consumer reads from and writes to."""

    bootstrap: str
    group_id: str
    spans_topic: str
    dead_letter_topic: str
    database_url: str
    batch_size: int = 5000
    decode_processes: int = 0
    """Child processes that decode records; 0 decodes on the consumer thread."""
    write_connections: int = 1
    """Postgres connections batches are written over, one batch on each."""
    kafka_overrides: dict = dataclasses.field(default_factory=dict)
    kafka_client_config: dict = dataclasses.field(default_factory=dict)
    """TLS and SASL entries of every client (`koverage.kafka_config`)."""


class SpanConsumer:
    """Consumes span records into Postgres until `stop()` is called.

    Run `run()` on a thread of its own (confluent-kafka calls block); it
    starts and stops its writer thread itself.
    """

    def __init__(self, config: ConsumerConfig) -> None:
        if config.batch_size < 1:
            raise ValueError(f"batch_size={config.batch_size} must be >= 1")
        if config.write_connections < 1:
            raise ValueError(
                f"write_connections={config.write_connections} must be >= 1"
            )
        if config.decode_processes < 0:
            raise ValueError(f"decode_processes={config.decode_processes} must be >= 0")
        self._config = config
        self._stop = threading.Event()
        self._writers: queue.SimpleQueue[SpanWriter] = queue.SimpleQueue()
        for _ in range(config.write_connections):
            self._writers.put(SpanWriter(config.database_url))
        self._batches_in_flight = config.write_connections + _BATCHES_DECODING
        self._paused = False
        self._decoder = DecodePool(0)  # replaced by run()
        self._polled = _Pending()  # records not yet in a batch in flight
        self.stats = ConsumerStats()
        self.assigned = threading.Event()
        self.failed = False
        """Set by the worker when `run()` ended on an unexpected error."""
        self._consumer = Consumer(
            consumer_config(
                config.bootstrap,
                config.group_id,
                {
                    **config.kafka_client_config,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 100,
                    **config.kafka_overrides,
                },
            )
        )
        self._producer = Producer(
            {
                "bootstrap.servers": config.bootstrap,
                "enable.idempotence": True,
                **config.kafka_client_config,
            }
        )

    def stop(self) -> None:
        """Asks `run()` to finish the batches in flight and return."""
        self._stop.set()

    def run(self) -> None:
        """Consumes until `stop()`; closes the consumer on the way out."""
        self._consumer.subscribe([self._config.spans_topic], on_assign=self._on_assign)
        logger.info(
            "consuming %s (%d decode processes, %d write connections, %s)",
            self._config.spans_topic,
            self._config.decode_processes,
            self._config.write_connections,
            "C fast path"
            if fast_path_built()
            else "protobuf only: fast path not built",
        )
        writes = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._config.write_connections,
            thread_name_prefix="span-writer",
        )
        self._decoder = DecodePool(self._config.decode_processes)
        self._decoder.start()
        in_flight: collections.deque[_Pending] = collections.deque()
        switch_interval_s = sys.getswitchinterval()
        if not self._config.decode_processes:
            sys.setswitchinterval(min(switch_interval_s, _GIL_SWITCH_INTERVAL_S))
        try:
            while not self._stop.is_set():
                if len(in_flight) < self._batches_in_flight:
                    pending = self._next_batch()
                    if pending is not None:
                        pending.decoding = self._decoder.decode(pending.values())
                        pending.written = writes.submit(self._write, pending)
                        in_flight.append(pending)
                # Commit each batch, in order, once written; wait only when
                # the pipeline is full.
                while in_flight and (
                    in_flight[0].written.done()
                    or len(in_flight) >= self._batches_in_flight
                ):
                    self._finish(writes, in_flight.popleft())
            # Anything polled but not yet in flight stays uncommitted.
            while in_flight:
                self._finish(writes, in_flight.popleft())
        except _Stopping:
            # Stopping with a batch unwritten: its offsets stay uncommitted,
            # so the next worker reads it again.
            logger.info("stopping with a batch unwritten; it will be redelivered")
        finally:
            writes.shutdown(wait=True, cancel_futures=True)
            self._decoder.close()
            sys.setswitchinterval(switch_interval_s)
            self._consumer.close()
            self._producer.flush(5.0)
            self._producer = None  # the last reference: librdkafka stops now
            while not self._writers.empty():
                self._writers.get().close()
            logger.info("stopped consuming")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.set()
        if self._paused:
            consumer.pause(partitions)

    def _next_batch(self) -> "_Pending | None":
        """The next batch: records polled while waiting out a retry, then more.

        Records polled during a long outage can outnumber `batch_size`; they
        are written as one batch.
        """
        pending = self._polled
        room = self._config.batch_size - len(pending.records)
        if room > 0:
            pending.add_all(self._consumer.consume(room, timeout=_POLL_TIMEOUT_S))
        if not pending.records:
            return None
        self._polled = _Pending()
        return pending

    def _finish(self, writes: concurrent.futures.Executor, pending: "_Pending") -> None:
        """Waits for `pending`'s write, retrying it until stored, then commits."""
        delay_s = _BACKOFF_START_S
        while True:
            try:
                pending.written.result()
                self._dead_letter(pending)
                break
            except (DatabaseUnavailableError, _DeadLetterError) as exc:
                self.stats.database_retries += 1
                logger.warning(
                    "batch not stored (%s); retrying in %.1f s", exc, delay_s
                )
                self._pause()
                self._wait(delay_s)
                delay_s = min(delay_s * 2, _BACKOFF_MAX_S)
                pending.written = writes.submit(self._write, pending)
        self._resume()

        self._count(pending)
        self._commit(pending.records)
        self.stats.records += len(pending.records)
        self.stats.batches += 1

    def _write(self, pending: "_Pending") -> None:
        """Stores the batch's decodable records (runs on a writer thread)."""
        if pending.encoded is None:
            self._take_decoded(pending)
        if not pending.row_records:
            return
        writer = self._writers.get()
        try:
            self._store(writer, pending)
        finally:
            self._writers.put(writer)

    def _store(self, writer: SpanWriter, pending: "_Pending") -> None:
        encoded = pending.encoded
        pending.refused = []  # a retried write refuses the same rows again
        try:
            pending.count(writer.write(encoded.rows), len(pending.row_records))
        except RowsRejectedError as exc:
            logger.warning(
                "Postgres refused a batch (%s); writing records one by one", exc
            )
            for k, record in enumerate(pending.row_records):
                try:
                    pending.count(writer.write(encoded.one(k)), 1)
                except RowsRejectedError as row_exc:
                    pending.refused.append((record, f"Postgres refused: {row_exc}"))
        pending.row_records = []

    def _take_decoded(self, pending: "_Pending") -> None:
        """Waits for the batch's decode and sorts its records into rows and rejects."""
        decoding = pending.decoding or self._decoder.decode(pending.values())
        try:
            encoded = decoding.result()
        except concurrent.futures.process.BrokenProcessPool:
            # The pool starts again at its next use (`DecodePool.decode`).
            logger.error("a decode process died; decoding its batch here")
            encoded = encode_batch(pending.values())
        records = pending.records
        pending.encoded = encoded
        pending.row_records = [records[i] for i in encoded.decoded]
        pending.rejected.extend((records[i], reason) for i, reason in encoded.rejected)
        pending.decoding = None

    def _count(self, pending: "_Pending") -> None:
        self.stats.spans_inserted += pending.stored.spans
        self.stats.llm_calls_inserted += pending.stored.llm_calls
        # A span already stored (a redelivery after a crash between the
        # database commit and the offset commit) is skipped by the write:
        # counted, so an operator can see redeliveries happen.
        RECORDS_WRITTEN.labels("stored").inc(pending.stored.spans)
        RECORDS_WRITTEN.labels("duplicate").inc(pending.duplicates)

    def _wait(self, delay_s: float) -> None:
        # Keep polling so the group keeps us; paused partitions deliver
        # nothing, and anything fetched before the pause waits for the next
        # batch (its offsets come after those of every batch in flight).
        deadline = time.monotonic() + delay_s
        while time.monotonic() < deadline:
            if self._stop.is_set():
                raise _Stopping
            self._polled.add_all(self._consumer.consume(100, timeout=_POLL_TIMEOUT_S))

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._consumer.pause(self._consumer.assignment())

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._consumer.resume(self._consumer.assignment())

    def _dead_letter(self, pending: "_Pending") -> None:
        failed = pending.rejected + pending.refused
        if not failed:
            return
        errors: list = []
        for record, reason in failed:
            source = f"{record.topic()}/{record.partition()}/{record.offset()}"
            self._producer.produce(
                self._config.dead_letter_topic,
                value=record.value(),
                key=record.key(),
                headers=[
                    (REASON_HEADER, reason.encode()),
                    (STAGE_HEADER, b"worker"),
                    (SOURCE_HEADER, source.encode()),
                ],
                on_delivery=lambda err, _msg: err is not None and errors.append(err),
            )
        left = self._producer.flush(_DLQ_TIMEOUT_S)
        if left or errors:
            # Without the dead-letter ack the offsets must not move on.
            raise _DeadLetterError(f"dead-letter publish failed: {errors[:1] or left}")
        self.stats.dead_lettered += len(failed)
        RECORDS_WRITTEN.labels("dead_lettered").inc(len(failed))
        logger.warning("dead-lettered %d record(s)", len(failed))
        pending.rejected = []
        pending.refused = []

    def _commit(self, records: list) -> None:
        highest: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic(), record.partition())
            offset = record.offset()
            if offset > highest.get(key, -1):
                highest[key] = offset
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in highest.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are stored; the records will come again and be skipped.
            logger.warning(
                "offset commit failed (records will be redelivered): %s", exc
            )


class _Pending:
    """The records of one batch and what became of them.

    Once the batch is decoded, `encoded` holds its rows (None before) and
    `row_records` the record each decoded row came from (for the one-by-one
    fallback), emptied once they are stored.
    """

    def __init__(self) -> None:
        self.records: list = []
        self.decoding: DecodedBatch | None = None
        self.encoded: EncodedBatch | None = None
        self.row_records: list = []
        self.rejected: list[tuple[object, str]] = []
        """Records that did not decode, with the reason."""
        self.refused: list[tuple[object, str]] = []
        """Records Postgres refused, with its message."""
        self.written: concurrent.futures.Future | None = None
        self.stored = WriteResult(0, 0)
        self.duplicates = 0

    def count(self, result: WriteResult, spans_written: int) -> None:
        """Adds one write's result (on the writer thread that wrote it)."""
        self.stored = WriteResult(
            self.stored.spans + result.spans,
            self.stored.llm_calls + result.llm_calls,
        )
        self.duplicates += max(0, spans_written - result.spans)

    def add_all(self, messages: list) -> None:
        for message in messages:
            if message.error() is not None:
                _log_error(message)
                continue
            self.records.append(message)

    def values(self) -> list:
        return [record.value() for record in self.records]


class _Stopping(Exception):
    """Raised inside the retry loop when the worker is asked to stop."""


class _DeadLetterError(Exception):
    """Kafka did not acknowledge a dead-letter record."""


def _log_error(message) -> None:
    error = message.error()
    if error.code() != KafkaError._PARTITION_EOF:
        logger.warning("consumer error: %s", error)
