"""Known-answer tests: the harness recovers rates planted in simulator personas."""

import math

import pytest

from koverage.settings import Settings
from services.underwriter import (
    JAILBREAK_TEMPLATES,
    Calibration,
    EvalRunner,
    build_exam,
    default_datasets_dir,
    insurability_index,
)
from services.underwriter.simulated import PERSONAS, Simulator, planted_rates

_EXACT = {"miss_rate": 0.0, "false_alarm_rate": 0.0, "parse_failure_rate": 0.0}
_ROOT = default_datasets_dir(Settings())


def _expected(rates, arm):
    planted = planted_rates(rates, arm)
    k = len(JAILBREAK_TEMPLATES)
    return {
        "hallucination": planted["hallucination"],
        "bias": planted["bias"],
        "content_safety": (planted["harmful_plain"] + k * planted["harmful_jailbreak"])
        / (1 + k),
        "sensitive_data": planted["sensitive_data"],
        "over_refusal": planted["over_refusal"],
    }


async def _run(
    tmp_path,
    judges,
    *,
    suites=None,
    n=100,
    seed=11,
    arms=("off", "on"),
    calibrations=None,
):
    exam = build_exam(
        _ROOT,
        suites or ("hallucination", "bias", "content_safety", "sensitive_data"),
        n,
        seed,
    )
    sim = Simulator(
        exam.items, personas={"sim-leaky": PERSONAS["sim-leaky"]}, judges=judges
    )
    runner = EvalRunner(
        sim,
        models=["sim-leaky"],
        judges=list(judges),
        output_dir=tmp_path,
        exam=exam,
        items_per_suite=n,
        seed=seed,
        guardrail_arms=arms,
        n_resamples=1000,
        simulated_models={"sim-leaky"},
        simulated_judges=list(judges),
        calibrations=calibrations,
    )
    return await runner.run()


async def test_planted_rates_fall_inside_reported_cis(tmp_path):
    card = await _run(tmp_path, {"judge-a": _EXACT, "judge-b": _EXACT})
    entry = card["entries"][0]
    for arm in ("off", "on"):
        got, want = entry["arms"][arm], _expected(PERSONAS["sim-leaky"], arm)
        for axis in ("hallucination", "bias", "content_safety", "sensitive_data"):
            lo, hi = got["axes"][axis]["ci"]
            assert lo <= want[axis] <= hi, (arm, axis, want[axis], lo, hi)
        lo, hi = got["over_refusal"]["ci"]
        assert lo <= want["over_refusal"] <= hi, (arm, "over_refusal")

    # The guardrail removes failures: a real risk reduction at a cost in refusals.
    ab = entry["guardrail_ab"]
    assert ab["ci"][0] > 0 and ab["mcnemar_p"] < 0.01
    assert ab["over_refusal_cost"] >= 0
    for axis, agreement in card["agreement"].items():
        assert agreement["raw"] == 1.0 and agreement[
            "kappa_quadratic"
        ] == pytest.approx(1.0), axis
        assert not agreement["soft"]
    assert card["judge_parse_failure_rate"] == {"judge-a": 0.0, "judge-b": 0.0}


async def test_noisy_judges_are_measured_and_corrected(tmp_path):
    error, parse_fail = 0.15, 0.10
    noisy = {
        "miss_rate": error,
        "false_alarm_rate": error,
        "parse_failure_rate": parse_fail,
    }
    card = await _run(
        tmp_path,
        {"judge-a": noisy, "judge-b": noisy},
        suites=("content_safety",),
        n=150,
        arms=("off",),
        calibrations={"content_safety": Calibration(1 - error, 1 - error)},
    )

    # Parse failures: planted 10% of ~1200 replies per judge (3 standard errors).
    for rate in card["judge_parse_failure_rate"].values():
        assert abs(rate - parse_fail) < 3 * math.sqrt(
            parse_fail * (1 - parse_fail) / 1200
        )

    # Two judges erring independently at e on binary items disagree at 2e(1-e).
    agreement = card["agreement"]["content_safety"]
    expected_raw = 1 - 2 * error * (1 - error)
    assert abs(agreement["raw"] - expected_raw) < 3 * math.sqrt(
        expected_raw * (1 - expected_raw) / agreement["n"]
    )

    # Rogan-Gladen with the judges' known sensitivity/specificity undoes the bias.
    axis = card["entries"][0]["arms"]["off"]["axes"]["content_safety"]
    planted = _expected(PERSONAS["sim-leaky"], "off")["content_safety"]
    assert abs(axis["corrected_risk"] - planted) < abs(axis["risk"] - planted)
    assert abs(axis["corrected_risk"] - planted) < 0.06


async def test_low_agreement_marks_the_axis_soft(tmp_path):
    noisy = {"miss_rate": 0.4, "false_alarm_rate": 0.4, "parse_failure_rate": 0.0}
    card = await _run(
        tmp_path,
        {"judge-a": _EXACT, "judge-b": noisy},
        suites=("hallucination",),
        n=80,
        arms=("off",),
    )
    assert card["agreement"]["hallucination"]["kappa_quadratic"] < 0.4
    assert card["agreement"]["hallucination"]["soft"] is True
    assert card["entries"][0]["arms"]["off"]["axes"]["hallucination"]["soft"] is True
    assert any("hallucination" in t for t in card["threats_to_validity"])


async def test_harness_cis_cover_the_planted_rate_near_nominal(tmp_path):
    # 50 independent exams (seed changes the items and the persona's draws).
    seeds = 50
    names = ("sensitive_data", "content_safety", "over_refusal", "index")
    hits = dict.fromkeys(names, 0)
    want = _expected(PERSONAS["sim-leaky"], "off")
    # The index over the two axes run, from the planted axis risks.
    want["index"] = insurability_index(
        {a: want[a] for a in ("sensitive_data", "content_safety")}
    )
    for seed in range(seeds):
        card = await _run(
            tmp_path / str(seed),
            {"judge-a": _EXACT, "judge-b": _EXACT},
            suites=("sensitive_data", "content_safety"),
            n=25,
            seed=seed,
            arms=("off",),
        )
        arm = card["entries"][0]["arms"]["off"]
        cis = {
            "sensitive_data": arm["axes"]["sensitive_data"]["ci"],
            # The clustered axis: each behaviour is asked plainly and in
            # every jailbreak wrapper, and the bootstrap resamples behaviours.
            "content_safety": arm["axes"]["content_safety"]["ci"],
            "over_refusal": arm["over_refusal"]["ci"],
            "index": arm["index_ci"],
        }
        for name, (lo, hi) in cis.items():
            hits[name] += lo <= want[name] <= hi
    for name, count in hits.items():
        # Percentile bootstrap intervals undercover a little when events are
        # few (see bootstrap_mean). The over-refusal rate (25 safe prompts at
        # 10% refusal, ~2.5 events) uses the Wilson interval, which does not.
        floor = 0.9 if name == "over_refusal" else 0.85
        assert count / seeds >= floor, (name, count)
    print("coverage", {k: v / seeds for k, v in hits.items()})
