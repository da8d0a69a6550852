"""Builds the worker: migrations, the span consumer and TelemetryService."""

import asyncio
import importlib.resources
import logging
import threading

from koverage.db import migrate, open_async_pool
from koverage.kafka_config import kafka_client_config
from koverage.local import ensure_topics
from koverage.serving import MeshServer
from koverage.settings import Settings
from koverage.telemetry.v1 import telemetry_pb2, telemetry_pb2_grpc
from services.worker._consumer import ConsumerConfig, SpanConsumer
from services.worker._telemetry import TelemetryServicer

MIGRATIONS_OWNER = "worker"

logger = logging.getLogger(__name__)


def migrate_database(database_url: str) -> None:
    """Applies the worker's migrations (`spans`, `llm_calls`) to the database."""
    migrate(
        database_url,
        owner=MIGRATIONS_OWNER,
        directory=importlib.resources.files("services.worker") / "migrations",
    )


def build_consumer(settings: Settings, **overrides) -> SpanConsumer:
    """A span consumer from settings; `overrides` replace ConsumerConfig fields."""
    fields = {
        "bootstrap": settings.kafka_bootstrap,
        "group_id": settings.worker_group_id,
        "spans_topic": settings.kafka_spans_topic,
        "dead_letter_topic": settings.kafka_dead_letter_topic,
        "database_url": settings.database_url,
        "batch_size": settings.worker_batch_size,
        "decode_processes": settings.worker_decode_processes,
        "write_connections": settings.worker_write_connections,
        "kafka_client_config": kafka_client_config(settings),
        **overrides,
    }
    return SpanConsumer(ConsumerConfig(**fields))


async def build_worker(
    settings: Settings, *, consume: bool = True
) -> tuple[MeshServer, SpanConsumer | None]:
    """Migrates the database and returns the worker's server, not yet started.

    The consumer thread starts at once and stops after the server has
    drained; the pool closes last. A consumer that fails on an unexpected
    error stops the server and sets `consumer.failed`.

    Args:
        settings: Needs `database_url`, and `kafka_bootstrap` when consuming.
        consume: Run the span consumer (False serves only the read API).

    Raises:
        ValueError: a required setting is empty, or the Kafka security
            settings contradict each other.
    """
    if not settings.database_url:
        raise ValueError("database_url is empty: set KOVERAGE_DATABASE_URL")
    if consume and not settings.kafka_bootstrap:
        raise ValueError("kafka_bootstrap is empty: set KOVERAGE_KAFKA_BOOTSTRAP")
    # Contradictory Kafka security settings fail before any work is done.
    kafka_config = kafka_client_config(settings) if consume else {}
    await asyncio.to_thread(migrate_database, settings.database_url)

    pool = await open_async_pool(
        settings.database_url, min_size=1, max_size=4, name="telemetry"
    )
    server = MeshServer("worker", settings, settings.worker_address)
    telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server(
        TelemetryServicer(pool), server.grpc
    )
    server.expose(telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"])

    async def close_pool() -> None:
        await pool.close()

    server.on_stop(close_pool)
    consumer = None
    if consume:
        ensure_topics(
            settings.kafka_bootstrap,
            {
                settings.kafka_spans_topic: settings.kafka_spans_partitions,
                settings.kafka_dead_letter_topic: 1,
            },
            client_config=kafka_config,
        )
        consumer = build_consumer(settings)
        loop = asyncio.get_running_loop()

        def consume() -> None:
            try:
                consumer.run()
            except Exception:
                # Serving telemetry without consuming would stall Beacon
                # silently: stop, so the worker restarts and its uncommitted
                # records are delivered again.
                logger.exception("span consumer failed; stopping the worker")
                consumer.failed = True
                asyncio.run_coroutine_threadsafe(server.stop(), loop)

        thread = threading.Thread(target=consume, name="span-consumer", daemon=True)
        thread.start()

        async def stop_consumer() -> None:
            consumer.stop()
            await asyncio.to_thread(thread.join, 30.0)

        server.on_stop(stop_consumer)
    return server, consumer
