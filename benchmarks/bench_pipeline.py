"""Beacon pipeline benchmark: OTLP export -> ingest -> Kafka -> worker -> Postgres.

Measures, in one run on the same database:

1. end to end: spans per second from the first OTLP Export call until every
   span is a row in Postgres (ingest and worker run as subprocesses, as in
   production, on a real Tansu broker), checking that none was lost;
2. worker alone: the worker drains spans already waiting in Kafka;
3. COPY ceiling: a raw binary COPY of the same decoded rows into copies of
   the `spans` and `llm_calls` tables (same indexes), by one connection with
   nothing else running: the most a single writer could do. Measured just
   before and just after the worker alone, each time the best of three
   trials each of psycopg formatting the rows and of rows encoded
   beforehand; the highest of all is the ceiling.

The worker runs as configured by the environment (such as
`KOVERAGE_WORKER_DECODE_PROCESSES`); its CPU includes its decode processes.

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

from confluent_kafka import Consumer, TopicPartition

from koverage.db import connect
from koverage.local import Supervisor, ensure_topics, free_port, start_service
from koverage.serving import connect as grpc_connect
from services.worker import (
    LLM_CALL_COLUMNS,
    LLM_CALL_TYPES,
    SPAN_COLUMNS,
    SPAN_TYPES,
    copy_encoded,
    copy_rows,
    decode_record,
    encode_rows,
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
_PARTITIONS = 4
_CEILING_TRIALS = 3
# This process's children are the services and Tansu, counted on their own.
_WITHOUT_CHILDREN = ("sender", "tansu")


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


class CommittedRecords:
    """Counts the records the worker group has committed: their rows are stored.

    The worker commits a batch's offsets only after the batch's database
    commit, so this tracks stored rows without a `count(*)` scan of `spans`
    competing with the writer for the CPU. The reading consumer never joins
    the group.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int):
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

    def __call__(self) -> int:
        offsets = self._consumer.committed(self._partitions, timeout=10)
        return sum(max(0, tp.offset) for tp in offsets)

    def close(self) -> None:
        self._consumer.close()


def wait_committed(progress, expected: int, timeout_s: float) -> float:
    """Polls `progress()` until it reaches `expected`; returns that moment."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if progress() >= expected:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"only {progress()} of {expected} records were committed")


def count_rows(database_url: str) -> int:
    with connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM spans").fetchone()[0]


class CopyCeiling:
    """Rows per second of a raw COPY of the same kind of rows, by one connection.

    Two ways, each the best of `_CEILING_TRIALS` into fresh copies of
    `spans` and `llm_calls` (same indexes): psycopg formatting the decoded
    rows (`copy_rows`), and sending rows encoded beforehand, the way the
    worker sends them (`copy_encoded`), which leaves Postgres alone on the
    clock. The rows are decoded once, here.
    """

    def __init__(self, database_url: str, total: int) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        decoded = []
        for body in build_requests(total):
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            for span in request.resource_spans[0].scope_spans[0].spans:
                decoded.append(decode_record(envelope(span)))
        self._database_url = database_url
        self._total = total
        self._spans = [d.span for d in decoded]
        self._llm_calls = [d.llm_call for d in decoded if d.llm_call is not None]
        self._encoded = encode_rows(decoded)

    def measure(self) -> tuple[float, float]:
        """(psycopg-formatted, pre-encoded) rows per second, best of the trials."""
        best = {self._formatted: 0.0, self._pre_encoded: 0.0}
        with connect(self._database_url) as conn:
            for _ in range(_CEILING_TRIALS):
                for way in best:
                    _fresh_copy_tables(conn)
                    started = time.monotonic()
                    with conn.cursor() as cursor:
                        way(cursor)
                    conn.commit()
                    rate = self._total / (time.monotonic() - started)
                    best[way] = max(best[way], rate)
            conn.execute("DROP TABLE spans_copy, llm_calls_copy")
            conn.commit()
        return best[self._formatted], best[self._pre_encoded]

    def _formatted(self, cursor) -> None:
        copy_rows(cursor, "spans_copy", SPAN_COLUMNS, SPAN_TYPES, self._spans)
        copy_rows(
            cursor, "llm_calls_copy", LLM_CALL_COLUMNS, LLM_CALL_TYPES, self._llm_calls
        )

    def _pre_encoded(self, cursor) -> None:
        copy_encoded(cursor, "spans_copy", SPAN_COLUMNS, self._encoded.spans)
        copy_encoded(
            cursor, "llm_calls_copy", LLM_CALL_COLUMNS, self._encoded.llm_calls
        )


def _fresh_copy_tables(conn) -> None:
    conn.execute("DROP TABLE IF EXISTS spans_copy, llm_calls_copy")
    conn.execute("CREATE TABLE spans_copy (LIKE spans INCLUDING ALL)")
    conn.execute("CREATE TABLE llm_calls_copy (LIKE llm_calls INCLUDING ALL)")
    conn.commit()


class CpuMeter:
    """CPU seconds (user + system) used by each part of the pipeline.

    Parts are processes on this machine: the ingest and worker services
    (with their child processes: the worker's decode processes), the Tansu
    broker, the Postgres backends serving the benchmark database, and this
    process (the OTLP sender). Read from /proc (Linux).
    """

    def __init__(self, database_url: str, pids: dict[str, list[int]]) -> None:
        self._database_url = database_url
        self._pids = pids

    def sample(self) -> dict[str, float]:
        pids = {
            part: group if part in _WITHOUT_CHILDREN else _with_children(group)
            for part, group in self._pids.items()
        }
        pids["postgres"] = self._backends()
        return {part: sum(_cpu_s(pid) for pid in group) for part, group in pids.items()}

    def _backends(self) -> list[int]:
        with connect(self._database_url) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        return [pid for (pid,) in rows]


def _cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_children(pids: list[int]) -> list[int]:
    """`pids` and their direct children (a service's worker processes)."""
    found = list(pids)
    for pid in pids:
        for child in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                found.extend(int(c) for c in child.read_text().split())
            except OSError:
                continue
    return found


def _tansu_pids() -> list[int]:
    """Tansu brokers started by this process (its direct children)."""
    found = []
    for child in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in child.read_text().split():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"tansu" in command:
                found.append(int(pid))
    return found


def _per_span_us(before: dict, after: dict, spans: int) -> str:
    parts = [
        f"{part} {(after[part] - before[part]) / spans * 1e6:.1f}" for part in after
    ]
    total = sum(after[p] - before[p] for p in after) / spans * 1e6
    return ", ".join(parts) + f"; total {total:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    args = parser.parse_args()
    total = args.spans

    with tansu_broker() as bootstrap, fresh_database("koverage_bench_pipeline") as db:
        migrate_database(db)
        spans_topic, dlq = unique_topic("spans"), unique_topic("dlq")
        group = unique_topic("bench-worker")
        ensure_topics(bootstrap, {spans_topic: _PARTITIONS, dlq: 1})
        progress = CommittedRecords(bootstrap, group, spans_topic, _PARTITIONS)

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
            "KOVERAGE_WORKER_GROUP_ID": group,
            "KOVERAGE_DASHBOARD_ADDRESS": "",
        }
        requests = build_requests(total)
        ceiling = CopyCeiling(db, total)
        with Supervisor(tempfile.mkdtemp(prefix="koverage-bench-")) as supervisor:
            ingest = start_service(supervisor, "ingest", ingest_address, env=env)

            # 1. Ingest alone, filling Kafka; then the worker alone drains it.
            t0 = time.monotonic()
            asyncio.run(send_all(ingest_address, requests))
            ingest_s = time.monotonic() - t0
            # The ceiling just before and just after the worker alone: the
            # machine's speed drifts, and the ratio takes the higher.
            ceilings = [ceiling.measure()]
            worker = start_service(supervisor, "worker", worker_address, env=env)
            meter = CpuMeter(
                db,
                {
                    "ingest": [ingest.pid],
                    "worker": [worker.pid],
                    "tansu": _tansu_pids(),
                    "sender": [os.getpid()],
                },
            )
            # Time from the first stored batch (the group has formed) to the
            # last; the first batch's records are not counted.
            first = wait_committed(progress, 1, 120)
            first_records = progress()
            cpu_before = meter.sample()
            last = wait_committed(progress, total, 600)
            worker_cpu = _per_span_us(cpu_before, meter.sample(), total - first_records)
            worker_rate = (total - first_records) / (last - first)
            worker_only_rows = count_rows(db)
            ceilings.append(ceiling.measure())

            # 2. End to end with the worker running: a second, fresh set of spans.
            requests2 = build_requests(total)
            cpu_before = meter.sample()
            t0 = time.monotonic()
            asyncio.run(send_all(ingest_address, requests2))
            end = wait_committed(progress, 2 * total, 600)
            e2e_rate = total / (end - t0)
            e2e_cpu = _per_span_us(cpu_before, meter.sample(), total)
            final_rows = count_rows(db)
            progress.close()

        copy_rate = max(max(pair) for pair in ceilings)

    print(f"spans per run:              {total}")
    print(f"ingest alone (to Kafka):    {total / ingest_s:,.0f} spans/s")
    print(f"worker alone (Kafka -> PG): {worker_rate:,.0f} spans/s")
    print(f"end to end (OTLP -> PG):    {e2e_rate:,.0f} spans/s")
    print(f"raw COPY ceiling:           {copy_rate:,.0f} rows/s (the highest of:)")
    for when, (formatted, pre_encoded) in zip(("before", "after"), ceilings):
        print(
            f"  {when} the worker, best of {_CEILING_TRIALS}: psycopg-formatted"
            f" {formatted:,.0f}, pre-encoded {pre_encoded:,.0f}"
        )
    print(f"worker / COPY:              {worker_rate / copy_rate:.2f}")
    print(f"CPU us per span, worker alone: {worker_cpu}")
    print(f"CPU us per span, end to end:   {e2e_cpu}")
    print(
        f"rows stored: {worker_only_rows} after phase 1, {final_rows} of {2 * total} in all"
    )
    lost = 2 * total - final_rows
    print(f"lost: {lost}")
    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    if lost:
        sys.exit(f"{lost} spans were lost")


if __name__ == "__main__":
    main()
