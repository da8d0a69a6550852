"""Beacon pipeline benchmark: OTLP export -> ingest -> Kafka -> worker -> Postgres.

Measures, in one run on the same database:

1. end to end: spans per second from the first OTLP Export call until every
   span is a row in Postgres (ingest and worker run as subprocesses, as in
   production, on a real Tansu broker), checking that none was lost;
2. worker alone: the worker drains spans already waiting in Kafka;
3. COPY ceiling: a raw COPY of the same decoded rows into a copy of the
   `spans` and `llm_calls` tables, the most a single writer could do.

Run: .venv/bin/python benchmarks/bench_pipeline.py [--spans 100000]
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from koverage.db import connect
from koverage.local import Supervisor, ensure_topics, free_port, start_service
from koverage.serving import connect as grpc_connect
from services.worker import (
    LLM_CALL_COLUMNS,
    SPAN_COLUMNS,
    decode_record,
    migrate_database,
)
from tests.engines import fresh_database, tansu_broker
from tests.ingest.otlp import (
    EXPORT_METHOD,
    export_request,
    llm_attributes,
    make_span,
    unique_topic,
)
from tests.worker.conftest import envelope

_SPANS_PER_REQUEST = 1000
_CONCURRENCY = 4
_LLM_EVERY = 4  # one span in four is an LLM call span


def build_requests(total: int) -> list[bytes]:
    requests = []
    for start in range(0, total, _SPANS_PER_REQUEST):
        spans = [
            make_span("chat sim/steady", attributes=llm_attributes())
            if (start + i) % _LLM_EVERY == 0
            else make_span("db query", attributes={"db.system": "postgresql"})
            for i in range(min(_SPANS_PER_REQUEST, total - start))
        ]
        requests.append(export_request(spans).SerializeToString())
    return requests


async def send_all(address: str, requests: list[bytes]) -> None:
    channel = grpc_connect(address)
    export = channel.unary_unary(
        EXPORT_METHOD, request_serializer=None, response_deserializer=None
    )
    queue = list(requests)

    async def sender() -> None:
        while queue:
            body = queue.pop()
            await export(body, timeout=60, wait_for_ready=True)

    async with channel:
        await asyncio.gather(*(sender() for _ in range(_CONCURRENCY)))


def count_rows(database_url: str) -> int:
    with connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM spans").fetchone()[0]


def wait_rows(database_url: str, expected: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if count_rows(database_url) >= expected:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"only {count_rows(database_url)} of {expected} rows arrived")


def copy_ceiling(database_url: str, total: int) -> float:
    """Rows per second of a raw COPY of the same kind of rows into copies of the tables."""
    requests = build_requests(total)
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    decoded = []
    for body in requests:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for span in request.resource_spans[0].scope_spans[0].spans:
            decoded.append(decode_record(envelope(span)))
    with connect(database_url) as conn:
        conn.execute("CREATE TABLE spans_copy (LIKE spans INCLUDING ALL)")
        conn.execute("CREATE TABLE llm_calls_copy (LIKE llm_calls INCLUDING ALL)")
        conn.commit()
        started = time.monotonic()
        with conn.cursor() as cursor:
            with cursor.copy(
                f"COPY spans_copy ({', '.join(SPAN_COLUMNS)}) FROM STDIN"
            ) as copy:
                for d in decoded:
                    copy.write_row(d.span)
            with cursor.copy(
                f"COPY llm_calls_copy ({', '.join(LLM_CALL_COLUMNS)}) FROM STDIN"
            ) as copy:
                for d in decoded:
                    if d.llm_call is not None:
                        copy.write_row(d.llm_call)
        conn.commit()
        return total / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    args = parser.parse_args()
    total = args.spans

    with tansu_broker() as bootstrap, fresh_database("koverage_bench_pipeline") as db:
        migrate_database(db)
        spans_topic, dlq = unique_topic("spans"), unique_topic("dlq")
        ensure_topics(bootstrap, {spans_topic: 4, dlq: 1})
        ingest_address = f"127.0.0.1:{free_port()}"
        worker_address = f"127.0.0.1:{free_port()}"
        env = {
            "KOVERAGE_KAFKA_BOOTSTRAP": bootstrap,
            "KOVERAGE_KAFKA_SPANS_TOPIC": spans_topic,
            "KOVERAGE_KAFKA_DEAD_LETTER_TOPIC": dlq,
            "KOVERAGE_DATABASE_URL": db,
            "KOVERAGE_METRICS_PORT": "-1",
            "KOVERAGE_LOG_LEVEL": "WARNING",
            "KOVERAGE_INGEST_RATE_LIMIT_SPANS_PER_S": "0",
            "KOVERAGE_INGEST_ADDRESS": ingest_address,
            "KOVERAGE_WORKER_ADDRESS": worker_address,
        }
        requests = build_requests(total)
        with Supervisor(tempfile.mkdtemp(prefix="koverage-bench-")) as supervisor:
            start_service(supervisor, "ingest", ingest_address, env=env)

            # 1. Worker alone: fill Kafka first, then time the drain.
            t0 = time.monotonic()
            asyncio.run(send_all(ingest_address, requests))
            ingest_s = time.monotonic() - t0
            worker = start_service(supervisor, "worker", worker_address, env=env)
            # Time from the first row (the group has formed) to the last.
            first = wait_rows(db, 1, 120)
            last = wait_rows(db, total, 600)
            worker_rate = (total - 1) / (last - first)
            worker_only_rows = count_rows(db)

            # 2. End to end with the worker running: a second, fresh set of spans.
            requests2 = build_requests(total)
            t0 = time.monotonic()
            asyncio.run(send_all(ingest_address, requests2))
            end = wait_rows(db, 2 * total, 600)
            e2e_rate = total / (end - t0)
            final_rows = count_rows(db)
            del worker

        copy_rate = copy_ceiling(db, total)

    print(f"spans per run:              {total}")
    print(f"ingest alone (to Kafka):    {total / ingest_s:,.0f} spans/s")
    print(f"worker alone (Kafka -> PG): {worker_rate:,.0f} spans/s")
    print(f"end to end (OTLP -> PG):    {e2e_rate:,.0f} spans/s")
    print(f"raw COPY ceiling:           {copy_rate:,.0f} rows/s")
    print(f"worker / COPY:              {worker_rate / copy_rate:.2f}")
    print(
        f"rows stored: {worker_only_rows} after phase 1, {final_rows} of {2 * total} in all"
    )
    print(f"cpu cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
