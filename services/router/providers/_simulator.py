"""The offline simulator: a real provider with declared, known behaviour.

It streams deterministic text (the same prompt and seed give the same
answer) with persona timing, reports usage in the simulator's own token
unit (whitespace-separated words), and fails, stalls or breaks on request.
It is not a mock of any vendor: results from it are labelled simulated.

A persona may name a responder, a function that writes the answer text in
place of the random words (for example the Underwriter's planted-rate exam
personas). It is loaded by import path when the provider starts, so the
router imports no other service. The contract:

    factory(persona_name, **responder_options) -> respond
    respond(messages, temperature, seed, guardrail) -> (text, refused)

`respond` is a pure, fast function (it runs on the event loop). `refused`
means the persona's own guardrail blocked the answer: the stream then sends
no text and finishes with reason "refused", which the router reports as a
refused generation. A ValueError from `respond` means the prompt is not one
it can answer (INVALID_ARGUMENT); any other exception is a provider failure
(UNAVAILABLE, not retried: the same prompt would fail again).
"""

import asyncio
import dataclasses
import hashlib
import importlib
import pathlib
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import yaml

from koverage.errors import InvalidArgumentError
from services.router._errors import (
    ProviderRateLimitedError,
    ProviderUnavailableError,
    StreamBrokenError,
)
from services.router.providers._base import (
    FinishReport,
    ProviderCall,
    ProviderEvent,
    TextChunk,
    UsageReport,
)

DEFAULT_PERSONAS_PATH = pathlib.Path(__file__).parent.parent / "simulator_personas.yaml"

_DIRECTIVE = re.compile(r"\[\[sim:([a-z_]+)=([a-z0-9_.]+)\]\]")
_VOCABULARY = [
    "the",
    "model",
    "considers",
    "your",
    "question",
    "and",
    "answers",
    "with",
    "care",
    "about",
    "data",
    "systems",
    "latency",
    "tokens",
    "streams",
    "traces",
    "budgets",
    "risk",
    "safety",
    "quality",
    "evidence",
    "context",
    "memory",
    "answer",
    "reason",
    "clear",
    "short",
    "helpful",
    "plan",
]


@dataclasses.dataclass(frozen=True)
class Persona:
    """Declared behaviour of a simulated model."""

    first_token_ms: float = 20.0
    inter_token_ms: float = 5.0
    output_tokens: int = 24
    failure_rate: float = 0.0
    reports_usage: bool = True
    responder: str = ""
    """"package.module:factory" that writes the answers; empty for random words."""
    responder_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments for the responder factory."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate={self.failure_rate} must be in [0, 1]")
        if self.output_tokens < 0 or self.first_token_ms < 0 or self.inter_token_ms < 0:
            raise ValueError("persona timings and output_tokens must be >= 0")
        if self.responder and not re.fullmatch(r"[\w.]+:\w+", self.responder):
            raise ValueError(
                f"responder={self.responder!r} must be 'package.module:factory'"
            )


def load_personas(path: str | pathlib.Path | None = None) -> dict[str, Persona]:
    """Reads the persona file (the shipped one by default)."""
    document = yaml.safe_load(pathlib.Path(path or DEFAULT_PERSONAS_PATH).read_text())
    return {name: Persona(**fields) for name, fields in document["personas"].items()}


def load_responder(name: str, persona: Persona) -> Callable[..., tuple[str, bool]]:
    """Imports and builds a persona's responder.

    Raises:
        ValueError: the import path does not load, or the factory rejects the
            options; the message names the persona.
    """
    module_name, _, factory_name = persona.responder.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
        return factory(name, **persona.responder_options)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"simulator persona {name!r}: responder {persona.responder!r} did not "
            f"load: {exc}"
        ) from exc


def count_tokens(text: str) -> int:
    """The simulator's token unit: whitespace-separated words."""
    return len(text.split())


class SimulatorProvider:
    """Streams answers from declared personas."""

    name = "simulator"

    def __init__(
        self, personas: dict[str, Persona] | None = None, seed: int = 0
    ) -> None:
        self._personas = load_personas() if personas is None else personas
        self._responders = {
            name: load_responder(name, persona)
            for name, persona in self._personas.items()
            if persona.responder
        }
        # Declared failures draw from their own stream so that a retry of the
        # same prompt can succeed, while answer text stays a pure function
        # of the prompt.
        self._failure_rng = random.Random(seed)

    async def stream(self, call: ProviderCall) -> AsyncIterator[ProviderEvent]:
        persona = self._personas.get(call.persona)
        if persona is None:
            raise ProviderUnavailableError(
                f"simulator has no persona {call.persona!r}", retryable=False
            )
        directives = _directives(call.messages)
        rng = random.Random(_seed_of(call))

        # Failures happen before the first token, as with a real provider
        # that refuses or cannot be reached.
        failure = directives.get("fail")
        if failure == "rate_limit":
            raise ProviderRateLimitedError(
                "simulator rate limit (on request)", retry_after_s=0.05
            )
        if failure == "unavailable" or (
            failure is None and self._failure_rng.random() < persona.failure_rate
        ):
            raise ProviderUnavailableError("simulator unavailable (declared failure)")

        written = self._respond(call)

        first_token_s = float(directives.get("stall_ms", persona.first_token_ms)) / 1000
        if first_token_s > 0:
            await asyncio.sleep(first_token_s)

        prompt_tokens = sum(count_tokens(m["content"]) for m in call.messages)
        if written is not None and written[1]:
            # The persona's own guardrail refused: no text, as a blocked call.
            if persona.reports_usage:
                yield UsageReport(prompt_tokens, 0)
            yield FinishReport(
                "refused",
                call.provider_model or call.persona,
                refusal_reason=written[0],
            )
            return

        limit = call.max_output_tokens
        if written is None:
            wanted = int(directives.get("tokens", persona.output_tokens))
            count = min(wanted, limit) if limit is not None else wanted
            words = [
                rng.choice(_VOCABULARY) + ("." if index == count - 1 else " ")
                for index in range(count)
            ]
        else:
            words = _words(written[0])
            wanted = len(words)
            count = min(wanted, limit) if limit is not None else wanted
            words = words[:count]
        break_after = int(directives.get("break_after", -1))
        # Token i is due inter_token_ms * i after the first, on the model's own
        # clock, as with a real upstream that keeps generating into the socket
        # while the reader is busy. Sleeping a fixed gap after each pull would
        # add the reader's own latency to every later token.
        loop = asyncio.get_running_loop()
        first_token_at = loop.time()
        for index in range(count):
            if index == break_after:
                raise StreamBrokenError("simulator broke the stream (on request)")
            if index and persona.inter_token_ms > 0:
                due = first_token_at + index * persona.inter_token_ms / 1000
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
            yield TextChunk(words[index])

        if persona.reports_usage:
            yield UsageReport(prompt_tokens, count)
        reason = "length" if limit is not None and wanted > limit else "stop"
        yield FinishReport(reason, call.provider_model or call.persona)

    def _respond(self, call: ProviderCall) -> tuple[str, bool] | None:
        """(text, refused) from the persona's responder; None without one."""
        responder = self._responders.get(call.persona)
        if responder is None:
            return None
        try:
            text, refused = responder(
                [dict(m) for m in call.messages],
                0.0 if call.temperature is None else call.temperature,
                0 if call.seed is None else call.seed,
                call.guardrail,
            )
        except ValueError as exc:
            raise InvalidArgumentError(
                f"simulator persona {call.persona!r} cannot answer this prompt: {exc}"
            ) from exc
        except Exception as exc:  # any responder failure is the provider's
            raise ProviderUnavailableError(
                f"simulator persona {call.persona!r} failed: {exc}", retryable=False
            ) from exc
        return text, bool(refused)


def _words(text: str) -> list[str]:
    """`text` cut into one-word chunks that join back to it exactly."""
    words = re.findall(r"\S+\s*", text)
    if words:
        words[0] = text[: len(text) - len(text.lstrip())] + words[0]
    return words


def _directives(messages: tuple[dict[str, str], ...]) -> dict[str, str]:
    for message in reversed(messages):
        if message.get("role") == "user":
            return dict(_DIRECTIVE.findall(message.get("content", "")))
    return {}


def _seed_of(call: ProviderCall) -> int:
    digest = hashlib.blake2b(digest_size=8)
    for message in call.messages:
        digest.update(message["role"].encode())
        digest.update(message["content"].encode())
    digest.update(str(call.seed).encode())
    digest.update(str(call.temperature).encode())
    return int.from_bytes(digest.digest(), "big")
