"""`koverage eval run` as a user runs it: main() in process, the simulator
personas (or a real router on loopback), files written into --out."""

import asyncio
import json
import subprocess

import pytest

from koverage.cli._main import main
from koverage.settings import Settings
from services.router import build_server as build_router_server
from services.underwriter import CACHE_FILE_NAME, Answer
from services.underwriter.simulated import Simulator

_ARGS = ["--simulate", "--models", "sim-leaky", "--n", "2", "--seed", "4"]


def _eval(out, *extra) -> int:
    return main(["eval", "run", *_ARGS, "--out", str(out), *extra])


def _total_calls(card) -> int:
    return sum(arm["calls"] for e in card["entries"] for arm in e["arms"].values())


@pytest.fixture
def counted(monkeypatch):
    """Counts the simulator calls that the CLI's runner makes; `fail` (a
    predicate on (model, messages)) makes a call fail, `stop_after` raises
    KeyboardInterrupt (Ctrl-C) on the call after that many."""
    state = {"calls": 0, "fail": None, "stop_after": None, "seen": []}
    real = Simulator.__call__

    async def call(self, model, messages, temperature, seed, guardrail, **kw):
        if state["stop_after"] is not None and state["calls"] >= state["stop_after"]:
            raise KeyboardInterrupt
        state["calls"] += 1
        state["seen"].append((model, messages[-1]["content"]))
        if state["fail"] is not None and state["fail"](model, messages):
            return Answer(error="injected failure")
        return await real(self, model, messages, temperature, seed, guardrail, **kw)

    monkeypatch.setattr(Simulator, "__call__", call)
    return state


def test_eval_run_writes_a_simulated_scorecard_and_a_one_page_pdf(tmp_path, capsys):
    assert _eval(tmp_path) == 0

    card = json.loads((tmp_path / "scorecard.json").read_text())
    assert card["manifest"]["simulated"] is True
    assert card["manifest"]["simulated_judges"] == card["manifest"]["judges"]
    assert all(entry["simulated"] for entry in card["entries"])
    assert set(card["entries"][0]["arms"]) == {"off", "on"}

    pdf = tmp_path / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    info = subprocess.run(
        ["pdfinfo", str(pdf)], capture_output=True, text=True, check=True
    ).stdout
    assert "Pages:           1" in info
    text = subprocess.run(
        ["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "simulated" in text.lower()
    assert "(simulated)" in capsys.readouterr().out


def test_an_interrupted_run_resumes_without_repeating_calls(tmp_path, counted):
    counted["stop_after"] = 20
    assert _eval(tmp_path, "--concurrency", "1") == 130
    cached = (tmp_path / CACHE_FILE_NAME).read_text().splitlines()
    assert len(cached) == 20

    counted.update(calls=0, stop_after=None, seen=[])
    assert _eval(tmp_path) == 0
    card = json.loads((tmp_path / "scorecard.json").read_text())
    assert counted["calls"] == _total_calls(card) - 20
    # The cache is append-only: a repeated call would add its key twice.
    lines = (tmp_path / CACHE_FILE_NAME).read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys)) == _total_calls(card)


def test_retry_errors_reruns_only_the_failed_calls(tmp_path, counted):
    safe = {
        i.messages[-1]["content"] for i in _exam_items() if i.axis == "over_refusal"
    }
    counted["fail"] = lambda model, m: model == "sim-leaky" and m[-1]["content"] in safe
    assert _eval(tmp_path) == 0
    card = json.loads((tmp_path / "scorecard.json").read_text())
    failed = sum(arm["errors"] for arm in card["entries"][0]["arms"].values())
    assert failed == 2 * len(safe) > 0  # both guardrail arms

    counted.update(calls=0, fail=None, seen=[])
    assert _eval(tmp_path) == 0
    assert counted["calls"] == 0  # without the flag, failures stay cached

    assert _eval(tmp_path, "--retry-errors") == 0
    assert counted["calls"] == failed
    assert {content for _, content in counted["seen"]} == safe
    card = json.loads((tmp_path / "scorecard.json").read_text())
    assert all(arm["errors"] == 0 for arm in card["entries"][0]["arms"].values())


def test_unknown_persona_is_a_usage_error(tmp_path, capsys):
    code = main(
        ["eval", "run", "--simulate", "--models", "gpt-5", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "unknown personas ['gpt-5']" in capsys.readouterr().err


async def test_real_models_without_judges_is_a_clear_error_not_a_traceback(
    tmp_path, monkeypatch, capsys
):
    router = build_router_server(
        Settings.from_env({}, router_address="127.0.0.1:0", metrics_port=-1)
    )
    await router.start()
    monkeypatch.setenv("KOVERAGE_ROUTER_ADDRESS", router.address)
    monkeypatch.setenv("KOVERAGE_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("KOVERAGE_CLIENT_API_KEY", raising=False)
    try:
        # main() runs its own event loop, so it runs in a thread here.
        no_judges = await asyncio.to_thread(
            main, ["eval", "run", "--models", "openai/gpt-4.1", "--out", str(tmp_path)]
        )
        no_judges_err = capsys.readouterr().err
        one_vendor = await asyncio.to_thread(
            main,
            [
                "eval",
                "run",
                "--models",
                "openai/gpt-4.1",
                "--judges",
                "openai/gpt-4.1-mini,openai/gpt-4.1",
                "--out",
                str(tmp_path),
            ],
        )
        one_vendor_err = capsys.readouterr().err
    finally:
        await router.stop(0.5)

    assert no_judges == 2
    assert "--judges" in no_judges_err and "Traceback" not in no_judges_err
    assert one_vendor == 2
    assert "different vendors" in one_vendor_err
    assert not (tmp_path / "scorecard.json").exists()


def _exam_items():
    from services.underwriter import SUITES, build_exam, default_datasets_dir

    return build_exam(default_datasets_dir(), SUITES, 2, 4).items
