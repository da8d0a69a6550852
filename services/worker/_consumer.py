"""The worker's Kafka consumer loop: spans topic -> Postgres, at least once.

Per batch: consume up to `batch_size` records; decode each; write the
decodable ones to Postgres in one transaction; publish the undecodable ones
to the dead-letter topic and wait for Kafka's ack; only then commit the
batch's offsets. A crash anywhere before the offset commit means the batch
is delivered again, and the write skips what is already stored, so nothing
is lost and nothing is stored twice.

Two threads share the work so that decoding (Python, CPU) and writing
(mostly Postgres's time) overlap: the consumer thread owns every Kafka call
and consumes and decodes batch n+1 while a writer thread writes batch n.
At most one batch is being written and one waits, decoded; batch n's
offsets are committed, by the consumer thread, only after batch n's database
commit, and batches are written and committed in the order consumed.

While Postgres is down the loop pauses its partitions (no more fetching) but
keeps polling, so it stays in the consumer group, and retries the same batch
with capped exponential backoff until the write succeeds. It never skips the
batch.

A batch Postgres refuses for its content (not connectivity) is written one
record at a time, and each refused record goes to the dead-letter topic with
Postgres's message, so one poison record cannot stall a partition.

The two threads share one GIL. With CPython's default switch interval
(5 ms) the writer, which needs the GIL only briefly between socket waits
(each row it formats, each statement's reply), waits up to 5 ms for the
decoding thread each time; measured here that doubled a batch's write time,
and the write, not the decode, set the worker's rate. So `run()` lowers the
process's switch interval to `_GIL_SWITCH_INTERVAL_S` while it runs.

Known limitation: one process decodes on one core (the GIL), so a worker's
rate is bounded by its decode rate (see BENCHMARKS.md); more partitions and
more workers in the group scale it out. The switch interval is a
process-wide setting: anything else running Python in the worker's process
(the TelemetryService server) switches threads as often, which costs it a
little CPU and gains it latency. A write that hangs (not fails) keeps
the consumer thread waiting without polling; past `max.poll.interval.ms` the
group drops the worker and its uncommitted batches go to another member,
where the idempotent write absorbs the repeat.
"""

import concurrent.futures
import dataclasses
import logging
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
from services.worker._decode import DecodedSpan, UndecodableRecord, decode_record
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
        self._config = config
        self._stop = threading.Event()
        self._writer = SpanWriter(config.database_url)
        self._paused = False
        self.stats = ConsumerStats()
        self.assigned = threading.Event()
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
        """Asks `run()` to finish the batch being written and return."""
        self._stop.set()

    def run(self) -> None:
        """Consumes until `stop()`; closes the consumer on the way out."""
        self._consumer.subscribe([self._config.spans_topic], on_assign=self._on_assign)
        logger.info("consuming %s", self._config.spans_topic)
        writes = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="span-writer"
        )
        writing: _Pending | None = None
        switch_interval_s = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_interval_s, _GIL_SWITCH_INTERVAL_S))
        try:
            while not self._stop.is_set():
                # Decode the next batch while the writer stores the last one.
                pending = _Pending()
                pending.add_all(
                    self._consumer.consume(
                        self._config.batch_size, timeout=_POLL_TIMEOUT_S
                    )
                )
                if writing is not None:
                    self._finish(writes, writing, pending)
                    writing = None
                if pending.records:
                    pending.written = writes.submit(self._write, pending)
                    writing = pending
            if writing is not None:
                # Anything polled meanwhile is left uncommitted (redelivered).
                self._finish(writes, writing, _Pending())
        except _Stopping:
            # Stopping with a batch unwritten: its offsets stay uncommitted,
            # so the next worker reads it again.
            logger.info("stopping with a batch unwritten; it will be redelivered")
        finally:
            writes.shutdown(wait=True)
            sys.setswitchinterval(switch_interval_s)
            self._consumer.close()
            self._producer.flush(5.0)
            self._producer = None  # the last reference: librdkafka stops now
            self._writer.close()
            logger.info("stopped consuming")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.set()
        if self._paused:
            consumer.pause(partitions)

    def _finish(
        self,
        writes: concurrent.futures.Executor,
        pending: "_Pending",
        following: "_Pending",
    ) -> None:
        """Waits for `pending`'s write, retrying it until stored, then commits.

        Records polled while waiting out a retry join `following`.
        """
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
                self._wait(delay_s, following)
                delay_s = min(delay_s * 2, _BACKOFF_MAX_S)
                pending.written = writes.submit(self._write, pending)
        self._resume()

        self._commit(pending.records)
        self.stats.records += len(pending.records)
        self.stats.batches += 1

    def _write(self, pending: "_Pending") -> None:
        """Stores the batch's decoded records (runs on the writer thread)."""
        if not pending.decoded:
            return
        try:
            self._count(self._writer.write(pending.decoded), len(pending.decoded))
        except RowsRejectedError as exc:
            logger.warning(
                "Postgres refused a batch (%s); writing records one by one", exc
            )
            for record, decoded in zip(
                pending.decoded_records, pending.decoded, strict=True
            ):
                try:
                    self._count(self._writer.write([decoded]), 1)
                except RowsRejectedError as row_exc:
                    pending.rejected.append((record, f"Postgres refused: {row_exc}"))
        pending.decoded = []
        pending.decoded_records = []

    def _count(self, result: WriteResult, spans_written: int) -> None:
        self.stats.spans_inserted += result.spans
        self.stats.llm_calls_inserted += result.llm_calls
        # A span already stored (a redelivery after a crash between the
        # database commit and the offset commit) is skipped by the write:
        # counted, so an operator can see redeliveries happen.
        RECORDS_WRITTEN.labels("stored").inc(result.spans)
        RECORDS_WRITTEN.labels("duplicate").inc(max(0, spans_written - result.spans))

    def _wait(self, delay_s: float, pending: "_Pending") -> None:
        # Keep polling so the group keeps us; paused partitions deliver
        # nothing, and anything fetched before the pause joins the batch.
        deadline = time.monotonic() + delay_s
        while time.monotonic() < deadline:
            if self._stop.is_set():
                raise _Stopping
            pending.add_all(self._consumer.consume(100, timeout=_POLL_TIMEOUT_S))

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._consumer.pause(self._consumer.assignment())

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._consumer.resume(self._consumer.assignment())

    def _dead_letter(self, pending: "_Pending") -> None:
        if not pending.rejected:
            return
        errors: list = []
        for record, reason in pending.rejected:
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
        self.stats.dead_lettered += len(pending.rejected)
        RECORDS_WRITTEN.labels("dead_lettered").inc(len(pending.rejected))
        logger.warning("dead-lettered %d record(s)", len(pending.rejected))
        pending.rejected = []

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

    `decoded` and `decoded_records` run in parallel: the rows and the record
    each came from (for the one-by-one fallback).
    """

    def __init__(self) -> None:
        self.records: list = []
        self.decoded: list[DecodedSpan] = []
        self.decoded_records: list = []
        self.rejected: list[tuple[object, str]] = []
        self.written: concurrent.futures.Future | None = None

    def add_all(self, messages: list) -> None:
        records = self.records
        decoded = self.decoded
        decoded_records = self.decoded_records
        for message in messages:
            if message.error() is not None:
                _log_error(message)
                continue
            records.append(message)
            try:
                decoded.append(decode_record(message.value()))
            except UndecodableRecord as exc:
                self.rejected.append((message, str(exc)))
                continue
            decoded_records.append(message)


class _Stopping(Exception):
    """Raised inside the retry loop when the worker is asked to stop."""


class _DeadLetterError(Exception):
    """Kafka did not acknowledge a dead-letter record."""


def _log_error(message) -> None:
    error = message.error()
    if error.code() != KafkaError._PARTITION_EOF:
        logger.warning("consumer error: %s", error)
