"""The whole Beacon pipeline on real parts: router -> Rotel -> ingest -> Tansu
-> worker -> Postgres, each test with its own database and topics."""

import contextlib
import dataclasses
import os
import tempfile

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from koverage.local import Supervisor, ensure_topics, free_port, start_service
from koverage.serving import connect
from koverage.settings import Settings
from services.ingest import build_server
from services.worker import build_worker
from tests.engines import fresh_database, rotel_collector, tansu_broker
from tests.ingest.otlp import unique_topic


@pytest.fixture(scope="session")
def kafka_bootstrap():
    with tansu_broker() as bootstrap:
        yield bootstrap


@dataclasses.dataclass
class Pipeline:
    settings: Settings
    ingest_address: str
    collector: str = ""
    worker_address: str = ""
    consumer: object = None

    def env(self) -> dict[str, str]:
        """KOVERAGE_* variables for a subprocess service of this pipeline."""
        s = self.settings
        return {
            "KOVERAGE_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "KOVERAGE_KAFKA_SPANS_TOPIC": s.kafka_spans_topic,
            "KOVERAGE_KAFKA_DEAD_LETTER_TOPIC": s.kafka_dead_letter_topic,
            "KOVERAGE_KAFKA_SPANS_PARTITIONS": str(s.kafka_spans_partitions),
            "KOVERAGE_WORKER_GROUP_ID": s.worker_group_id,
            "KOVERAGE_DATABASE_URL": s.database_url,
            "KOVERAGE_METRICS_PORT": "-1",
        }


def pipeline_settings(kafka_bootstrap: str, database_url: str, **overrides) -> Settings:
    fields = {
        "ingest_address": "127.0.0.1:0",
        "worker_address": "127.0.0.1:0",
        "metrics_port": -1,
        "kafka_bootstrap": kafka_bootstrap,
        "kafka_spans_topic": unique_topic("spans"),
        "kafka_dead_letter_topic": unique_topic("dlq"),
        "kafka_spans_partitions": 2,
        "worker_group_id": unique_topic("group"),
        "database_url": database_url,
        "shutdown_grace_s": 1.0,
        **overrides,
    }
    return Settings.from_env({}, **fields)


@contextlib.asynccontextmanager
async def running_pipeline(
    kafka_bootstrap: str,
    database_url: str,
    *,
    worker: bool = True,
    collector: bool = False,
    **overrides,
):
    """Ingest (and optionally the in-process worker and a Rotel collector)."""
    settings = pipeline_settings(kafka_bootstrap, database_url, **overrides)
    ensure_topics(
        kafka_bootstrap,
        {settings.kafka_spans_topic: 2, settings.kafka_dead_letter_topic: 1},
    )
    ingest = build_server(settings)
    await ingest.start()
    worker_server = consumer = None
    try:
        if worker:
            worker_server, consumer = await build_worker(settings)
            await worker_server.start()
        pipeline = Pipeline(
            settings,
            ingest.address,
            worker_address=worker_server.address if worker_server else "",
            consumer=consumer,
        )
        if collector:
            with rotel_collector(ingest.address) as endpoint:
                pipeline.collector = endpoint
                yield pipeline
        else:
            yield pipeline
    finally:
        if worker_server is not None:
            await worker_server.stop(0.5)
        await ingest.stop(0.5)


@pytest.fixture
def database_url():
    with fresh_database("koverage_test_beacon") as url:
        yield url


@contextlib.contextmanager
def router_process(otlp_endpoint: str, **env):
    """Runs `python -m services.router` exporting its spans to `otlp_endpoint`."""
    address = f"127.0.0.1:{free_port('127.0.0.1')}"
    with Supervisor(tempfile.mkdtemp(prefix="koverage-e2e-")) as supervisor:
        start_service(
            supervisor,
            "router",
            address,
            env={
                "KOVERAGE_ROUTER_ADDRESS": address,
                "KOVERAGE_OTLP_ENDPOINT": otlp_endpoint,
                "KOVERAGE_METRICS_PORT": "-1",
                # Export every 100 ms instead of every 5 s.
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                **env,
            },
            cwd=os.getcwd(),
        )
        yield address


def otlp_stub(address: str, api_key: str = ""):
    channel = connect(address, api_key=api_key)
    return channel, trace_service_pb2_grpc.TraceServiceStub(channel)
