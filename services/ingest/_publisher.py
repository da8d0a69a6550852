"""Publishes records to Kafka and reports only what Kafka acknowledged.

One idempotent producer per process (`enable.idempotence`, so acks=all and
no duplicates from the producer's own retries). A background thread serves
delivery reports; each `publish` call awaits the reports of its own records,
so a request is answered only after Kafka has taken every record of it, or
fails with UNAVAILABLE when Kafka did not within the deadline.
"""

import asyncio
import logging
import threading
import time
from typing import NamedTuple

from confluent_kafka import KafkaException, Producer

from koverage.errors import UnavailableError

_POLL_INTERVAL_S = 0.05
_QUEUE_FULL_WAIT_S = 0.05

logger = logging.getLogger(__name__)


class Record(NamedTuple):
    """One record to publish (a tuple: one is built per span)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class KafkaPublisher:
    """An idempotent Kafka producer with awaitable, per-call acknowledgement.

    Args:
        bootstrap: Kafka bootstrap servers.
        delivery_timeout_s: How long Kafka may take to acknowledge a record
            before `publish` gives up on it (librdkafka `message.timeout.ms`).
        config: Extra librdkafka producer settings that win over ours.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        delivery_timeout_s: float = 10.0,
        config: dict[str, object] | None = None,
    ) -> None:
        if not bootstrap:
            raise ValueError("bootstrap='' : give the Kafka bootstrap servers")
        if delivery_timeout_s <= 0:
            raise ValueError(f"delivery_timeout_s={delivery_timeout_s} must be > 0")
        self._timeout_s = delivery_timeout_s
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "batch.num.messages": 10000,
                "queue.buffering.max.messages": 500000,
                "message.timeout.ms": int(delivery_timeout_s * 1000),
                **(config or {}),
            }
        )
        self._running = True
        self._poller = threading.Thread(
            target=self._serve_reports, name="kafka-delivery", daemon=True
        )
        self._poller.start()

    async def publish(self, records: list[Record]) -> None:
        """Publishes `records` and returns once Kafka acknowledged all of them.

        Raises:
            UnavailableError: Kafka refused or did not acknowledge a record in
                time. Some records may have been stored; a retry of the same
                request may then duplicate them, which the worker absorbs.
        """
        if not records:
            return
        loop = asyncio.get_running_loop()
        delivery = _Delivery(len(records), loop)
        deadline = time.monotonic() + self._timeout_s
        for record in records:
            self._produce(record, delivery, deadline)

        try:
            await asyncio.wait_for(delivery.done, self._timeout_s + 1.0)
        except TimeoutError:
            raise UnavailableError(
                "Kafka did not acknowledge the spans in time; retry later"
            ) from None
        if delivery.error is not None:
            raise UnavailableError(
                f"Kafka did not take {delivery.failed} of {len(records)} records "
                f"({delivery.error}); retry later"
            )

    def close(self, timeout_s: float = 5.0) -> None:
        """Delivers what is queued (up to `timeout_s`) and stops the poller."""
        self._running = False
        self._poller.join(timeout=2.0)
        left = self._producer.flush(timeout_s)
        if left:
            logger.warning(
                "closed the Kafka producer with %d records undelivered", left
            )

    def _produce(self, record: Record, delivery: "_Delivery", deadline: float) -> None:
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers),
                    on_delivery=delivery.report,
                )
                return
            except BufferError:
                # The local queue is full: wait for deliveries to drain it.
                if time.monotonic() > deadline:
                    delivery.report(KafkaException("local producer queue full"), None)
                    return
                time.sleep(_QUEUE_FULL_WAIT_S)
            except KafkaException as exc:
                delivery.report(exc, None)
                return

    def _serve_reports(self) -> None:
        while self._running:
            self._producer.poll(_POLL_INTERVAL_S)


class _Delivery:
    """Counts the delivery reports of one publish call (reporter thread)."""

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self._left = count
        self._lock = threading.Lock()
        self._loop = loop
        self.done: asyncio.Future = loop.create_future()
        self.failed = 0
        self.error: object = None

    def report(self, error, _message) -> None:
        with self._lock:
            self._left -= 1
            if error is not None:
                self.failed += 1
                self.error = error
            finished = self._left == 0
        if finished:
            self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
