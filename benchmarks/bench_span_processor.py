"""Cost per LLM span: bare OpenTelemetry SDK versus the llmobs processor in front.

Two tracer providers are built in one process:

- `bare`: TracerProvider -> BatchSpanProcessor -> an exporter that discards;
- `llmobs`: TracerProvider -> RedactingSpanProcessor -> BatchSpanProcessor ->
  the same kind of exporter.

Each span is what the router records for one model call: `start_llm_span`
with the request attributes, then usage, cost, time to first token, status,
finish reasons and two previews of about 600 characters (the prompt holds an
email address and a phone number, the completion a card number), then end.
The caller's cost is the wall time of that whole sequence, so it includes
span creation, attribute setting, on_end and the enqueue.

Runs alternate between the two providers (bare, llmobs, bare, llmobs, ...),
each run timing `--spans` spans; the figures are medians over `--runs` runs
of microseconds per span, and the added cost is the median of the per-pair
differences. Both wall time and the CPU time of the calling thread
(`time.thread_time`) are reported: on a shared machine wall time also counts
waiting for a core. A second measurement times only the redaction step
(`RedactingSpanProcessor._redact_span`) on an ended span, which is less
disturbed by the export thread, for a span with PII and one without.

Timing on a busy machine is noisy, so `--only bare|llmobs` records
`--spans` spans through one provider and prints nothing: run under valgrind
with 0 and with N spans, the difference of the instruction counts over N is a
load-independent cost per span (`I refs`, all threads).

Run from the repository root:

    .venv/bin/python -m benchmarks.bench_span_processor
    .venv/bin/python -m benchmarks.bench_span_processor --runs 5 --spans 1000
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        .venv/bin/python -m benchmarks.bench_span_processor --only llmobs --spans 2000
"""

import argparse
import statistics
import sys
import time

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from koverage.llmobs import (
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    KOVERAGE_COMPLETION_PREVIEW,
    KOVERAGE_COST_USD,
    KOVERAGE_PROMPT_PREVIEW,
    KOVERAGE_STATUS,
    KOVERAGE_TIME_TO_FIRST_TOKEN_MS,
    KOVERAGE_USAGE_ESTIMATED,
    LlmCallStatus,
    RedactingSpanProcessor,
    start_llm_span,
)

_PROMPT = (
    "You are a helpful support assistant for Acme Bank. The customer writes: "
    "Hello, I could not log in to my account yesterday evening after the app "
    "update. My email is maria.lopez@example.com and you can call me back on "
    "+1-415-555-0134 any time after 5 pm. I already tried resetting my "
    "password twice and clearing the cache, but the app keeps saying that my "
    "session expired. Could you check what is wrong and tell me what to do "
    "next? I also want to know whether my pending transfer of 250 euros went "
    "through, because the recipient has not received it yet. Thanks a lot."
)
_COMPLETION = (
    "Thanks for reaching out, and sorry for the trouble. The session error "
    "after the latest update is a known issue that our team fixed this "
    "morning, so please update the app once more and sign in again. About "
    "your transfer: it was sent on Tuesday and is still being processed by "
    "the receiving bank, which usually takes one to two business days. For "
    "security, never share your full card number such as 4111 1111 1111 1111 "
    "in chat. If the transfer has not arrived by Friday, reply here and we "
    "will open an investigation with the receiving bank for you right away."
)
_CLEAN_PROMPT = _PROMPT.replace("maria.lopez@example.com", "her usual address").replace(
    "+1-415-555-0134", "her usual number"
)
_CLEAN_COMPLETION = _COMPLETION.replace("4111 1111 1111 1111", "your card")


class _DiscardingExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--spans", type=int, default=2000)
    parser.add_argument("--only", choices=("bare", "llmobs"))
    args = parser.parse_args()
    if args.only:
        _record_only(args.only, args.spans)
        return
    print(f"python {sys.version.split()[0]}, {args.runs} runs x {args.spans} spans")

    bare = TracerProvider()
    bare.add_span_processor(BatchSpanProcessor(_DiscardingExporter()))
    redacting = RedactingSpanProcessor(BatchSpanProcessor(_DiscardingExporter()))
    wrapped = TracerProvider()
    wrapped.add_span_processor(redacting)
    tracers = {"bare": bare.get_tracer("bench"), "llmobs": wrapped.get_tracer("bench")}

    for tracer in tracers.values():  # warm-up
        _record_spans(tracer, 200)

    # Wall time, and CPU time of the calling thread: on a shared machine the
    # wall time also counts waiting for a core, the thread time does not.
    wall_us = {"bare": [], "llmobs": []}
    cpu_us = {"bare": [], "llmobs": []}
    for _ in range(args.runs):
        for name, tracer in tracers.items():
            start_wall, start_cpu = time.perf_counter(), time.thread_time()
            _record_spans(tracer, args.spans)
            wall_us[name].append((time.perf_counter() - start_wall) / args.spans * 1e6)
            cpu_us[name].append((time.thread_time() - start_cpu) / args.spans * 1e6)
            bare.force_flush()
            wrapped.force_flush()

    for clock, table in (("wall", wall_us), ("thread cpu", cpu_us)):
        added = [b - a for a, b in zip(table["bare"], table["llmobs"], strict=True)]
        for name, values in (*table.items(), ("added", added)):
            print(
                f"{clock:10s} {name:7s} median {statistics.median(values):7.1f} "
                f"us/span (min {min(values):.1f}, max {max(values):.1f})"
            )

    for label, prompt, completion in (
        ("with PII", _PROMPT, _COMPLETION),
        ("clean", _CLEAN_PROMPT, _CLEAN_COMPLETION),
    ):
        wall, cpu = _redaction_step_us(
            redacting, prompt, completion, args.runs, args.spans
        )
        print(
            f"redaction step only, {label:8s}: median {wall:5.1f} us/span wall, "
            f"{cpu:5.1f} us/span thread cpu"
        )

    bare.shutdown()
    wrapped.shutdown()


def _record_only(name: str, spans: int) -> None:
    # The same pipeline as in `main`, warmed up, then `spans` spans, for
    # counting instructions under valgrind.
    provider = TracerProvider()
    exporting = BatchSpanProcessor(_DiscardingExporter())
    provider.add_span_processor(
        exporting if name == "bare" else RedactingSpanProcessor(exporting)
    )
    tracer = provider.get_tracer("bench")
    _record_spans(tracer, 200)
    _record_spans(tracer, spans)
    provider.shutdown()


def _record_spans(
    tracer, count: int, prompt: str = _PROMPT, completion: str = _COMPLETION
):
    for _ in range(count):
        span = start_llm_span(
            tracer,
            "chat",
            "openrouter",
            "qwen/qwen3-8b",
            conversation_id="4f1c2a9e-conv",
            tenant="acme",
            temperature=0.2,
            max_tokens=512,
        )
        span.set_attribute(GEN_AI_RESPONSE_MODEL, "qwen/qwen3-8b-2025")
        span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, 142)
        span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, 118)
        span.set_attribute(GEN_AI_RESPONSE_FINISH_REASONS, ("stop",))
        span.set_attribute(KOVERAGE_COST_USD, 0.000231)
        span.set_attribute(KOVERAGE_TIME_TO_FIRST_TOKEN_MS, 182.5)
        span.set_attribute(KOVERAGE_USAGE_ESTIMATED, False)
        span.set_attribute(KOVERAGE_STATUS, LlmCallStatus.COMPLETE.value)
        span.set_attribute(KOVERAGE_PROMPT_PREVIEW, prompt)
        span.set_attribute(KOVERAGE_COMPLETION_PREVIEW, completion)
        span.end()


def _redaction_step_us(processor, prompt, completion, runs, spans) -> float:
    # Captures one ended span, then times the redaction of it alone.
    captured = []

    class _Capture(SpanProcessor):
        def on_start(self, span, parent_context=None):
            pass

        def on_end(self, span):
            captured.append(span)

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=30000):
            return True

    provider = TracerProvider()
    provider.add_span_processor(_Capture())
    _record_spans(provider.get_tracer("bench"), 1, prompt, completion)
    (ended,) = captured

    wall, cpu = [], []
    for _ in range(runs):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        for _ in range(spans):
            processor._redact_span(ended)
        wall.append((time.perf_counter() - start_wall) / spans * 1e6)
        cpu.append((time.thread_time() - start_cpu) / spans * 1e6)
    return statistics.median(wall), statistics.median(cpu)


if __name__ == "__main__":
    main()
