"""The planted-rate personas served by the router: same answers as in
process, and an EvaluationService run through the router recovers them."""

import json

import pytest

from koverage.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc
from koverage.serving import connect
from koverage.settings import Settings
from services.router import build_server as build_router_server
from services.underwriter import (
    JAILBREAK_TEMPLATES,
    build_exam,
    build_judge_messages,
    default_datasets_dir,
)
from services.underwriter._router_client import RouterGenerate
from services.underwriter.simulated import (
    JUDGE_PERSONAS,
    PERSONAS,
    Simulator,
    planted_rates,
)
from tests.underwriter.test_service import mesh, run_to_end


async def test_router_personas_answer_as_the_in_process_simulator(tmp_path):
    exam = build_exam(default_datasets_dir(Settings()), items_per_suite=4, seed=21)
    local = Simulator(items=None)
    router = build_router_server(
        Settings.from_env({}, router_address="127.0.0.1:0", metrics_port=-1)
    )
    await router.start()
    try:
        async with connect(router.address) as channel:
            remote = RouterGenerate(channel, timeout_s=30)
            for item in exam.items:
                for guardrail in (False, True):
                    here = await local("sim-leaky", item.messages, 0.0, 21, guardrail)
                    there = await remote("sim/leaky", item.messages, 0.0, 21, guardrail)
                    assert there.error is None, there.error
                    if there.refused and not here.refused:
                        continue  # the router's own guardrail refused first
                    assert there.refused == here.refused, item.id
                    if not here.refused and not guardrail:
                        assert there.text == here.text, item.id
                if item.axis in ("hallucination", "content_safety", "sensitive_data"):
                    answer = await local("sim-leaky", item.messages, 0.0, 21, False)
                    judged = build_judge_messages(item, answer.text)
                    for name in JUDGE_PERSONAS:
                        want = await local(name, judged, 0.0, 21, False)
                        got = await remote(
                            name.replace("sim-", "sim/"), judged, 0.0, 21, False
                        )
                        assert got.text == want.text, (item.id, name)
    finally:
        await router.stop(0.5)


@pytest.mark.integration
async def test_a_run_through_the_router_recovers_the_planted_rates(tmp_path):
    rates = PERSONAS["sim-leaky"]
    off, on = planted_rates(rates, "off"), planted_rates(rates, "on")
    k = len(JAILBREAK_TEMPLATES)
    want_off = {
        "hallucination": off["hallucination"],
        "bias": off["bias"],
        "content_safety": (off["harmful_plain"] + k * off["harmful_jailbreak"])
        / (1 + k),
        "sensitive_data": off["sensitive_data"],
    }
    spec = evaluation_pb2.RunSpec(
        models=["sim/leaky"],
        judges=["sim/judge-exact", "sim/judge-noisy"],
        items_per_suite=30,
        seed=3,
        concurrency=32,
    )
    async with mesh(tmp_path) as address, connect(address, api_key="key-a") as channel:
        stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
        events = await run_to_end(stub, spec)
        run_id = events[0].started.run_id
        assert events[-1].finished.summary.state == evaluation_pb2.RUN_STATE_SUCCEEDED
        card = json.loads(
            (
                await stub.GetScorecard(
                    evaluation_pb2.GetScorecardRequest(run_id=run_id), timeout=10
                )
            ).scorecard_json
        )

    entry = card["entries"][0]
    assert entry["simulated"] is True
    arms = entry["arms"]
    assert arms["off"]["errors"] == arms["on"]["errors"] == 0
    # Guardrail off: the router passes everything to the persona, so every
    # planted rate must fall inside its reported CI.
    for axis, want in want_off.items():
        lo, hi = arms["off"]["axes"][axis]["ci"]
        assert lo <= want <= hi, ("off", axis, want, lo, hi)
    lo, hi = arms["off"]["over_refusal"]["ci"]
    assert lo <= off["over_refusal"] <= hi, ("off", "over_refusal")

    # Guardrail on: the persona's planted guardrail refuses safe prompts'
    # answers too, and those refusals arrive as refused generations (the
    # router's pattern guardrail adds refusals of its own on top).
    lo, hi = arms["on"]["over_refusal"]["ci"]
    assert lo <= on["over_refusal"] <= hi, ("on", "over_refusal", lo, hi)
    # Paired arms: a blocked answer is a refusal, so the rate cannot fall
    # (it would if blocked answers came back as empty completions).
    assert arms["on"]["over_refusal"]["rate"] >= arms["off"]["over_refusal"]["rate"]
    # Leaks are blocked by the persona, the router's prompt screening and
    # its output PII scrubbing, so at least the planted share goes.
    assert arms["on"]["axes"]["sensitive_data"]["risk"] <= on["sensitive_data"] + 0.1
    assert entry["guardrail_ab"]["ci"][0] > 0
    # The noisy judge's planted parse failures (5%) are seen; the exact one has none.
    parse = card["judge_parse_failure_rate"]
    assert parse["sim/judge-exact"] == 0.0
    assert 0.0 < parse["sim/judge-noisy"] < 0.12


def test_router_personas_are_in_the_shipped_catalog():
    from services.router import load_catalog

    catalog = load_catalog()
    for model in ("sim/leaky", "sim/careful", "sim/judge-exact", "sim/judge-noisy"):
        assert catalog.get(model).simulated
