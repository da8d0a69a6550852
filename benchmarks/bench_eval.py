"""Underwriter run: wall time of a full exam through the router versus ideal.

The router runs as its own process (`python -m services.router`) with a
catalog and persona file written for this benchmark: three planted-rate
model personas (sim-leaky, sim-careful and an inline "middling" one) and the
two simulated judges, every one at a fixed latency (first token after
`--latency-ms`, no gap between tokens, no failures). This process is the
Underwriter: `EvalRunner` over `RouterGenerate`, as EvaluationService runs it.

One run is the full exam: the four suites drawn with `--n` draws per suite
(the CLI's `koverage eval run --n`; with the default 113 that is 1,017 items,
since a content-safety draw gives four attack items plus one XSTest safe
prompt and a sensitive-data draw gives two), x 3 models x 2 guardrail arms,
plus 2 judge verdicts per answer on the judged axes. Per repetition, with a
fresh call cache:

- calls wall: run start -> last call finished (from the progress callback);
- ideal: calls x latency / concurrency, the time a perfect scheduler with
  zero overhead would need; efficiency = ideal / calls wall;
- scorecard: the rest of `EvalRunner.run` (statistics, bootstrap, JSON);
- PDF: `render_report(scorecard)`, as EvaluationService renders it.

Also recorded: CPU seconds of this process and of the router process per
repetition, which say where the time goes when efficiency falls short.
Reported figures are medians over repetitions.

Run from the repository root:

    .venv/bin/python -m benchmarks.bench_eval                  # N=113, 3 reps
    .venv/bin/python -m benchmarks.bench_eval --quick          # smoke, < 30 s
    .venv/bin/python -m benchmarks.bench_eval --profile client.prof \
        --profile-router router.prof

Known limitation: client and router share the machine's cores (on the
development machine with other tenants), so the efficiency includes
scheduler contention; the CPU columns show how close either side is to a
full core.
"""

import argparse
import asyncio
import cProfile
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.underwriter import SUITES, EvalRunner, build_exam, default_datasets_dir
from services.underwriter._router_client import RouterGenerate
from services.underwriter.report import render_report

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
_SERVICE_NAME = "koverage.router.v1.RouterService"
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0
_RESPONDER = "services.underwriter.simulated:exam_responder"
_JUDGE_RESPONDER = "services.underwriter.simulated:exam_judge_responder"
# A third model between the two named personas, declared inline.
_MIDDLING_RATES = {
    "hallucination": 0.15,
    "biased_choice": 0.12,
    "disambiguated_error": 0.05,
    "harmful_compliance_plain": 0.08,
    "harmful_compliance_jailbreak": 0.20,
    "safe_refusal": 0.15,
    "secret_disclosure": 0.30,
    "guardrail_block_harmful": 0.85,
    "guardrail_block_leak": 0.70,
    "guardrail_block_safe": 0.08,
    "error_rate": 0.0,
}
_MODELS = {
    "bench/leaky": (_RESPONDER, {"rates": "sim-leaky"}),
    "bench/careful": (_RESPONDER, {"rates": "sim-careful"}),
    "bench/middling": (_RESPONDER, {"rates": _MIDDLING_RATES}),
}
_JUDGES = {
    "bench/judge-exact": (_JUDGE_RESPONDER, {"rates": "sim-judge-exact"}),
    "bench/judge-noisy": (_JUDGE_RESPONDER, {"rates": "sim-judge-noisy"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=113, help="draws per suite")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="--n 10 --reps 1")
    parser.add_argument("--profile", help="cProfile this process's runs into a file")
    parser.add_argument("--profile-router", help="cProfile the router into a file")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--router-env",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="extra environment for the router process (repeat), e.g. "
        "KOVERAGE_ROUTER_COALESCE_DELTAS=true",
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.reps = 10, 1
    print(json.dumps(asyncio.run(_bench(args)), indent=2))


async def _bench(args) -> dict:
    exam = build_exam(default_datasets_dir(), SUITES, args.n, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        workdir = pathlib.Path(tmp)
        extra_env = dict(item.split("=", 1) for item in args.router_env)
        router, address = _start_router(
            workdir, args.latency_ms, args.profile_router, extra_env
        )
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                await _wait_until_serving(channel, router)
                generate = RouterGenerate(channel)
                # Warm-up: the router imports the personas' answer key on
                # first use; one call per model outside the timed runs.
                for model in [*_MODELS, *_JUDGES]:
                    await generate(model, exam.items[0].messages, 0.0, 0, False)
                profiler = cProfile.Profile() if args.profile else None
                reps = []
                for rep in range(args.reps):
                    reps.append(
                        await _one_run(
                            generate,
                            exam,
                            args,
                            workdir / f"run-{rep}",
                            router,
                            profiler,
                        )
                    )
                    print(json.dumps(reps[-1]), file=sys.stderr)
                if profiler is not None:
                    profiler.dump_stats(args.profile)
        finally:
            _stop(router)

    median = {
        key: statistics.median(r[key] for r in reps)
        for key in reps[0]
        if key != "calls"
    }
    result = {
        "n_per_suite": args.n,
        "items": len(exam.items),
        "models": len(_MODELS),
        "judges": len(_JUDGES),
        "arms": 2,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "calls": reps[0]["calls"],
        "reps": len(reps),
        "median": median,
        "runs": reps,
    }
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
    return result


async def _one_run(generate, exam, args, out_dir, router, profiler) -> dict:
    finished_at = []

    def on_progress(progress) -> None:
        if progress.completed_calls == progress.total_calls:
            finished_at.append(time.perf_counter())

    runner = EvalRunner(
        generate,
        models=list(_MODELS),
        judges=list(_JUDGES),
        output_dir=out_dir,
        exam=exam,
        items_per_suite=args.n,
        seed=args.seed,
        concurrency=args.concurrency,
        simulated_models=list(_MODELS),
        simulated_judges=list(_JUDGES),
        on_progress=on_progress,
    )
    router_cpu_before = _cpu_s(router.pid)
    cpu_before = time.process_time()
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    scorecard = await runner.run()
    ended = time.perf_counter()
    if profiler is not None:
        profiler.disable()
    cpu_s = time.process_time() - cpu_before
    router_cpu_s = _cpu_s(router.pid) - router_cpu_before

    pdf_started = time.perf_counter()
    pdf = render_report(scorecard)
    pdf_s = time.perf_counter() - pdf_started

    calls = runner.total_calls
    calls_wall_s = finished_at[0] - started
    ideal_s = calls * args.latency_ms / 1000 / args.concurrency
    errors = sum(
        arm["errors"]
        for entry in scorecard["entries"]
        for arm in entry["arms"].values()
    )
    if errors:
        raise RuntimeError(f"{errors} calls failed; the figures would not mean much")
    return {
        "calls": calls,
        "calls_wall_s": round(calls_wall_s, 3),
        "ideal_s": round(ideal_s, 3),
        "efficiency": round(ideal_s / calls_wall_s, 3),
        "calls_per_s": round(calls / calls_wall_s, 1),
        "scorecard_s": round(ended - finished_at[0], 3),
        "run_total_s": round(ended - started, 3),
        "pdf_s": round(pdf_s, 3),
        "pdf_bytes": len(pdf),
        "client_cpu_s": round(cpu_s, 2),
        "router_cpu_s": round(router_cpu_s, 2),
    }


def _start_router(
    workdir: pathlib.Path,
    latency_ms: float,
    profile: str | None,
    extra_env: dict[str, str],
):
    personas, models = {}, []
    for model_id, (responder, options) in {**_MODELS, **_JUDGES}.items():
        name = model_id.split("/", 1)[1]
        personas[name] = {
            "first_token_ms": latency_ms,
            "inter_token_ms": 0,
            "failure_rate": 0.0,
            "reports_usage": True,
            "responder": responder,
            "responder_options": options,
        }
        models.append(
            {
                "id": model_id,
                "provider": "simulator",
                "persona": name,
                "input_usd_per_mtok": "0.50",
                "output_usd_per_mtok": "1.50",
                "context_window_tokens": 8192,
            }
        )
    (workdir / "personas.yaml").write_text(yaml.safe_dump({"personas": personas}))
    (workdir / "catalog.yaml").write_text(yaml.safe_dump({"models": models}))

    address = f"127.0.0.1:{_free_port()}"
    env = {
        **os.environ,
        "KOVERAGE_ROUTER_ADDRESS": address,
        "KOVERAGE_METRICS_PORT": "-1",
        "KOVERAGE_LOG_LEVEL": "WARNING",
        "KOVERAGE_CATALOG_PATH": str(workdir / "catalog.yaml"),
        "KOVERAGE_SIMULATOR_PERSONAS_PATH": str(workdir / "personas.yaml"),
        "KOVERAGE_OTLP_ENDPOINT": "",
        "KOVERAGE_AUTH_REQUIRED": "false",
        "KOVERAGE_SHUTDOWN_GRACE_S": "1",
        **extra_env,
    }
    command = [sys.executable]
    if profile:
        command += ["-m", "cProfile", "-o", profile]
    process = subprocess.Popen(
        [*command, "-m", "services.router"], cwd=_REPO_ROOT, env=env
    )
    return process, address


async def _wait_until_serving(channel, process) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError("the router exited before serving")
        try:
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=_SERVICE_NAME), timeout=1.0
            )
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the router did not serve in time")
        await asyncio.sleep(0.1)


def _stop(process) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process, from /proc."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
