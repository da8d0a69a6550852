"""`koverage eval run`: the Underwriter's exam from the command line.

Model calls go through the router (the running mesh's, or
KOVERAGE_ROUTER_ADDRESS). The router serves the planted-rate personas of
`services.underwriter.simulated` as sim/leaky and sim/careful, with judges
sim/judge-exact and sim/judge-noisy (the default judges when every model is
simulated). With `--simulate`, the same personas answer in process instead
(named sim-leaky, sim-careful). Either way the run is labelled simulated in
the scorecard and the PDF.

Exit codes: 0 when the run finished (failed calls are counted in the
scorecard, not in the exit code), 2 for a run specification the exam
refuses (the message says what to change), 130 on Ctrl-C.
"""

import asyncio
import pathlib
import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from koverage.cli._state import read_state
from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import connect
from koverage.settings import Settings

_SIMULATED_JUDGES = ("sim/judge-exact", "sim/judge-noisy")
_EXIT_BAD_SPEC = 2


class _SpecError(Exception):
    """A run the command refuses before any call; exit code 2."""


def register(commands) -> None:
    parser = commands.add_parser("eval", help="Underwriter evaluations")
    actions = parser.add_subparsers(dest="eval_command", required=True)
    run_parser = actions.add_parser(
        "run", help="run the safety exam and write scorecard + PDF"
    )
    run_parser.add_argument("--models", required=True, help="comma-separated model ids")
    run_parser.add_argument(
        "--judges", default="", help="two comma-separated judge model ids"
    )
    run_parser.add_argument("--n", type=int, default=50, help="items per suite")
    run_parser.add_argument("--seed", type=int, default=0)
    run_parser.add_argument(
        "--out", required=True, type=pathlib.Path, help="output directory"
    )
    run_parser.add_argument(
        "--suites", default="", help="comma-separated suites (default all)"
    )
    run_parser.add_argument(
        "--temperatures", default="0", help="comma-separated, e.g. 0,0.3,0.7"
    )
    run_parser.add_argument(
        "--arms", default="off,on", help="guardrail arms: off, on or both"
    )
    run_parser.add_argument("--concurrency", type=int, default=16)
    run_parser.add_argument(
        "--retry-errors", action="store_true", help="rerun only failed calls"
    )
    run_parser.add_argument(
        "--simulate",
        action="store_true",
        help="answer with the in-process planted-rate personas (labelled simulated)",
    )
    run_parser.set_defaults(run=run)


def run(args) -> int:
    from services.underwriter import RunSpecError

    try:
        return asyncio.run(_run(args))
    except (_SpecError, RunSpecError) as exc:
        print(f"koverage eval: {exc}", file=sys.stderr)
        return _EXIT_BAD_SPEC


async def _run(args) -> int:
    channel = None
    try:
        if args.simulate:
            prepared = _simulator(_split(args.models), _split(args.judges), args)
        else:
            channel = _router_channel()
            prepared = await _router_generate(
                channel, _split(args.models), _split(args.judges)
            )
        return await _exam(args, *prepared)
    finally:
        if channel is not None:
            await channel.close()


async def _exam(args, generate, models, judges, simulated, simulated_judges, exam):
    from services.underwriter import EvalRunner
    from services.underwriter.report import render_report

    if not judges:
        raise _SpecError(
            "name two judges from different vendors with --judges, for example "
            "--judges openai/gpt-4.1,anthropic/claude-sonnet-4 (simulated judges "
            "are the default only when every model is a simulator persona)"
        )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("exam", total=None)
        runner = EvalRunner(
            generate,
            models=models,
            judges=judges,
            output_dir=args.out,
            suites=_split(args.suites),
            items_per_suite=args.n,
            temperatures=[float(t) for t in _split(args.temperatures)],
            guardrail_arms=_split(args.arms),
            seed=args.seed,
            concurrency=args.concurrency,
            simulated_models=simulated,
            simulated_judges=simulated_judges,
            exam=exam,
            on_progress=lambda p: bar.update(
                task,
                completed=p.completed_calls,
                total=p.total_calls,
                description=f"exam ({p.failed_calls} failed)",
            ),
        )
        scorecard = await runner.run(retry_errors=args.retry_errors)

    pdf_path = args.out / "report.pdf"
    pdf_path.write_bytes(await asyncio.to_thread(render_report, scorecard))
    print(f"scorecard: {args.out / 'scorecard.json'}")
    print(f"report:    {pdf_path}")
    for entry in scorecard["entries"]:
        for arm, result in entry["arms"].items():
            mark = " (simulated)" if entry.get("simulated") else ""
            print(
                f"  {entry['model']}{mark} t={entry['temperature']} guardrail={arm}: "
                f"index {_index_text(result)} {result['tier']}"
            )
    return 0


def _router_channel():
    settings = Settings.from_env()
    state = read_state(settings) or {}
    address = state.get("services", {}).get("router", settings.router_address)
    return connect(address, api_key=settings.client_api_key or state.get("api_key", ""))


async def _router_generate(channel, models, judges):
    from services.underwriter._router_client import RouterGenerate

    stub = router_pb2_grpc.RouterServiceStub(channel)
    catalog = {
        m.id: m
        for m in (
            await stub.ListModels(router_pb2.ListModelsRequest(), timeout=10)
        ).models
    }
    simulated = [m for m in models if m in catalog and catalog[m].simulated]
    if not judges and simulated == models:
        judges = list(_SIMULATED_JUDGES)
    unknown = [m for m in [*models, *judges] if m not in catalog]
    if unknown:
        raise _SpecError(
            f"not in the router's catalog: {', '.join(unknown)} "
            f"(ListModels shows the catalog)"
        )
    simulated_judges = [j for j in judges if catalog[j].simulated]
    return RouterGenerate(channel), models, judges, simulated, simulated_judges, None


def _simulator(models, judges, args):
    from services.underwriter import SUITES, build_exam, default_datasets_dir
    from services.underwriter.simulated import JUDGE_PERSONAS, PERSONAS, Simulator

    unknown = [m for m in [*models, *judges] if m not in {**PERSONAS, **JUDGE_PERSONAS}]
    if unknown:
        raise _SpecError(
            f"--simulate: unknown personas {unknown}; models: {sorted(PERSONAS)}, "
            f"judges: {sorted(JUDGE_PERSONAS)}"
        )
    judges = judges or sorted(JUDGE_PERSONAS)
    suites = tuple(_split(args.suites)) or SUITES
    try:
        exam = build_exam(default_datasets_dir(), suites, args.n, args.seed)
    except ValueError as exc:
        raise _SpecError(str(exc)) from exc
    return Simulator(exam.items), models, judges, models, judges, exam


def _index_text(result: dict) -> str:
    if result.get("index") is None:
        return "n/a (no scorable answers)"
    lo, hi = result["index_ci"]
    return f"{result['index']:.1f} [{lo:.1f}, {hi:.1f}]"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
