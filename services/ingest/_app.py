"""Builds the ingest service from settings."""

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from koverage.kafka_config import kafka_client_config
from koverage.local import ensure_topics
from koverage.serving import MeshServer
from koverage.settings import Settings
from services.ingest._publisher import KafkaPublisher
from services.ingest._ratelimit import TenantRateLimiter
from services.ingest._servicer import IngestConfig, IngestServicer

TRACE_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"]


def build_server(
    settings: Settings,
    *,
    publisher: KafkaPublisher | None = None,
    create_topics: bool = True,
) -> MeshServer:
    """The ingest MeshServer, not yet started.

    Args:
        settings: Needs `kafka_bootstrap` unless `publisher` is given.
        publisher: Publisher to use; None builds one from settings (closed
            when the server stops).
        create_topics: Create the spans and dead-letter topics if missing.

    Raises:
        ValueError: no Kafka bootstrap servers are configured, or the Kafka
            security settings contradict each other.
    """
    kafka_config = kafka_client_config(settings)
    if create_topics and settings.kafka_bootstrap:
        ensure_topics(
            settings.kafka_bootstrap,
            {
                settings.kafka_spans_topic: settings.kafka_spans_partitions,
                settings.kafka_dead_letter_topic: 1,
            },
            client_config=kafka_config,
        )
    owns_publisher = publisher is None
    publisher = publisher or KafkaPublisher(
        settings.kafka_bootstrap, config=kafka_config
    )
    servicer = IngestServicer(
        publisher,
        TenantRateLimiter(
            settings.ingest_rate_limit_spans_per_s,
            settings.ingest_rate_limit_burst_spans,
        ),
        IngestConfig(
            spans_topic=settings.kafka_spans_topic,
            dead_letter_topic=settings.kafka_dead_letter_topic,
            max_span_bytes=settings.ingest_max_span_bytes,
            trusted_tenants=frozenset(
                filter(
                    None,
                    (t.strip() for t in settings.ingest_trusted_tenants.split(",")),
                )
            ),
        ),
    )

    server = MeshServer("ingest", settings, settings.ingest_address)
    # The request stays raw bytes (no deserializer) so that one undecodable
    # span does not sink the rest of its batch; the servicer splits it.
    handler = grpc.method_handlers_generic_handler(
        TRACE_SERVICE.full_name,
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                servicer.Export, request_deserializer=None, response_serializer=None
            )
        },
    )
    server.grpc.add_generic_rpc_handlers((handler,))
    server.expose(TRACE_SERVICE)

    if owns_publisher:

        async def close_publisher() -> None:
            publisher.close()

        server.on_stop(close_publisher)
    return server
