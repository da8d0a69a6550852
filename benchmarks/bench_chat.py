"""Chat path: time to first token through chat -> router -> simulator.

Three processes, all started here: the router (`python -m services.router`,
the same one-model catalog on the fixed-timing `bench` persona as
`bench_router.py`: first token at 50 ms, then 64 tokens 10 ms apart), the
chat service (`python -m services.chat`, on a fresh Postgres database made
for the run on 127.0.0.1:5432 and dropped after it), and this process, the
client. For each repetition and each concurrency level it measures, back to
back and in an order that reverses every repetition:

- `inproc`: `SimulatorProvider.stream` called in this process (no hop).
- `router`: `RouterService.Generate` on the router process (one hop).
- `chat`: `ChatService.StreamChat` on the chat process, which stores the
  turn in Postgres, then calls the router and forwards its deltas (two
  hops, and the synchronous writes of the turn).
- `store`: the persistence of a turn alone, with no streaming: this process
  makes the same `ChatStore` calls one chat turn makes, on the same
  database, with the same pool size as the chat service, and times each
  call (see "Persistence cost" below).

A conversation is a closed-loop worker: its first turn creates the
conversation, each later turn continues it (so history grows by two
messages a turn, as in real use). With N concurrent conversations, the
workers' starts are spread evenly over one nominal stream length.

Per stream: time to first token (request sent -> first text delta) and
stream duration (request sent -> last delta); p50 and p99 per phase; the
added cost of a hop is the difference of two modes' percentiles in one
repetition, reported as the median over repetitions with the range.

Persistence cost, and why it is measured this way: pg_stat_statements is
not loaded on this Postgres, and timing inside the chat process would mean
instrumenting the service. The `store` mode instead replays, in this
process, exactly the calls `ChatServicer.StreamChat` and `Generation` make
for one turn of a 64-token answer under 1 s long: `get_conversation` (a
continued conversation only), `start_turn` (one transaction: insert or lock
the conversation, read the history, insert the user message and the
streaming answer row, touch the conversation) and, after one stream length
of waiting, `finish_message` (one transaction: update the answer row with
text and usage, touch the conversation). `save_progress` is not called:
chat writes partial text at most once a second and these answers last
0.68 s. Times are wall clock seen by the caller, so at 64 conversations
they include waiting for one of the pool's 10 connections, as chat would.
The writes before the first token (`get_conversation` + `start_turn`) are
the part that adds to time to first token; `chat - router` in the TTFT rows
should be about that plus one gRPC hop.

Run from the repository root:

    .venv/bin/python -m benchmarks.bench_chat            # full, ~4 min
    .venv/bin/python -m benchmarks.bench_chat --quick    # smoke, < 30 s

Known limitation: client, chat, router and Postgres share the machine's
cores (and, on the development machine, other engineers' work), so absolute
figures include scheduler contention; only differences measured side by
side in one repetition are reported as overhead. The `store` replay runs in
the client process on asyncio's loop while chat runs on the loop its
settings choose (uvloop by default), so it is the cost of the same SQL from
the same driver, not a trace of chat's own calls.
"""

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator

import grpc
import psycopg
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.bench_router import (
    PhaseResult,
    StreamSample,
    _free_port,
    _grpc_tokens,
    _inproc_tokens,
    _measure,
    _median,
    _percentile,
    _process_cpu_s,
    _ServerProcess,
    count_tokens,
)
from koverage.chat.v1 import chat_pb2, chat_pb2_grpc
from koverage.db import create_database, drop_database, open_async_pool
from koverage.router.v1 import router_pb2_grpc
from koverage.serving import DEFAULT_TENANT
from services.chat._app import migrate_database
from services.chat._store import ChatStore, NewConversation, Outcome
from services.router.providers import SimulatorProvider, load_personas

_PERSONA = "bench"
_MODEL_ID = "bench/fixed"
_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_CHAT_POOL_MAX_SIZE = 10  # services/chat/_app.py's pool size
_CALL_TIMEOUT_S = 60.0
_SERVER_START_TIMEOUT_S = 60.0
_HEALTH = {
    "router": "koverage.router.v1.RouterService",
    "chat": "koverage.chat.v1.ChatService",
}
_STREAM_MODES = ("inproc", "router", "chat")
_MODE_TITLES = {"inproc": "in process", "router": "router", "chat": "chat"}
_COMPARISONS = (("inproc", "router"), ("router", "chat"), ("inproc", "chat"))
_ROWS = (
    ("TTFT p50 (ms)", "ttft_p50_ms"),
    ("TTFT p99 (ms)", "ttft_p99_ms"),
    ("stream p50 (ms)", "duration_p50_ms"),
    ("stream p99 (ms)", "duration_p99_ms"),
)
_STORE_ROWS = (
    ("before first token (get_conversation + start_turn)", "before_first_token"),
    ("after the answer (finish_message)", "after_answer"),
    ("whole turn", "turn"),
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much to measure."""

    repetitions: int
    concurrencies: tuple[int, ...]
    streams_single: int
    """Turns run one after another when concurrency is 1."""
    streams_per_worker: int
    """Turns per conversation when concurrency is above 1."""
    warmup_concurrent: bool


@dataclasses.dataclass(frozen=True)
class StoreSample:
    """Wall milliseconds of one turn's store calls."""

    before_first_token: float
    after_answer: float

    @property
    def turn(self) -> float:
        return self.before_first_token + self.after_answer


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    plan = _plan_from(args)
    persona = load_personas()[_PERSONA]
    nominal_s = (
        persona.first_token_ms + persona.inter_token_ms * (persona.output_tokens - 1)
    ) / 1000

    db_name = f"koverage_bench_chat_{os.getpid()}"
    database_url = create_database(_ADMIN_URL, db_name)
    try:
        migrate_database(database_url)
        with tempfile.TemporaryDirectory(prefix="koverage-bench-chat-") as workdir:
            servers = _start_servers(pathlib.Path(workdir), database_url)
            try:
                gc.freeze()
                load_before = os.getloadavg()
                stream_results, store_results = asyncio.run(
                    _run(plan, servers, database_url, nominal_s)
                )
            finally:
                for server in reversed(servers.values()):
                    server.stop()
    finally:
        drop_database(_ADMIN_URL, db_name)

    report = {
        "setup": {
            "persona": dataclasses.asdict(persona),
            "nominal_stream_ms": nominal_s * 1000,
            "plan": dataclasses.asdict(plan),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "grpcio": grpc.__version__,
            "event_loop_env": os.environ.get("KOVERAGE_EVENT_LOOP", "auto"),
            "postgres": _server_version(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "concurrency": _summarise(stream_results, store_results, plan),
    }
    print(_render_markdown(report, plan))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


# --- running phases ----------------------------------------------------------


async def _run(
    plan: Plan,
    servers: dict[str, _ServerProcess],
    database_url: str,
    nominal_s: float,
) -> tuple[list[tuple[int, PhaseResult]], list[tuple[int, int, list[StoreSample]]]]:
    provider = SimulatorProvider({_PERSONA: load_personas()[_PERSONA]})
    router_channel = grpc.aio.insecure_channel(servers["router"].address)
    chat_channel = grpc.aio.insecure_channel(servers["chat"].address)
    pool = await open_async_pool(
        database_url, min_size=1, max_size=_CHAT_POOL_MAX_SIZE, name="bench"
    )
    try:
        await _wait_until_serving(router_channel, servers["router"], "router")
        await _wait_until_serving(chat_channel, servers["chat"], "chat")
        router_stub = router_pb2_grpc.RouterServiceStub(router_channel)
        chat_stub = chat_pb2_grpc.ChatServiceStub(chat_channel)
        store = ChatStore(pool)
        pids = {mode: servers[mode].pid for mode in ("router", "chat")}

        def openers(conversations: list[str]):
            return {
                "inproc": lambda n: _inproc_tokens(provider, n),
                "router": lambda n: _grpc_tokens(router_stub, n),
                "chat": lambda n: _chat_tokens(chat_stub, n, conversations),
            }

        # Warm up every path (imports, connections, the model cache in chat).
        for mode in _STREAM_MODES:
            await _stream_phase(openers([])[mode], mode, 1, 1, 0.0, None)
            if plan.warmup_concurrent:
                await _stream_phase(openers([])[mode], mode, 8, 1, nominal_s, None)
        await _store_phase(store, 1, 1, 0.0)

        streams: list[tuple[int, PhaseResult]] = []
        stores: list[tuple[int, int, list[StoreSample]]] = []
        modes = _STREAM_MODES + ("store",)
        for rep in range(plan.repetitions):
            # Reverse the order every repetition so slow drift favours no mode.
            ordered = modes if rep % 2 == 0 else modes[::-1]
            for concurrency in plan.concurrencies:
                turns = (
                    plan.streams_single if concurrency == 1 else plan.streams_per_worker
                )
                for mode in ordered:
                    if mode == "store":
                        samples = await _store_phase(
                            store, concurrency, turns, nominal_s
                        )
                        stores.append((rep, concurrency, samples))
                        turn_ms = [s.turn for s in samples]
                        print(
                            f"rep {rep} c={concurrency:<3} store  turn "
                            f"p50 {_percentile(turn_ms, 50):7.2f} "
                            f"p99 {_percentile(turn_ms, 99):7.2f} ms",
                            file=sys.stderr,
                        )
                        continue
                    result = await _stream_phase(
                        openers([])[mode],
                        mode,
                        concurrency,
                        turns,
                        nominal_s,
                        pids.get(mode),
                    )
                    streams.append((rep, result))
                    stats = result.stats()
                    print(
                        f"rep {rep} c={concurrency:<3} {mode:<6} "
                        f"ttft p50 {stats['ttft_p50_ms']:7.2f} "
                        f"p99 {stats['ttft_p99_ms']:7.2f} ms; stream "
                        f"p50 {stats['duration_p50_ms']:7.2f} ms",
                        file=sys.stderr,
                    )
        return streams, stores
    finally:
        await router_channel.close()
        await chat_channel.close()
        await pool.close()


async def _stream_phase(
    open_tokens,
    mode: str,
    concurrency: int,
    turns_per_worker: int,
    nominal_s: float,
    server_pid: int | None,
) -> PhaseResult:
    """Runs `concurrency` closed-loop conversations; every turn's sample."""
    samples: list[StreamSample] = []
    numbers = iter(range(10**9))

    async def worker(offset_s: float) -> None:
        if offset_s:
            await asyncio.sleep(offset_s)
        for _ in range(turns_per_worker):
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


async def _chat_tokens(
    stub: chat_pb2_grpc.ChatServiceStub, n: int, idle_conversations: list[str]
) -> AsyncIterator[int]:
    """One StreamChat turn; continues an idle conversation when there is one.

    Closed-loop workers take a conversation when they start a turn and put
    it back when the turn ends, so each worker keeps one conversation.
    """
    conversation_id = idle_conversations.pop() if idle_conversations else ""
    request = chat_pb2.StreamChatRequest(
        conversation_id=conversation_id,
        content=f"benchmark prompt {n}: keep streams fast",
        model=_MODEL_ID,
    )
    completed = None
    async for response in stub.StreamChat(request, timeout=_CALL_TIMEOUT_S):
        kind = response.WhichOneof("event")
        if kind == "started":
            conversation_id = response.started.conversation_id
        elif kind == "delta":
            if response.delta.text:
                yield count_tokens(response.delta.text)
        else:
            completed = response.completed
    if completed is None or completed.status != chat_pb2.MESSAGE_STATUS_COMPLETE:
        raise RuntimeError(f"chat turn {n} did not complete: {completed}")
    idle_conversations.append(conversation_id)


async def _store_phase(
    store: ChatStore, concurrency: int, turns_per_worker: int, nominal_s: float
) -> list[StoreSample]:
    """Replays chat's store calls for `turns_per_worker` turns per worker."""
    samples: list[StoreSample] = []
    answer = " ".join(f"w{i}" for i in range(64))

    async def worker(offset_s: float) -> None:
        if offset_s:
            await asyncio.sleep(offset_s)
        conversation_id = None
        for turn in range(turns_per_worker):
            started = time.perf_counter()
            sample = await _store_turn(store, conversation_id, turn, answer, nominal_s)
            conversation_id = sample[0]
            samples.append(sample[1])
            # Keep the closed loop's pace even if the writes were fast.
            rest = nominal_s - (time.perf_counter() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    await asyncio.gather(
        *(worker(i * nominal_s / concurrency) for i in range(concurrency))
    )
    return samples


async def _store_turn(
    store: ChatStore,
    conversation_id: str | None,
    turn: int,
    answer: str,
    nominal_s: float,
) -> tuple[str, StoreSample]:
    """One turn's calls, in the order StreamChat and Generation make them."""
    content = f"benchmark prompt {turn}: keep streams fast"
    started = time.perf_counter()
    new = None
    if conversation_id is None:
        new = NewConversation(title=content, model=_MODEL_ID, system_prompt="")
    else:
        await store.get_conversation(DEFAULT_TENANT, conversation_id)

    async def plan(conversation, history):
        return len(history)

    stored, _ = await store.start_turn(
        DEFAULT_TENANT, conversation_id, new, content, _MODEL_ID, "0" * 32, plan
    )
    before_ms = (time.perf_counter() - started) * 1000

    # The answer streams meanwhile; chat writes nothing until it ends.
    await asyncio.sleep(max(0.0, nominal_s - before_ms / 1000))

    finishing = time.perf_counter()
    record = await store.finish_message(
        stored.assistant_message.id,
        Outcome(
            status="complete",
            content=answer,
            model=_MODEL_ID,
            provider="simulator",
            input_tokens=12,
            output_tokens=64,
            finish_reason="stop",
            time_to_first_token_ms=50.0,
            trace_id="0" * 32,
        ),
    )
    if record is None:
        raise RuntimeError("finish_message found no streaming row")
    after_ms = (time.perf_counter() - finishing) * 1000
    return stored.conversation.id, StoreSample(before_ms, after_ms)


# --- server processes --------------------------------------------------------


def _start_servers(
    workdir: pathlib.Path, database_url: str
) -> dict[str, _ServerProcess]:
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
    router_address = f"127.0.0.1:{_free_port()}"
    chat_address = f"127.0.0.1:{_free_port()}"
    env = {
        **os.environ,
        "KOVERAGE_ROUTER_ADDRESS": router_address,
        "KOVERAGE_CHAT_ADDRESS": chat_address,
        "KOVERAGE_DATABASE_URL": database_url,
        "KOVERAGE_CHAT_DEFAULT_MODEL": _MODEL_ID,
        "KOVERAGE_METRICS_PORT": "-1",
        "KOVERAGE_LOG_LEVEL": "WARNING",
        "KOVERAGE_CATALOG_PATH": str(catalog_path),
        "KOVERAGE_OTLP_ENDPOINT": "",
        "KOVERAGE_AUTH_REQUIRED": "false",
        "KOVERAGE_SHUTDOWN_GRACE_S": "1",
    }
    servers = {
        "router": _ServerProcess(
            [sys.executable, "-m", "services.router"], env, router_address
        ),
        "chat": _ServerProcess(
            [sys.executable, "-m", "services.chat"], env, chat_address
        ),
    }
    for server in servers.values():
        server.start(pin_cpu=None)
    return servers


async def _wait_until_serving(
    channel: grpc.aio.Channel, server: _ServerProcess, name: str
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + _SERVER_START_TIMEOUT_S
    while True:
        if server.exited() is not None:
            raise RuntimeError(f"{name} at {server.address} exited before serving")
        try:
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=_HEALTH[name]), timeout=1.0
            )
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not serving at {server.address} in time")
        await asyncio.sleep(0.1)


def _server_version() -> str:
    with psycopg.connect(_ADMIN_URL) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


# --- reporting ---------------------------------------------------------------


def _summarise(
    streams: list[tuple[int, PhaseResult]],
    stores: list[tuple[int, int, list[StoreSample]]],
    plan: Plan,
) -> dict:
    """Per concurrency: each repetition's stats and differences, then medians."""
    stats = {(rep, r.concurrency, r.mode): r.stats() for rep, r in streams}
    store_stats = {
        (rep, concurrency): {
            f"{key}_{q}": _percentile([getattr(s, key) for s in samples], q)
            for _, key in _STORE_ROWS
            for q in (50, 99)
        }
        for rep, concurrency, samples in stores
    }
    levels = {}
    for concurrency in plan.concurrencies:
        per_rep = []
        for rep in range(plan.repetitions):
            modes = {m: stats[(rep, concurrency, m)] for m in _STREAM_MODES}
            overheads = {
                f"{after}-{before}": {
                    key: modes[after][key] - modes[before][key] for _, key in _ROWS
                }
                for before, after in _COMPARISONS
            }
            per_rep.append(
                {
                    "modes": modes,
                    "overheads": overheads,
                    "store": store_stats[(rep, concurrency)],
                }
            )
        levels[str(concurrency)] = {
            "median": {
                m: _median([r["modes"][m] for r in per_rep]) for m in _STREAM_MODES
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
                    for _, key in _ROWS
                }
                for name in per_rep[0]["overheads"]
            },
            "store_median": _median([r["store"] for r in per_rep]),
            "store_range": {
                key: [
                    min(r["store"][key] for r in per_rep),
                    max(r["store"][key] for r in per_rep),
                ]
                for key in per_rep[0]["store"]
            },
            "repetitions": per_rep,
        }
    return levels


def _render_markdown(report: dict, plan: Plan) -> str:
    setup = report["setup"]
    header = (
        ["conversations", "metric"]
        + [_MODE_TITLES[m] for m in _STREAM_MODES]
        + [f"{_MODE_TITLES[a]} - {_MODE_TITLES[b]}" for b, a in _COMPARISONS]
    )
    lines = [
        (
            f"{setup['cpus']} CPUs; load average (1, 5, 15 min) before "
            f"{_loads(setup['load_average_before'])}, after "
            f"{_loads(setup['load_average_after'])}; {plan.repetitions} "
            "repetitions; median over repetitions (range in brackets); "
            f"Postgres {setup['postgres']}."
        ),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for concurrency, level in report["concurrency"].items():
        for label, key in _ROWS:
            cells = [concurrency, label]
            cells += [f"{level['median'][m][key]:.2f}" for m in _STREAM_MODES]
            for before, after in _COMPARISONS:
                name = f"{after}-{before}"
                value = level["overhead_median"][name][key]
                low, high = level["overhead_range"][name][key]
                cells.append(f"{value:+.2f} ms ({low:+.2f} .. {high:+.2f})")
            lines.append("| " + " | ".join(cells) + " |")
        cpu = [concurrency, "client / server CPU ms per stream"]
        for mode in _STREAM_MODES:
            server = level["median"][mode]["server_cpu_ms_per_stream"]
            cpu.append(
                f"{level['median'][mode]['client_cpu_ms_per_stream']:.2f} / "
                + ("-" if server is None else f"{server:.2f}")
            )
        lines.append("| " + " | ".join(cpu + [""] * len(_COMPARISONS)) + " |")

    lines += [
        "",
        "Persistence per turn (`ChatStore` calls replayed in process, wall ms):",
        "",
        "| conversations | store calls | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|",
    ]
    for concurrency, level in report["concurrency"].items():
        for label, key in _STORE_ROWS:
            cells = [concurrency, label]
            for q in (50, 99):
                value = level["store_median"][f"{key}_{q}"]
                low, high = level["store_range"][f"{key}_{q}"]
                cells.append(f"{value:.2f} ({low:.2f} .. {high:.2f})")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _loads(loads: tuple[float, ...]) -> str:
    return "/".join(f"{load:.1f}" for load in loads)


# --- command line ------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one short repetition (< 30 s)"
    )
    parser.add_argument("--repetitions", type=int, help="default 5 (quick: 1)")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 64],
        help="concurrent conversations (default: 1 64)",
    )
    parser.add_argument(
        "--streams-single",
        type=int,
        help="turns per phase at concurrency 1 (default 10, quick: 2)",
    )
    parser.add_argument(
        "--streams-per-worker",
        type=int,
        help="turns per conversation above concurrency 1 (default 3, quick: 1)",
    )
    parser.add_argument("--json", help="also write the full report to this path")
    return parser.parse_args(argv)


def _plan_from(args: argparse.Namespace) -> Plan:
    quick = args.quick
    plan = Plan(
        repetitions=args.repetitions or (1 if quick else 5),
        concurrencies=tuple(args.concurrency),
        streams_single=args.streams_single or (2 if quick else 10),
        streams_per_worker=args.streams_per_worker or (1 if quick else 3),
        warmup_concurrent=not quick,
    )
    if min(plan.repetitions, plan.streams_single, plan.streams_per_worker) < 1:
        raise SystemExit("repetitions and stream counts must be at least 1")
    if min(plan.concurrencies) < 1:
        raise SystemExit("every concurrency must be at least 1")
    return plan


if __name__ == "__main__":
    sys.exit(main())
