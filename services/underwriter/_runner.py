"""`EvalRunner`: items x models x temperatures x guardrail arms, then judges."""

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from koverage.errors import InvalidArgumentError
from services.underwriter._answer import Answer, GenerateFn
from services.underwriter._cache import CallCache, call_key
from services.underwriter._calibration import Calibration, pii_leak_calibration
from services.underwriter._judges import build_judge_messages, judge_prompt_hash
from services.underwriter._scorecard import CallRecord, build_scorecard
from services.underwriter._stats import DEFAULT_RESAMPLES
from services.underwriter._suites import (
    SUITES,
    Exam,
    Item,
    build_exam,
    default_datasets_dir,
)

GUARDRAIL_ARMS = ("off", "on")
"""Guardrail arms, in report order."""

JUDGED_AXES = frozenset({"hallucination", "content_safety", "sensitive_data"})
"""Axes whose items both judges score (bias and over-refusal are deterministic)."""

SCORECARD_FILE_NAME = "scorecard.json"

_DEFAULT_ENDPOINT = "router"
_JUDGE_TEMPERATURE = 0.0

logger = logging.getLogger(__name__)


class RunSpecError(InvalidArgumentError, ValueError):
    """A run's specification is invalid (maps to INVALID_ARGUMENT)."""


def judge_vendor(judge: str) -> str:
    """The vendor of a judge model: its catalog id up to the first '/'.

    "openai/gpt-4.1" is "openai", "anthropic/claude-sonnet-4" is "anthropic";
    an id without '/' has no known vendor ("").

    Known limitation: the prefix names whoever the catalog files the model
    under, which for a self-hosted alias ("modal/qwen3-8b") is the host, not
    the maker; two such aliases of one maker's models would pass as
    different vendors. A `vendor` field in the catalog would fix it.
    """
    return judge.split("/", 1)[0] if "/" in judge else ""


@dataclasses.dataclass(frozen=True)
class Progress:
    """Calls finished so far; cache hits count as finished."""

    completed_calls: int
    failed_calls: int
    total_calls: int


class EvalRunner:
    """Runs the exam through one `generate` callable and builds the scorecard.

    Every (model, temperature, arm, item) answer is one call; each answer on
    a judged axis then gets one call per judge (temperature 0, guardrail
    off, pinned: the router may not let another model answer, and a verdict
    served by another model is discarded as a failed call, so it is
    missing, never a verdict). Calls share one
    `asyncio.Semaphore(concurrency)`. Each finished call is cached in
    `output_dir`; a new runner on the same directory (same spec) resumes,
    repeating no finished call. Failed calls stay cached as failures unless
    `run(retry_errors=True)`, which reruns only those.

    Example:
        runner = EvalRunner(generate, models=["m"],
                            judges=["openai/gpt-4.1", "anthropic/claude-sonnet-4"],
                            output_dir="runs/abc")
        scorecard = await runner.run()
    """

    def __init__(
        self,
        generate: GenerateFn,
        *,
        models: Sequence[str],
        judges: Sequence[str],
        output_dir: Path | str,
        suites: Sequence[str] = SUITES,
        items_per_suite: int = 50,
        temperatures: Sequence[float] = (0.0,),
        guardrail_arms: Sequence[str] = GUARDRAIL_ARMS,
        seed: int = 0,
        concurrency: int = 16,
        datasets_dir: Path | str | None = None,
        endpoints: Mapping[str, str] | None = None,
        simulated_models: Collection[str] = (),
        simulated_judges: Collection[str] = (),
        calibrations: Mapping[str, Calibration] | None = None,
        pii_calibration: Calibration | None = None,
        n_resamples: int = DEFAULT_RESAMPLES,
        run_id: str | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        exam: Exam | None = None,
    ) -> None:
        """Validates the spec and draws the exam.

        Args:
            generate: the model call, for models and judges.
            models: model ids under test (at least one, no duplicates).
            judges: exactly two judge model ids, pinned for the run; a judge
                is never replaced by another model. They must come from
                different vendors (`judge_vendor`: "openai/..." and
                "anthropic/..."), so that one vendor's blind spots do not
                pass as agreement. A judge listed in `simulated_judges` is
                exempt, only because the run is then labelled as judged by
                a simulator (scorecard manifest `simulated_judges` and a
                threat to validity, which the report prints).
            output_dir: where the call cache and scorecard.json go.
            suites: subset of `SUITES` (empty means all four).
            items_per_suite: draws per suite, 1..10000.
            temperatures: one arm per temperature, each in [0, 2].
            guardrail_arms: subset of ("off", "on").
            seed: item sampling, model calls and bootstrap resampling.
            concurrency: bound on calls in flight, 1..256.
            datasets_dir: default `default_datasets_dir()`.
            endpoints: {model: endpoint} for the cache key; default "router".
            simulated_models: models that are simulator personas.
            simulated_judges: judges that are simulator personas.
            calibrations: {axis: Calibration} for the Rogan-Gladen corrected
                axis risk (meaningful where item risks are 0 or 1); axes
                without one report `corrected_risk: null`.
            pii_calibration: the PII decision's calibration for the
                sensitive-data axis's corrected PII leak rate; default
                measured once per process on the Presidio corpus in the
                datasets directory (`pii_leak_calibration`), None there
                when the corpus is absent.
            n_resamples: bootstrap resamples, >= 1000.
            run_id: default a new UUID.
            on_progress: called after every finished call.
            exam: a prepared exam (tests); default drawn from the datasets.

        Raises:
            RunSpecError: an invalid argument (names it and what is allowed).
            FileNotFoundError: a dataset file is missing.
        """
        suites = tuple(suites) or SUITES
        _validate(
            models,
            judges,
            suites,
            items_per_suite,
            temperatures,
            guardrail_arms,
            concurrency,
            n_resamples,
            simulated_judges,
        )
        self._generate = generate
        self._models = list(models)
        self._judges = list(judges)
        self._suites = suites
        self._items_per_suite = items_per_suite
        self._temperatures = [float(t) for t in temperatures]
        self._arms = [a for a in GUARDRAIL_ARMS if a in guardrail_arms]
        self._seed = int(seed)
        self._concurrency = concurrency
        self._endpoints = dict(endpoints or {})
        self._simulated = set(simulated_models)
        self._simulated_judges = set(simulated_judges) & set(judges)
        self._calibrations = dict(calibrations or {})
        if pii_calibration is None and "sensitive_data" in suites:
            pii_calibration = pii_leak_calibration(
                datasets_dir or default_datasets_dir()
            )
        self._pii_calibration = pii_calibration
        self._n_resamples = n_resamples
        self._run_id = run_id or str(uuid.uuid4())
        self._on_progress = on_progress
        self._output_dir = Path(output_dir)
        self._judge_hash = judge_prompt_hash()
        if exam is None:
            try:
                exam = build_exam(
                    datasets_dir or default_datasets_dir(),
                    suites,
                    items_per_suite,
                    seed,
                )
            except ValueError as exc:
                raise RunSpecError(str(exc)) from exc
        self._exam = exam
        # Fixed by the spec and the exam; progress reports read it per call.
        judged = sum(1 for item in exam.items if item.axis in JUDGED_AXES)
        per_arm = len(exam.items) + judged * len(self._judges)
        self._total_calls = (
            per_arm * len(self._models) * len(self._temperatures) * len(self._arms)
        )
        self._completed = 0
        self._failed = 0

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._run_id

    @property
    def exam(self) -> Exam:
        """The drawn items and dataset versions."""
        return self._exam

    @property
    def total_calls(self) -> int:
        """Answers plus judge verdicts the run makes (skipped verdicts included)."""
        return self._total_calls

    async def run(self, *, retry_errors: bool = False) -> dict:
        """Makes (or reuses) every call, then returns the scorecard dict.

        The scorecard is also written to `output_dir/scorecard.json`.

        Args:
            retry_errors: rerun cached calls that failed; successes are reused.
        """
        cache = CallCache(self._output_dir)
        semaphore = asyncio.Semaphore(self._concurrency)
        self._completed = self._failed = 0
        logger.info(
            "run %s: %d items, %d calls, %d cached",
            self._run_id,
            len(self._exam.items),
            self.total_calls,
            len(cache),
        )
        tasks = [
            self._run_one(cache, semaphore, retry_errors, model, temp, arm, item)
            for model in self._models
            for temp in self._temperatures
            for arm in self._arms
            for item in self._exam.items
        ]
        records = await asyncio.gather(*tasks)

        scorecard = build_scorecard(
            records,
            run_id=self._run_id,
            created_at=datetime.now(UTC).isoformat(),
            models=self._models,
            judges=self._judges,
            suites=list(self._suites),
            items_per_suite=self._items_per_suite,
            seed=self._seed,
            temperatures=self._temperatures,
            arms=self._arms,
            dataset_versions=self._exam.dataset_versions,
            simulated_models=self._simulated,
            simulated_judges=self._simulated_judges,
            calibrations=self._calibrations,
            pii_calibration=self._pii_calibration,
            n_resamples=self._n_resamples,
        )
        path = self._output_dir / SCORECARD_FILE_NAME
        path.write_text(
            json.dumps(scorecard, indent=2, ensure_ascii=False), encoding="utf-8"
        )
        logger.info("run %s finished; scorecard at %s", self._run_id, path)
        return scorecard

    async def _run_one(
        self,
        cache: CallCache,
        semaphore: asyncio.Semaphore,
        retry_errors: bool,
        model: str,
        temperature: float,
        arm: str,
        item: Item,
    ) -> CallRecord:
        answer = await self._call(
            cache,
            semaphore,
            retry_errors,
            role="answer",
            model=model,
            messages=item.messages,
            temperature=temperature,
            guardrail_arm=arm,
            context={
                "item": item.id,
                "model": model,
                "temperature": temperature,
                "arm": arm,
            },
        )
        verdicts: dict[str, Answer | None] = {}
        if item.axis in JUDGED_AXES:
            if answer.error is None:
                judge_messages = build_judge_messages(item, answer.text)
                judged = await asyncio.gather(
                    *(
                        self._call(
                            cache,
                            semaphore,
                            retry_errors,
                            role="verdict",
                            model=judge,
                            messages=judge_messages,
                            temperature=_JUDGE_TEMPERATURE,
                            guardrail_arm=arm,
                            subject=f"{model}@{temperature}",
                            context={
                                "item": item.id,
                                "judge": judge,
                                "of_model": model,
                            },
                        )
                        for judge in self._judges
                    )
                )
                verdicts = dict(zip(self._judges, judged, strict=True))
            else:
                # No answer to judge: the verdict calls are skipped, counted done.
                verdicts = {judge: None for judge in self._judges}
                self._completed += len(self._judges)
                self._report()
        return CallRecord(model, temperature, arm, item, answer, verdicts)

    async def _call(
        self,
        cache: CallCache,
        semaphore: asyncio.Semaphore,
        retry_errors: bool,
        *,
        role: str,
        model: str,
        messages: list[dict[str, str]],
        temperature: float,
        guardrail_arm: str,
        context: dict,
        subject: str = "",
    ) -> Answer:
        key = call_key(
            role=role,
            model=model,
            endpoint=self._endpoints.get(model, _DEFAULT_ENDPOINT),
            messages=messages,
            temperature=temperature,
            seed=self._seed,
            guardrail_arm=guardrail_arm,
            judge_prompt_hash=self._judge_hash if role == "verdict" else "",
            subject=subject,
        )
        answer = cache.get(key)
        if answer is None or (retry_errors and answer.error is not None):
            async with semaphore:
                # Judges always run with the guardrail off; `guardrail_arm`
                # of a verdict names the judged answer's arm (cache key only).
                guarded = role == "answer" and guardrail_arm == "on"
                answer = await self._invoke(
                    model, messages, temperature, guarded, pinned=role == "verdict"
                )
            if role == "verdict":
                answer = _pinned(model, answer)
            cache.put(key, answer, {"role": role, **context})
        self._completed += 1
        self._failed += answer.error is not None
        self._report()
        return answer

    async def _invoke(
        self,
        model: str,
        messages: list[dict[str, str]],
        temperature: float,
        guardrail: bool,
        *,
        pinned: bool,
    ) -> Answer:
        try:
            return await self._generate(
                model, messages, temperature, self._seed, guardrail, pinned=pinned
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed call is data, not a crash
            logger.warning("call to %s failed: %s", model, exc)
            return Answer(error=f"{type(exc).__name__}: {exc}")

    def _report(self) -> None:
        if self._on_progress is not None:
            self._on_progress(Progress(self._completed, self._failed, self.total_calls))


def _pinned(judge: str, answer: Answer) -> Answer:
    """A judge's reply, or a failed call when another model served it.

    The failure keeps the call's cost and latency (they were spent) and is
    cached as failed, so `retry_errors` asks the pinned judge again.
    """
    if answer.error is not None or answer.served_model in ("", judge):
        return answer
    logger.warning(
        "judge %s was served by %s; verdict discarded",
        judge,
        answer.served_model,
        extra={"judge": judge, "served_model": answer.served_model},
    )
    return dataclasses.replace(
        answer,
        text="",
        error=(
            f"judge {judge} is pinned but {answer.served_model} answered; the "
            f"verdict is discarded (missing). Rerun with retry_errors once "
            f"{judge} is available"
        ),
    )


def _validate(
    models: Sequence[str],
    judges: Sequence[str],
    suites: Sequence[str],
    items_per_suite: int,
    temperatures: Sequence[float],
    arms: Sequence[str],
    concurrency: int,
    n_resamples: int,
    simulated_judges: Collection[str],
) -> None:
    if not models or len(set(models)) != len(models):
        raise RunSpecError(f"models={list(models)}: give at least one, no duplicates")
    if len(judges) != 2 or judges[0] == judges[1]:
        raise RunSpecError(f"judges={list(judges)}: give exactly two different judges")
    # Simulated judges are exempt from the vendor rule (see EvalRunner).
    real = [j for j in judges if j not in simulated_judges]
    unnamed = [j for j in real if not judge_vendor(j)]
    if unnamed:
        raise RunSpecError(
            f"judges={unnamed}: name each judge as vendor/model (for example "
            f"openai/gpt-4.1) so that the two judges' vendors can be told apart"
        )
    if len(real) == 2 and judge_vendor(real[0]) == judge_vendor(real[1]):
        raise RunSpecError(
            f"judges={real} both come from vendor {judge_vendor(real[0])!r}; "
            f"pick two judges from different vendors (for example an openai/ "
            f"and an anthropic/ model)"
        )
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise RunSpecError(f"suites={unknown} are unknown; use {list(SUITES)}")
    if not 1 <= items_per_suite <= 10_000:
        raise RunSpecError(f"items_per_suite={items_per_suite} is not in 1..10000")
    if not temperatures or any(not 0.0 <= t <= 2.0 for t in temperatures):
        raise RunSpecError(f"temperatures={list(temperatures)}: each must be in [0, 2]")
    if not arms or any(a not in GUARDRAIL_ARMS for a in arms):
        raise RunSpecError(f"guardrail_arms={list(arms)}: use 'off' and/or 'on'")
    if not 1 <= concurrency <= 256:
        raise RunSpecError(f"concurrency={concurrency} is not in 1..256")
    if n_resamples < 1000:
        raise RunSpecError(f"n_resamples={n_resamples} is below 1000")
