"""Router overhead: RouterService.Generate versus the simulator in process.

The router runs as its own process (`python -m services.router`) with a
catalog holding one simulator model on the fixed-timing `bench` persona
(50 ms to the first token, then 64 tokens 10 ms apart). This process is the
client. For each repetition and each concurrency level it measures, back to
back and in an order that reverses every repetition:

- `inproc`: `SimulatorProvider.stream` called directly in this process, the
  persona read from the same persona file: a caller with no router at all.
- `bare`: the same simulator behind a bare grpc.aio server in another process
  (same proto, no interceptor, no engine): the cost of the transport alone
  (grpc.aio, protobuf and HTTP/2 on both sides). Off in `--quick` and with
  `--no-bare`.
- `router`: `RouterService.Generate` on the real router process: validation,
  catalog, retries, the GenAI span, the mesh interceptor (auth, server span,
  metrics) and the transport.

Per stream it records the time to first token (request sent -> first delta),
the stream duration (request sent -> last delta) and end-to-end tokens per
second (tokens / duration). Per phase it takes p50 and p99; for tokens/s the
slow tail, the 1st percentile, is reported as its "p99". The overhead of a
repetition is a difference of the two phases' percentiles (a ratio for
tokens/s); reported figures are medians over repetitions, with their range.

With N concurrent streams, N closed-loop workers each run streams back to
back; their starts are spread evenly over one nominal stream length so that
about N streams stay in flight rather than arriving in one burst.

Run from the repository root:

    .venv/bin/python -m benchmarks.bench_router            # full, ~5 min
    .venv/bin/python -m benchmarks.bench_router --quick    # smoke, < 20 s

Known limitation: client and servers share the machine's cores (and, on the
development machine, share them with whatever else runs), so the gRPC
figures include the client's own protobuf and HTTP/2 work and scheduler
contention between processes. `--pin` puts the client on CPU 0 and the
servers on CPU 1; nothing removes other tenants' noise, which is why every
repetition measures all modes side by side and only differences are reported
as overhead.
"""

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable

import grpc
import numpy as np
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import EVENT_LOOPS
from koverage.serving import run as run_on_loop
from services.router.providers import (
    ProviderCall,
    SimulatorProvider,
    TextChunk,
    load_personas,
)

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
_PERSONA = "bench"
_MODEL_ID = "bench/fixed"
_SERVICE_NAME = "koverage.router.v1.RouterService"
_CALL_TIMEOUT_S = 60.0
_SERVER_START_TIMEOUT_S = 30.0
_SERVER_STOP_TIMEOUT_S = 15.0

# (subtrahend, minuend) pairs reported as overhead, headline first.
_COMPARISONS = (("inproc", "router"), ("inproc", "bare"), ("bare", "router"))
_COMPARISON_TITLES = {
    ("inproc", "router"): "router - in process",
    ("inproc", "bare"): "bare gRPC - in process",
    ("bare", "router"): "router - bare gRPC",
}
_MODE_TITLES = {"inproc": "in process", "bare": "bare gRPC", "router": "router"}


def _comparisons(plan: "Plan") -> list[tuple[str, str]]:
    """(subtrahend, minuend) pairs reported for this plan, headline first."""
    if not plan.variants:
        return [c for c in _COMPARISONS if set(c) <= set(plan.modes)]
    names = [name for name, _ in plan.variants]
    pairs = [("inproc", name) for name in names]
    if "bare" in plan.modes:
        pairs.append(("inproc", "bare"))
    return pairs + [(names[0], name) for name in names[1:]]


def _comparison_title(pair: tuple[str, str]) -> str:
    return _COMPARISON_TITLES.get(
        pair, f"{_mode_title(pair[1])} - {_mode_title(pair[0])}"
    )


def _mode_title(mode: str) -> str:
    return _MODE_TITLES.get(mode, mode)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much to measure."""

    modes: tuple[str, ...]
    repetitions: int
    concurrencies: tuple[int, ...]
    streams_single: int
    """Streams run one after another when concurrency is 1."""
    streams_per_worker: int
    """Back-to-back streams per worker when concurrency is above 1."""
    warmup_concurrent: bool
    """Whether warm-up also runs a round of 8 concurrent streams per mode."""
    variants: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    """Router variants (name, extra environment) measured side by side in
    place of the one `router` mode; the first is the baseline."""


@dataclasses.dataclass(frozen=True)
class StreamSample:
    """One measured stream."""

    ttft_ms: float
    duration_ms: float
    tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / (self.duration_ms / 1000)


@dataclasses.dataclass
class PhaseResult:
    """Samples of one mode at one concurrency in one repetition."""

    mode: str
    concurrency: int
    samples: list[StreamSample]
    client_cpu_s: float
    server_cpu_s: float | None

    def stats(self) -> dict[str, float | None]:
        ttft = [s.ttft_ms for s in self.samples]
        duration = [s.duration_ms for s in self.samples]
        rate = [s.tokens_per_s for s in self.samples]
        streams = len(self.samples)
        return {
            "ttft_p50_ms": _percentile(ttft, 50),
            "ttft_p99_ms": _percentile(ttft, 99),
            "duration_p50_ms": _percentile(duration, 50),
            "duration_p99_ms": _percentile(duration, 99),
            "tokens_per_s_p50": _percentile(rate, 50),
            "tokens_per_s_p99": _percentile(rate, 1),  # the slowest 1%
            "client_cpu_ms_per_stream": 1000 * self.client_cpu_s / streams,
            "server_cpu_ms_per_stream": (
                None
                if self.server_cpu_s is None
                else 1000 * self.server_cpu_s / streams
            ),
        }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.serve_bare:
        asyncio.run(_serve_bare(args.serve_bare))
        return 0
    plan = _plan_from(args)
    persona = load_personas()[_PERSONA]
    nominal_s = (
        persona.first_token_ms + persona.inter_token_ms * (persona.output_tokens - 1)
    ) / 1000

    with tempfile.TemporaryDirectory(prefix="koverage-bench-") as workdir:
        servers = _start_servers(plan, args, pathlib.Path(workdir))
        try:
            if args.pin:
                os.sched_setaffinity(0, {0})
            # Keep this process's startup heap (numpy, grpc, the router's
            # imports) out of its garbage collections, as the router does,
            # so that client pauses do not pass for router overhead.
            gc.freeze()
            load_before = os.getloadavg()
            results = run_on_loop(
                lambda: _run(plan, servers, nominal_s), event_loop=args.client_loop
            )
        finally:
            for server in servers.values():
                server.stop()

    report = {
        "setup": {
            "persona": dataclasses.asdict(persona),
            "nominal_stream_ms": nominal_s * 1000,
            "plan": dataclasses.asdict(plan),
            "pinned": args.pin,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "grpcio": grpc.__version__,
            "client_loop": args.client_loop,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "concurrency": _summarise(results, plan),
    }
    print(_render_markdown(report, plan))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


# --- running phases ----------------------------------------------------------


async def _run(
    plan: Plan, servers: dict[str, "_ServerProcess"], nominal_s: float
) -> list[tuple[int, PhaseResult]]:
    provider = SimulatorProvider({_PERSONA: load_personas()[_PERSONA]})
    channels = {
        mode: grpc.aio.insecure_channel(s.address) for mode, s in servers.items()
    }
    try:
        openers: dict[str, Callable[[int], AsyncIterator[int]]] = {
            "inproc": lambda n: _inproc_tokens(provider, n)
        }
        for mode, channel in channels.items():
            await _wait_until_serving(channel, servers[mode])
            stub = router_pb2_grpc.RouterServiceStub(channel)
            openers[mode] = lambda n, stub=stub: _grpc_tokens(stub, n)

        # Warm up every path (imports, connections, caches) before measuring.
        for mode in plan.modes:
            await _phase(openers[mode], mode, 1, 1, 0.0, None)
            if plan.warmup_concurrent:
                await _phase(openers[mode], mode, 8, 1, nominal_s, None)

        results: list[tuple[int, PhaseResult]] = []
        for rep in range(plan.repetitions):
            # Reverse the order every repetition so slow drift favours no mode.
            modes = plan.modes if rep % 2 == 0 else plan.modes[::-1]
            for concurrency in plan.concurrencies:
                streams = (
                    plan.streams_single if concurrency == 1 else plan.streams_per_worker
                )
                for mode in modes:
                    server = servers.get(mode)
                    result = await _phase(
                        openers[mode],
                        mode,
                        concurrency,
                        streams,
                        nominal_s,
                        None if server is None else server.pid,
                    )
                    results.append((rep, result))
                    stats = result.stats()
                    print(
                        f"rep {rep} c={concurrency:<3} {mode:<6} "
                        f"ttft p50 {stats['ttft_p50_ms']:7.2f} "
                        f"p99 {stats['ttft_p99_ms']:7.2f} ms; stream "
                        f"p50 {stats['duration_p50_ms']:7.2f} ms",
                        file=sys.stderr,
                    )
        return results
    finally:
        for channel in channels.values():
            await channel.close()


async def _phase(
    open_tokens,
    mode: str,
    concurrency: int,
    streams_per_worker: int,
    nominal_s: float,
    server_pid: int | None,
) -> PhaseResult:
    """Runs `concurrency` closed-loop workers; returns every stream's sample."""
    samples: list[StreamSample] = []
    numbers = iter(range(10**9))

    async def worker(offset_s: float) -> None:
        if offset_s:
            await asyncio.sleep(offset_s)
        for _ in range(streams_per_worker):
            samples.append(await _measure(open_tokens(next(numbers))))

    server_cpu_before = _process_cpu_s(server_pid)
    cpu_before = time.process_time()
    await asyncio.gather(
        *(worker(i * nominal_s / concurrency) for i in range(concurrency))
    )
    client_cpu_s = time.process_time() - cpu_before
    server_cpu_after = _process_cpu_s(server_pid)
    server_cpu_s = (
        None
        if server_cpu_before is None or server_cpu_after is None
        else server_cpu_after - server_cpu_before
    )
    return PhaseResult(mode, concurrency, samples, client_cpu_s, server_cpu_s)


async def _measure(tokens: AsyncIterator[int]) -> StreamSample:
    """Times one stream from the request to its first and last token.

    `tokens` yields, per message received, how many tokens it holds: one
    message may carry several when the router coalesces deltas.
    """
    started = time.perf_counter()
    first = last = None
    count = 0
    async for held in tokens:
        last = time.perf_counter()
        if first is None:
            first = last
        count += held
    if first is None:
        raise RuntimeError("stream ended without a token")
    return StreamSample((first - started) * 1000, (last - started) * 1000, count)


async def _inproc_tokens(provider: SimulatorProvider, n: int) -> AsyncIterator[int]:
    call = ProviderCall(provider_model="", messages=_messages(n), persona=_PERSONA)
    async for event in provider.stream(call):
        if isinstance(event, TextChunk):
            yield 1


async def _grpc_tokens(stub, n: int) -> AsyncIterator[int]:
    request = router_pb2.GenerateRequest(
        model=_MODEL_ID,
        messages=[
            router_pb2.ChatMessage(role=router_pb2.ROLE_USER, content=m["content"])
            for m in _messages(n)
        ],
    )
    summary = None
    async for response in stub.Generate(request, timeout=_CALL_TIMEOUT_S):
        if response.HasField("delta"):
            yield count_tokens(response.delta.text)
        else:
            summary = response.summary
    if summary is None or summary.status != router_pb2.GENERATION_STATUS_COMPLETE:
        raise RuntimeError(f"stream {n} ended without a complete summary")


def count_tokens(text: str) -> int:
    """Simulator tokens in `text`: each is one word with its trailing space."""
    return len(text.split())


def _messages(n: int) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": f"benchmark prompt {n}: keep streams fast"},)


# --- server processes --------------------------------------------------------


class _ServerProcess:
    """A RouterService server in a child process on a free loopback port."""

    def __init__(self, command: list[str], env: dict[str, str], address: str) -> None:
        self.address = address
        self._command = command
        self._env = env
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id; None for a server this script did not start."""
        return None if self._process is None else self._process.pid

    def start(self, *, pin_cpu: int | None) -> None:
        self._process = subprocess.Popen(self._command, cwd=_REPO_ROOT, env=self._env)
        if pin_cpu is not None:
            os.sched_setaffinity(self._process.pid, {pin_cpu})

    def exited(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        """SIGTERM (the router drains and exits), then SIGKILL if it hangs."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(_SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _start_servers(
    plan: Plan, args: argparse.Namespace, workdir: pathlib.Path
) -> dict[str, _ServerProcess]:
    pin_cpu = 1 if args.pin else None
    servers: dict[str, _ServerProcess] = {}
    if args.address:
        servers["router"] = _ServerProcess([], {}, args.address)
    else:
        catalog_path = workdir / "catalog.yaml"
        catalog_path.write_text(
            yaml.safe_dump(
                {
                    "models": [
                        {
                            "id": _MODEL_ID,
                            "provider": "simulator",
                            "persona": _PERSONA,
                            "input_usd_per_mtok": "0.50",
                            "output_usd_per_mtok": "1.50",
                            "context_window_tokens": 8192,
                        }
                    ]
                }
            )
        )
        env = {
            **os.environ,
            "KOVERAGE_METRICS_PORT": "-1",
            "KOVERAGE_LOG_LEVEL": "WARNING",
            "KOVERAGE_CATALOG_PATH": str(catalog_path),
            "KOVERAGE_OTLP_ENDPOINT": "",
            "KOVERAGE_AUTH_REQUIRED": "false",
            "KOVERAGE_SHUTDOWN_GRACE_S": "1",
        }
        command = [sys.executable]
        if args.profile_router:
            command += ["-m", "cProfile", "-o", args.profile_router]
        for name, extra_env in plan.variants or (("router", ()),):
            address = f"127.0.0.1:{_free_port()}"
            servers[name] = _ServerProcess(
                command + ["-m", "services.router"],
                {**env, **dict(extra_env), "KOVERAGE_ROUTER_ADDRESS": address},
                address,
            )
            servers[name].start(pin_cpu=pin_cpu)
    if "bare" in plan.modes:
        address = f"127.0.0.1:{_free_port()}"
        servers["bare"] = _ServerProcess(
            [
                sys.executable,
                str(pathlib.Path(__file__).resolve()),
                "--serve-bare",
                address,
            ],
            dict(os.environ),
            address,
        )
        servers["bare"].start(pin_cpu=pin_cpu)
    return servers


async def _wait_until_serving(
    channel: grpc.aio.Channel, server: _ServerProcess
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + _SERVER_START_TIMEOUT_S
    while True:
        if server.exited() is not None:
            raise RuntimeError(f"server for {server.address} exited before serving")
        try:
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=_SERVICE_NAME), timeout=1.0
            )
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing serving at {server.address} in time")
        await asyncio.sleep(0.1)


class _BareServicer(router_pb2_grpc.RouterServiceServicer):
    """Streams the simulator with nothing around it but grpc.aio."""

    def __init__(self) -> None:
        self._provider = SimulatorProvider({_PERSONA: load_personas()[_PERSONA]})

    async def Generate(self, request, context):
        call = ProviderCall(
            provider_model="",
            messages=tuple(
                {"role": "user", "content": m.content} for m in request.messages
            ),
            persona=_PERSONA,
        )
        index = 0
        async for event in self._provider.stream(call):
            if isinstance(event, TextChunk):
                yield router_pb2.GenerateResponse(
                    delta=router_pb2.TextDelta(text=event.text, index=index)
                )
                index += 1
        yield router_pb2.GenerateResponse(
            summary=router_pb2.GenerationSummary(
                status=router_pb2.GENERATION_STATUS_COMPLETE
            )
        )


async def _serve_bare(address: str) -> None:
    """Serves `_BareServicer` on `address` until SIGTERM."""
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServiceServicer_to_server(_BareServicer(), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(address)
    await server.start()
    await health.set(_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1.0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _process_cpu_s(pid: int | None) -> float | None:
    """User plus system CPU seconds of `pid` (all threads); None where unknown."""
    if pid is None:
        return None
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name start at field 3 (state);
    # utime and stime are fields 14 and 15.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- reporting ---------------------------------------------------------------

_ROWS = (
    # label, stat key, "diff" (ms difference) or "ratio"
    ("TTFT p50 (ms)", "ttft_p50_ms", "diff"),
    ("TTFT p99 (ms)", "ttft_p99_ms", "diff"),
    ("stream p50 (ms)", "duration_p50_ms", "diff"),
    ("stream p99 (ms)", "duration_p99_ms", "diff"),
    ("tokens/s p50", "tokens_per_s_p50", "ratio"),
    ("tokens/s p99 (slowest 1%)", "tokens_per_s_p99", "ratio"),
)


def _summarise(results: list[tuple[int, PhaseResult]], plan: Plan) -> dict:
    """Per concurrency: each repetition's stats and overheads, then medians."""
    stats = {(rep, r.concurrency, r.mode): r.stats() for rep, r in results}
    comparisons = _comparisons(plan)
    levels = {}
    for concurrency in plan.concurrencies:
        per_rep = []
        for rep in range(plan.repetitions):
            modes = {mode: stats[(rep, concurrency, mode)] for mode in plan.modes}
            overheads = {
                f"{after}-{before}": {
                    key: _compare(modes[before][key], modes[after][key], kind)
                    for _, key, kind in _ROWS
                }
                for before, after in comparisons
            }
            per_rep.append({"modes": modes, "overheads": overheads})
        levels[str(concurrency)] = {
            "median": {
                mode: _median([r["modes"][mode] for r in per_rep])
                for mode in plan.modes
            },
            "overhead_median": {
                name: _median([r["overheads"][name] for r in per_rep])
                for name in per_rep[0]["overheads"]
            },
            "overhead_range": {
                name: {
                    key: [
                        min(r["overheads"][name][key] for r in per_rep),
                        max(r["overheads"][name][key] for r in per_rep),
                    ]
                    for _, key, _ in _ROWS
                }
                for name in per_rep[0]["overheads"]
            },
            "repetitions": per_rep,
        }
    return levels


def _compare(before: float, after: float, kind: str) -> float:
    return after - before if kind == "diff" else after / before


def _median(rows: list[dict]) -> dict[str, float | None]:
    medians = {}
    for key in rows[0]:
        values = [row[key] for row in rows if row[key] is not None]
        medians[key] = float(np.median(values)) if values else None
    return medians


def _render_markdown(report: dict, plan: Plan) -> str:
    comparisons = _comparisons(plan)
    header = (
        ["streams", "metric"]
        + [_mode_title(m) for m in plan.modes]
        + [_comparison_title(c) for c in comparisons]
    )
    setup = report["setup"]
    lines = [
        (
            f"{setup['cpus']} CPUs; load average (1, 5, 15 min) before "
            f"{_loads(setup['load_average_before'])}, after "
            f"{_loads(setup['load_average_after'])}; {plan.repetitions} "
            "repetitions; median over repetitions (range in brackets)."
        ),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for concurrency, level in report["concurrency"].items():
        for label, key, kind in _ROWS:
            cells = [concurrency, label]
            cells += [f"{level['median'][m][key]:.2f}" for m in plan.modes]
            for before, after in comparisons:
                name = f"{after}-{before}"
                value = level["overhead_median"][name][key]
                low, high = level["overhead_range"][name][key]
                if kind == "diff":
                    cells.append(f"{value:+.2f} ms ({low:+.2f} .. {high:+.2f})")
                else:
                    cells.append(f"x{value:.3f} (x{low:.3f} .. x{high:.3f})")
            lines.append("| " + " | ".join(cells) + " |")
        cpu = ["client / server CPU ms per stream"]
        for mode in plan.modes:
            server = level["median"][mode]["server_cpu_ms_per_stream"]
            cpu.append(
                f"{level['median'][mode]['client_cpu_ms_per_stream']:.2f} / "
                + ("-" if server is None else f"{server:.2f}")
            )
        lines.append(
            "| " + " | ".join([concurrency] + cpu + [""] * len(comparisons)) + " |"
        )
    return "\n".join(lines)


def _loads(loads: tuple[float, ...]) -> str:
    return "/".join(f"{load:.1f}" for load in loads)


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default estimator)."""
    return float(np.percentile(values, q))


# --- command line ------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one short repetition, for smoke use (< 20 s)",
    )
    parser.add_argument("--repetitions", type=int, help="default 5 (quick: 1)")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 64],
        help="concurrency levels (default: 1 64)",
    )
    parser.add_argument(
        "--streams-single",
        type=int,
        help="streams per phase at concurrency 1 (default 20, quick: 2)",
    )
    parser.add_argument(
        "--streams-per-worker",
        type=int,
        help="streams per worker above concurrency 1 (default 3, quick: 1)",
    )
    parser.add_argument(
        "--bare",
        action=argparse.BooleanOptionalAction,
        help="measure the bare gRPC server (transport only) too "
        "(default: yes; quick: no)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the client to CPU 0 and the servers to CPU 1",
    )
    parser.add_argument(
        "--address",
        help="measure a RouterService already serving at host:port "
        f"instead of starting one; it must serve {_MODEL_ID!r} on "
        f"the {_PERSONA!r} persona",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=VAR=VALUE[,VAR=VALUE...]",
        help="run one router per variant, each with these extra environment "
        "variables, side by side in place of the single router (repeat; the "
        "first is the baseline the others are compared with), e.g. "
        "--variant before=KOVERAGE_EVENT_LOOP=asyncio",
    )
    parser.add_argument(
        "--client-loop",
        choices=EVENT_LOOPS,
        default="asyncio",
        help="event loop of this (client) process (default: asyncio)",
    )
    parser.add_argument("--json", help="also write the full report to this path")
    parser.add_argument(
        "--profile-router",
        metavar="PATH",
        help="run the router under cProfile, stats to PATH",
    )
    parser.add_argument("--serve-bare", metavar="ADDRESS", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _plan_from(args: argparse.Namespace) -> Plan:
    quick = args.quick
    variants = tuple(_parse_variant(v) for v in args.variant)
    routers = tuple(name for name, _ in variants) or ("router",)
    bare = not quick if args.bare is None else args.bare
    plan = Plan(
        modes=("inproc",) + (("bare",) if bare else ()) + routers,
        variants=variants,
        repetitions=args.repetitions or (1 if quick else 5),
        concurrencies=tuple(args.concurrency),
        streams_single=args.streams_single or (2 if quick else 20),
        streams_per_worker=args.streams_per_worker or (1 if quick else 3),
        warmup_concurrent=not quick,
    )
    if min(plan.repetitions, plan.streams_single, plan.streams_per_worker) < 1:
        raise SystemExit("repetitions and stream counts must be at least 1")
    if min(plan.concurrencies) < 1:
        raise SystemExit("every concurrency must be at least 1")
    if args.pin and (os.cpu_count() or 1) < 2:
        raise SystemExit("--pin needs at least two CPUs")
    if args.address and args.profile_router:
        raise SystemExit("--profile-router needs the router this script starts")
    if args.address and variants:
        raise SystemExit("--variant needs the routers this script starts")
    if len(set(routers)) != len(routers) or set(routers) & {"inproc", "bare"}:
        raise SystemExit("variant names must be unique and not inproc or bare")
    return plan


def _parse_variant(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    name, _, assignments = text.partition("=")
    pairs = []
    for assignment in filter(None, assignments.split(",")):
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise SystemExit(f"--variant {text!r}: {assignment!r} is not VAR=VALUE")
        pairs.append((key, value))
    if not name:
        raise SystemExit(f"--variant {text!r} has no name")
    return name, tuple(pairs)


if __name__ == "__main__":
    sys.exit(main())
