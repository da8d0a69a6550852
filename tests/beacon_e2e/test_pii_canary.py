"""1,000 router turns seeded with fake PII: no canary reaches Kafka or Postgres."""

import asyncio
import random
import string
import time

import pytest

from koverage.db import connect
from koverage.llmobs import find_pii
from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import connect as grpc_connect
from services.ingest._servicer import SPANS_ACCEPTED, SPANS_REJECTED
from tests.beacon_e2e.conftest import router_process, running_pipeline
from tests.ingest.otlp import read_topic

_TURNS = 1000
_CONCURRENCY = 32


_PROMPT_MAX_CHARS = 256  # the router's preview: every canary must reach it


def _luhn_card(rng: random.Random) -> str:
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = digit * 2 if position % 2 == 0 else digit
        total += value - 9 if value > 9 else value
    digits.append((10 - total % 10) % 10)
    text = "".join(map(str, digits))
    return " ".join(text[i : i + 4] for i in range(0, 16, 4))


def _iban(rng: random.Random) -> str:
    # ISO 13616: check digits make (BBAN + "DE00", letters as numbers) mod 97 = 1.
    bban = "".join(str(rng.randrange(10)) for _ in range(18))
    check = 98 - int(bban + "131400") % 97
    return f"DE{check:02d}{bban}"


def _canaries(turn: int, rng: random.Random) -> dict[str, tuple[str, str]]:
    """kind -> (text seeded into the prompt, the secret part that must not leak)."""
    pem_body = "MIIB" + "".join(rng.choices(string.ascii_letters, k=40))
    token = f"tok{turn:04d}" + "".join(rng.choices(string.ascii_letters, k=24))
    phone = f"+1-{rng.randrange(200, 999)}-{rng.randrange(200, 999)}-"
    phone += f"{rng.randrange(1000, 9999)}"
    ip = f"10.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
    ssn = f"{rng.randrange(100, 600):03d}-{rng.randrange(10, 99):02d}-"
    ssn += f"{rng.randrange(1000, 9999):04d}"
    seeded = {
        "email": f"canary.{turn}.{rng.randrange(10**6)}@example.org",
        "phone": phone,
        "ssn": ssn,
        "card": _luhn_card(rng),
        "ip": ip,
        "iban": _iban(rng),
        "api_key": f"sk-canary{turn:04d}{rng.randrange(10**12):012d}abcdef",
        "bearer": f"Bearer {token}",
        "pem": f"-----BEGIN PRIVATE KEY-----\n{pem_body}\n-----END PRIVATE KEY-----",
    }
    secrets = {**seeded, "bearer": token, "pem": pem_body}
    return {kind: (seeded[kind], secrets[kind]) for kind in seeded}


def _prompt(turn: int, canaries: dict[str, tuple[str, str]]) -> str:
    # Three kinds a turn, rotating, so every canary lies inside the preview.
    kinds = list(canaries)
    group = [kinds[(3 * turn + i) % len(kinds)] for i in range(3)]
    return "Hi, " + "; ".join(f"my {k} is {canaries[k][0]}" for k in group) + "."


def _metric_total(counter) -> float:
    return sum(
        sample.value
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


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


_KIND_OF = {"api_key": "credential", "bearer": "credential", "pem": "credential"}


def test_every_seeded_canary_is_a_value_the_redactor_finds():
    # Guards the test below: a canary the redactor cannot see proves nothing.
    rng = random.Random(7)
    for turn in range(30):
        canaries = _canaries(turn, rng)
        prompt = _prompt(turn, canaries)
        assert len(prompt) <= _PROMPT_MAX_CHARS
        for kind, (seeded, secret) in canaries.items():
            assert secret in seeded
            found = find_pii(f"my {kind} is {seeded}.")
            assert [k for _, _, k in found] == [_KIND_OF.get(kind, kind)], seeded


@pytest.mark.slow
async def test_no_canary_reaches_the_telemetry_tables_or_topics(
    kafka_bootstrap, database_url
):
    rng = random.Random(20260105)
    turns = [_canaries(turn, rng) for turn in range(_TURNS)]
    accepted_before = _metric_total(SPANS_ACCEPTED)
    rejected_before = _metric_total(SPANS_REJECTED)

    async with running_pipeline(
        kafka_bootstrap, database_url, collector=True
    ) as pipeline:
        with router_process(pipeline.collector) as router_address:
            channel = grpc_connect(router_address)
            async with channel:
                stub = router_pb2_grpc.RouterServiceStub(channel)
                gate = asyncio.Semaphore(_CONCURRENCY)

                async def turn(index: int) -> None:
                    text = _prompt(index, turns[index])
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

                await asyncio.gather(*(turn(i) for i in range(_TURNS)))

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
        redacted_kinds = await asyncio.to_thread(_redacted_kinds, database_url)
        accepted = int(_metric_total(SPANS_ACCEPTED) - accepted_before)
        dead_lettered = int(_metric_total(SPANS_REJECTED) - rejected_before)
        dead_lettered += pipeline.consumer.stats.dead_lettered
        # Read each topic to its end: the expected count, then until quiet.
        topics = await asyncio.to_thread(
            read_topic,
            kafka_bootstrap,
            settings.kafka_spans_topic,
            accepted,
            partitions=2,
            timeout_s=60,
            quiet_s=2.0,
        )
        dead = await asyncio.to_thread(
            read_topic,
            kafka_bootstrap,
            settings.kafka_dead_letter_topic,
            dead_lettered,
            timeout_s=30,
            quiet_s=2.0,
        )

    assert accepted >= 2 * _TURNS  # a server span and an LLM span per turn
    assert len(topics) == accepted
    assert len(dead) == dead_lettered
    # Every kind was seeded, reached the redactor and was replaced, not dropped.
    assert redacted_kinds >= {"email", "phone", "ssn", "card", "ip", "iban"}
    assert "credential" in redacted_kinds
    assert "[EMAIL]" in stored and "[CREDENTIAL]" in stored

    kafka_bytes = b"\n".join(r.value() or b"" for r in topics + dead)
    kafka_bytes += b"\n".join(
        v for r in topics + dead for _, v in (r.headers() or ()) if v
    )
    leaked = [
        kind
        for canaries in turns
        for kind, (_, secret) in canaries.items()
        if secret in stored or secret.encode() in kafka_bytes
    ]
    assert leaked == []


def _redacted_kinds(database_url: str) -> set[str]:
    with connect(database_url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT jsonb_object_keys(redaction_counts) FROM llm_calls"
        ).fetchall()
    return {kind for (kind,) in rows}


def _count_calls(database_url: str) -> int:
    with connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
