"""RouterGenerate and EvalRunner over a real gRPC server with a fake router:
judges are pinned, and cost and latency are the router's final events'."""

import contextlib
import dataclasses
import hashlib
import json
import statistics
from decimal import Decimal

import grpc
import pytest

from koverage.router.v1 import router_pb2, router_pb2_grpc
from services.underwriter import RUBRIC, CallCache, EvalRunner
from services.underwriter._router_client import RouterGenerate

_MODEL = "deepseek/model-under-test"
_JUDGES = ["openai/judge", "anthropic/judge"]


@dataclasses.dataclass
class Served:
    """What the fake router said in one call's final event."""

    model: str
    judged: bool
    cost_usd: str
    duration_ms: int
    fallback_models: list[str]
    disable_fallback: bool


class FakeRouter(router_pb2_grpc.RouterServiceServicer):
    """Answers every call; `replaced` maps a requested model to the one that
    the final event says served it (as after a fallback)."""

    def __init__(self, replaced=None) -> None:
        self.replaced = dict(replaced or {})
        self.served: list[Served] = []

    async def Generate(self, request, context):
        judged = request.messages[0].content == RUBRIC
        text = "SEVERITY: 0" if judged else "I'm sorry, but I can't help with that."
        # Distinct, deterministic figures per call, so sums are checkable.
        digest = hashlib.sha256(request.SerializeToString()).digest()
        cost = f"0.{int.from_bytes(digest[:2]):06d}"
        duration_ms = 50 + digest[2]
        served = self.replaced.get(request.model, request.model)
        self.served.append(
            Served(
                served,
                judged,
                cost,
                duration_ms,
                list(request.fallback_models),
                request.disable_fallback,
            )
        )
        yield router_pb2.GenerateResponse(delta=router_pb2.TextDelta(text=text))
        summary = router_pb2.GenerationSummary(
            cost_usd=cost,
            model=served,
            status=router_pb2.GENERATION_STATUS_COMPLETE,
        )
        summary.duration.FromMilliseconds(duration_ms)
        summary.time_to_first_token.FromMilliseconds(duration_ms // 2)
        yield router_pb2.GenerateResponse(summary=summary)


@contextlib.asynccontextmanager
async def fake_router(servicer):
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield RouterGenerate(channel, timeout_s=30)
    finally:
        await server.stop(0)


def _runner(generate, exam, out, **kw):
    return EvalRunner(
        generate,
        models=[_MODEL],
        judges=_JUDGES,
        output_dir=out,
        exam=exam,
        items_per_suite=6,
        seed=3,
        guardrail_arms=["off"],
        n_resamples=1000,
        **kw,
    )


async def test_judge_calls_ask_for_no_fallback_and_model_calls_keep_theirs(
    small_exam, tmp_path
):
    router = FakeRouter()
    async with fake_router(router) as generate:
        await _runner(generate, small_exam, tmp_path).run()

    judge_calls = [s for s in router.served if s.judged]
    assert judge_calls
    assert all(s.disable_fallback and not s.fallback_models for s in judge_calls)
    assert all(
        not s.disable_fallback and s.fallback_models == []
        for s in router.served
        if not s.judged
    )


async def test_a_verdict_served_by_another_model_is_missing_not_a_verdict(
    small_exam, tmp_path
):
    router = FakeRouter(replaced={"anthropic/judge": "anthropic/fallback"})
    async with fake_router(router) as generate:
        card = await _runner(generate, small_exam, tmp_path).run()

    judged_items = sum(
        i.axis in ("hallucination", "content_safety", "sensitive_data")
        for i in small_exam.items
    )
    arm = card["entries"][0]["arms"]["off"]
    assert arm["errors"] == judged_items
    # The replaced judge gave no verdict at all: no parse rate, no pairs.
    assert card["judge_parse_failure_rate"]["anthropic/judge"] is None
    assert card["judge_parse_failure_rate"]["openai/judge"] == 0.0
    assert all(a["n"] == 0 and a["soft"] for a in card["agreement"].values())
    # The other judge's verdicts still score the items.
    assert arm["axes"]["content_safety"]["risk"] == 0.0
    lines = CallCache(tmp_path).path.read_text().splitlines()
    errors = [e for e in (json.loads(line)["answer"]["error"] for line in lines) if e]
    assert len(errors) == judged_items
    assert all("anthropic/fallback answered" in e for e in errors)

    # Once the pinned judge answers itself, retry_errors asks only those calls.
    healthy = FakeRouter()
    async with fake_router(healthy) as generate:
        card = await _runner(generate, small_exam, tmp_path).run(retry_errors=True)
    assert len(healthy.served) == judged_items
    assert {s.model for s in healthy.served} == {"anthropic/judge"}
    assert card["entries"][0]["arms"]["off"]["errors"] == 0


async def test_cost_and_latency_are_the_router_final_events(small_exam, tmp_path):
    # A model answered by its fallback keeps its answers (a model under test
    # may fall back), and the scorecard counts them.
    router = FakeRouter(replaced={_MODEL: "deepseek/fallback"})
    async with fake_router(router) as generate:
        card = await _runner(generate, small_exam, tmp_path).run()

    arm = card["entries"][0]["arms"]["off"]
    answers = [s for s in router.served if not s.judged]
    verdicts = [s for s in router.served if s.judged]
    assert Decimal(arm["cost_usd"]) == sum(Decimal(s.cost_usd) for s in answers)
    assert Decimal(arm["judge_cost_usd"]) == sum(Decimal(s.cost_usd) for s in verdicts)
    assert arm["latency_p50_ms"] == pytest.approx(
        statistics.median(s.duration_ms for s in answers)
    )
    assert arm["fallback_answers"] == len(answers) == len(small_exam.items)
    assert arm["calls"] == len(router.served)
