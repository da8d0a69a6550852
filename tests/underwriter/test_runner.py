"""EvalRunner: scorecard schema, cache, resume after interruption, retry of errors."""

import asyncio
import json

import pytest

from services.underwriter import (
    SCORECARD_FILE_NAME,
    Answer,
    CallCache,
    EvalRunner,
    RunSpecError,
)

_JUDGES = ["sim-judge-exact", "sim-judge-noisy"]


class Counting:
    """Wraps a generate function and counts the calls that reach it."""

    def __init__(self, inner, fail_keys=frozenset()):
        self.inner, self.calls, self.fail_keys, self.seen = inner, 0, set(fail_keys), []

    async def __call__(self, model, messages, temperature, seed, guardrail, **kw):
        self.calls += 1
        key = (model, messages[-1]["content"][:80], guardrail)
        self.seen.append(key)
        if key in self.fail_keys:
            return Answer(error="injected failure")
        return await self.inner(model, messages, temperature, seed, guardrail, **kw)


def _runner(gen, exam, out, **kw):
    kw.setdefault("models", ["sim-leaky"])
    return EvalRunner(
        gen,
        judges=_JUDGES,
        output_dir=out,
        exam=exam,
        items_per_suite=6,
        seed=3,
        n_resamples=1000,
        simulated_models={"sim-leaky"},
        simulated_judges=_JUDGES,
        **kw,
    )


async def test_scorecard_has_the_agreed_schema(small_exam, simulator, tmp_path):
    progress = []
    runner = _runner(simulator, small_exam, tmp_path, on_progress=progress.append)
    card = await runner.run()

    assert set(card) == {
        "schema_version",
        "run_id",
        "created_at",
        "manifest",
        "entries",
        "agreement",
        "judge_parse_failure_rate",
        "tiers",
        "recommendation",
        "threats_to_validity",
    }
    assert set(card["manifest"]) == {
        "models",
        "judges",
        "suites",
        "items_per_suite",
        "seed",
        "temperatures",
        "guardrail_arms",
        "dataset_versions",
        "simulated",
        "simulated_judges",
    }
    entry = card["entries"][0]
    assert set(entry) == {"model", "temperature", "simulated", "arms", "guardrail_ab"}
    arm = entry["arms"]["off"]
    assert set(arm) == {
        "index",
        "index_ci",
        "tier",
        "tier_uncertain",
        "axes",
        "over_refusal",
        "cost_usd",
        "judge_cost_usd",
        "latency_p50_ms",
        "fallback_answers",
        "calls",
        "errors",
    }
    assert set(arm["axes"]) == {
        "hallucination",
        "bias",
        "content_safety",
        "sensitive_data",
    }
    assert set(arm["axes"]["sensitive_data"]) == {
        "risk",
        "ci",
        "n",
        "corrected_risk",
        "corrected_ci",
        "soft",
        "pii_leak",
    }
    assert set(arm["axes"]["sensitive_data"]["pii_leak"]) == {
        "decision",
        "rate",
        "ci",
        "n",
        "corrected_rate",
        "corrected_ci",
        "estimator",
        "calibration",
    }
    # Measured on the Presidio corpus at run time.
    calibration = arm["axes"]["sensitive_data"]["pii_leak"]["calibration"]
    assert calibration["n_positive"] > 0 and calibration["n_negative"] > 0
    assert "pii_presidio" in calibration["source"]
    assert set(entry["guardrail_ab"]) == {
        "risk_reduction",
        "ci",
        "mcnemar_p",
        "over_refusal_cost",
        "over_refusal_cost_ci",
    }
    assert set(card["agreement"]) == {
        "hallucination",
        "content_safety",
        "sensitive_data",
    }
    assert set(card["agreement"]["content_safety"]) == {
        "raw",
        "prevalence",
        "kappa_quadratic",
        "kappa_ci",
        "alpha",
        "alpha_ci",
        "n",
        "soft",
    }
    assert set(card["judge_parse_failure_rate"]) == set(_JUDGES)
    assert json.loads((tmp_path / SCORECARD_FILE_NAME).read_text()) == card
    assert (
        progress[-1].completed_calls == runner.total_calls
        and progress[-1].failed_calls == 0
    )


async def test_second_run_on_same_directory_makes_no_calls(
    small_exam, simulator, tmp_path
):
    first = Counting(simulator)
    card1 = await _runner(first, small_exam, tmp_path).run()
    assert first.calls == _runner(first, small_exam, tmp_path).total_calls

    second = Counting(simulator)
    card2 = await _runner(second, small_exam, tmp_path).run()
    assert second.calls == 0
    assert card2["entries"] == card1["entries"]


async def test_interrupted_run_resumes_without_repeating_calls(
    small_exam, simulator, tmp_path
):
    stop_after, gate = 25, asyncio.Event()

    async def stalls(model, messages, temperature, seed, guardrail, **kw):
        if counting.calls > stop_after:
            gate.set()
            await asyncio.Event().wait()  # never returns: the run is "killed" here
        return await simulator(model, messages, temperature, seed, guardrail)

    counting = Counting(stalls)
    runner = _runner(counting, small_exam, tmp_path, concurrency=1)
    task = asyncio.create_task(runner.run())
    await gate.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done = len(CallCache(tmp_path))
    assert done == stop_after

    resumed = Counting(simulator)
    await _runner(resumed, small_exam, tmp_path).run()
    assert resumed.calls == runner.total_calls - done


async def test_retry_errors_reruns_only_failed_calls(small_exam, simulator, tmp_path):
    failing = {
        ("sim-leaky", i.messages[-1]["content"][:80], False)
        for i in small_exam.items
        if i.axis == "over_refusal"
    }
    first = Counting(simulator, fail_keys=failing)
    card = await _runner(first, small_exam, tmp_path, guardrail_arms=["off"]).run()
    assert card["entries"][0]["arms"]["off"]["errors"] == len(failing)
    assert card["entries"][0]["arms"]["off"]["over_refusal"]["n"] == 0

    again = Counting(simulator)
    await _runner(again, small_exam, tmp_path, guardrail_arms=["off"]).run()
    assert again.calls == 0

    retry = Counting(simulator)
    card = await _runner(retry, small_exam, tmp_path, guardrail_arms=["off"]).run(
        retry_errors=True
    )
    assert retry.calls == len(failing)
    assert {k[1] for k in retry.seen} == {k[1] for k in failing}
    assert card["entries"][0]["arms"]["off"]["errors"] == 0
    assert card["entries"][0]["arms"]["off"]["over_refusal"]["n"] == len(failing)


async def test_failed_answer_skips_judges_and_exceptions_become_errors(
    small_exam, simulator, tmp_path
):
    async def broken(model, messages, temperature, seed, guardrail, **kw):
        if model == "sim-leaky":
            raise ConnectionError("router down")
        return await simulator(model, messages, temperature, seed, guardrail)

    progress = []
    runner = _runner(
        broken,
        small_exam,
        tmp_path,
        guardrail_arms=["off"],
        on_progress=progress.append,
    )
    card = await runner.run()
    arm = card["entries"][0]["arms"]["off"]
    assert arm["errors"] == len(small_exam.items) and arm["index"] is None
    assert arm["tier"] == "Decline" and arm["tier_uncertain"] is True
    assert progress[-1].completed_calls == runner.total_calls
    assert progress[-1].failed_calls == len(small_exam.items)
    line = json.loads(CallCache(tmp_path).path.read_text().splitlines()[0])
    assert line["answer"]["error"].startswith("ConnectionError")


def test_spec_is_validated_at_construction(small_exam, simulator, tmp_path):
    for kw, word in (
        ({"models": []}, "models"),
        ({"models": ["a", "a"]}, "models"),
        ({"judges": ["j"]}, "judges"),
        ({"temperatures": [3.0]}, "temperatures"),
        ({"guardrail_arms": ["maybe"]}, "guardrail_arms"),
        ({"concurrency": 0}, "concurrency"),
        ({"suites": ["vibes"]}, "suites"),
        ({"items_per_suite": 0}, "items_per_suite"),
        ({"n_resamples": 10}, "n_resamples"),
    ):
        args = {
            "models": ["m"],
            "judges": ["openai/j1", "anthropic/j2"],
            "output_dir": tmp_path,
            "exam": small_exam,
            **kw,
        }
        with pytest.raises(RunSpecError, match=word):
            EvalRunner(simulator, **args)


@pytest.mark.parametrize(
    ("judges", "simulated", "word"),
    [
        (["openai/gpt-4.1", "openai/gpt-4.1-mini"], (), "vendor 'openai'"),
        (["sim/judge-exact", "sim/judge-noisy"], (), "vendor 'sim'"),
        (["gpt-4.1", "anthropic/claude-sonnet-4"], (), "vendor/model"),
    ],
)
def test_judges_from_one_vendor_are_refused(
    small_exam, simulator, tmp_path, judges, simulated, word
):
    with pytest.raises(RunSpecError, match=word):
        EvalRunner(
            simulator,
            models=["m"],
            judges=judges,
            simulated_judges=simulated,
            output_dir=tmp_path,
            exam=small_exam,
        )


@pytest.mark.parametrize(
    ("judges", "simulated"),
    [
        (["openai/gpt-4.1", "anthropic/claude-sonnet-4"], ()),
        # Exempt only because they are labelled simulated.
        (
            ["sim/judge-exact", "sim/judge-noisy"],
            ("sim/judge-exact", "sim/judge-noisy"),
        ),
        (["sim/judge-exact", "openai/gpt-4.1"], ("sim/judge-exact",)),
    ],
)
def test_judges_from_different_vendors_or_simulated_are_accepted(
    small_exam, simulator, tmp_path, judges, simulated
):
    EvalRunner(
        simulator,
        models=["m"],
        judges=judges,
        simulated_judges=simulated,
        output_dir=tmp_path,
        exam=small_exam,
    )


async def test_simulated_judges_are_labelled_in_the_scorecard(
    small_exam, simulator, tmp_path
):
    card = await _runner(simulator, small_exam, tmp_path).run()
    assert card["manifest"]["simulated_judges"] == _JUDGES
    assert any(
        "simulator personas" in t and "different-vendors" in t
        for t in card["threats_to_validity"]
    )


async def test_only_judge_calls_are_pinned(small_exam, simulator, tmp_path):
    pinned_by_model = {}

    async def records(model, messages, temperature, seed, guardrail, *, pinned):
        pinned_by_model.setdefault(model, set()).add(pinned)
        return await simulator(model, messages, temperature, seed, guardrail)

    await _runner(records, small_exam, tmp_path).run()
    assert pinned_by_model == {
        "sim-leaky": {False},
        "sim-judge-exact": {True},
        "sim-judge-noisy": {True},
    }


async def test_calls_in_flight_never_exceed_the_concurrency_bound(
    small_exam, simulator, tmp_path
):
    bound, in_flight, peak = 3, 0, 0

    async def tracked(model, messages, temperature, seed, guardrail, **kw):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            # Yield a few times so that other calls get the chance to start.
            for _ in range(3):
                await asyncio.sleep(0)
            return await simulator(model, messages, temperature, seed, guardrail)
        finally:
            in_flight -= 1

    runner = _runner(tracked, small_exam, tmp_path, concurrency=bound)
    await runner.run()
    # The bound is reached (the runner does run calls concurrently) and
    # never passed.
    assert peak == bound
    assert in_flight == 0
