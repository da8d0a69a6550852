"""1,000 router turns seeded with fake PII: no canary reaches Kafka or Postgres."""

import asyncio
import random
import time

import pytest

from koverage.db import connect
from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import connect as grpc_connect
from tests.beacon_e2e.conftest import router_process, running_pipeline
from tests.ingest.otlp import read_topic

_TURNS = 1000
_CONCURRENCY = 32


def _luhn_card(rng: random.Random) -> str:
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = digit * 2 if position % 2 == 0 else digit
        total += value - 9 if value > 9 else value
    digits.append((10 - total % 10) % 10)
    text = "".join(map(str, digits))
    return " ".join(text[i : i + 4] for i in range(0, 16, 4))


def _canaries(turn: int, rng: random.Random) -> list[str]:
    return [
        f"canary.{turn}.{rng.randrange(10**6)}@example.org",
        _luhn_card(rng),
        f"{rng.randrange(100, 600):03d}-{rng.randrange(10, 99):02d}-{rng.randrange(1000, 9999):04d}",
        f"sk-canary{turn:04d}{rng.randrange(10**12):012d}abcdef",
    ]


def _database_text(database_url: str) -> str:
    with connect(database_url) as conn:
        spans = conn.execute(
            "SELECT string_agg(name || attributes::text || resource_attributes::text"
            " || status_message, E'\\n') FROM spans"
        ).fetchone()[0]
        calls = conn.execute(
            "SELECT string_agg(concat_ws(' ', prompt_preview, completion_preview,"
            " conversation_id, model, error_type), E'\\n') FROM llm_calls"
        ).fetchone()[0]
    return (spans or "") + (calls or "")


@pytest.mark.slow
async def test_no_canary_reaches_the_telemetry_tables_or_topics(
    kafka_bootstrap, database_url
):
    rng = random.Random(20260105)
    turns = [_canaries(turn, rng) for turn in range(_TURNS)]

    async with running_pipeline(
        kafka_bootstrap, database_url, collector=True
    ) as pipeline:
        with router_process(pipeline.collector) as router_address:
            channel = grpc_connect(router_address)
            async with channel:
                stub = router_pb2_grpc.RouterServiceStub(channel)
                gate = asyncio.Semaphore(_CONCURRENCY)

                async def turn(canaries: list[str]) -> None:
                    text = (
                        f"Hi, I am reachable at {canaries[0]}, my card is "
                        f"{canaries[1]}, SSN {canaries[2]}, key {canaries[3]}."
                    )
                    async with gate:
                        async for _ in stub.Generate(
                            router_pb2.GenerateRequest(
                                model="sim/fast",
                                messages=[
                                    router_pb2.ChatMessage(
                                        role=router_pb2.ROLE_USER, content=text
                                    )
                                ],
                            ),
                            timeout=60,
                        ):
                            pass

                await asyncio.gather(*(turn(c) for c in turns))

            deadline = time.monotonic() + 90
            calls = 0
            while time.monotonic() < deadline:
                calls = await asyncio.to_thread(_count_calls, database_url)
                if calls >= _TURNS:
                    break
                await asyncio.sleep(0.5)
            assert calls == _TURNS

        settings = pipeline.settings
        stored = await asyncio.to_thread(_database_text, database_url)
        topics = await asyncio.to_thread(
            read_topic,
            kafka_bootstrap,
            settings.kafka_spans_topic,
            2 * _TURNS,
            partitions=2,
        )
        dead = await asyncio.to_thread(
            read_topic,
            kafka_bootstrap,
            settings.kafka_dead_letter_topic,
            1,
            timeout_s=2,
        )

    kafka_bytes = b"\n".join(r.value() for r in topics + dead)
    assert len(topics) >= 2 * _TURNS  # a server span and an LLM span per turn
    assert "[EMAIL]" in stored  # the previews were redacted, not dropped
    leaked = [
        canary
        for canaries in turns
        for canary in canaries
        if canary in stored or canary.encode() in kafka_bytes
    ]
    assert leaked == []


def _count_calls(database_url: str) -> int:
    with connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
