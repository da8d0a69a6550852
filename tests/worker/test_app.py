"""The worker process as assembled by build_worker: a failed consumer stops it."""

import asyncio

from koverage.settings import Settings
from services.worker import SpanConsumer, build_worker
from tests.ingest.otlp import unique_topic


async def test_a_consumer_that_fails_stops_the_worker(
    kafka_bootstrap, database_url, monkeypatch
):
    def broken_run(self) -> None:
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(SpanConsumer, "run", broken_run)
    settings = Settings(
        worker_address="127.0.0.1:0",
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        kafka_spans_topic=unique_topic("spans"),
        kafka_dead_letter_topic=unique_topic("dlq"),
        metrics_port=-1,
    )
    server, consumer = await build_worker(settings)
    await server.start()

    # Serving the read API without consuming would stall Beacon unseen.
    await asyncio.wait_for(server.wait_for_termination(), timeout=30)
    assert consumer.failed
