"""The offline simulator: a real provider with declared, known behaviour.

It streams deterministic text (the same prompt and seed give the same
answer) with persona timing, reports usage in the simulator's own token
unit (whitespace-separated words), and fails, stalls or breaks on request.
It is not a mock of any vendor: results from it are labelled simulated.
"""

import asyncio
import dataclasses
import hashlib
import pathlib
import random
import re
from collections.abc import AsyncIterator

import yaml

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
_VOCABULARY = (
    "the model considers your question and answers with care about data "
    "systems latency tokens streams traces budgets risk safety quality "
    "evidence context memory answer reason clear short helpful plan"
).split()


@dataclasses.dataclass(frozen=True)
class Persona:
    """Declared behaviour of a simulated model."""

    first_token_ms: float = 20.0
    inter_token_ms: float = 5.0
    output_tokens: int = 24
    failure_rate: float = 0.0
    reports_usage: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate={self.failure_rate} must be in [0, 1]")
        if self.output_tokens < 0 or self.first_token_ms < 0 or self.inter_token_ms < 0:
            raise ValueError("persona timings and output_tokens must be >= 0")


def load_personas(path: str | pathlib.Path | None = None) -> dict[str, Persona]:
    """Reads the persona file (the shipped one by default)."""
    document = yaml.safe_load(pathlib.Path(path or DEFAULT_PERSONAS_PATH).read_text())
    return {name: Persona(**fields) for name, fields in document["personas"].items()}


def count_tokens(text: str) -> int:
    """The simulator's token unit: whitespace-separated words."""
    return len(text.split())


class SimulatorProvider:
    """Streams answers from declared personas."""

    name = "simulator"

    def __init__(self, personas: dict[str, Persona] | None = None, seed: int = 0) -> None:
        self._personas = load_personas() if personas is None else personas
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
            raise ProviderRateLimitedError("simulator rate limit (on request)", retry_after_s=0.05)
        if failure == "unavailable" or (
            failure is None and self._failure_rng.random() < persona.failure_rate
        ):
            raise ProviderUnavailableError("simulator unavailable (declared failure)")

        first_token_s = float(directives.get("stall_ms", persona.first_token_ms)) / 1000
        if first_token_s > 0:
            await asyncio.sleep(first_token_s)

        wanted = int(directives.get("tokens", persona.output_tokens))
        limit = call.max_output_tokens
        count = min(wanted, limit) if limit is not None else wanted
        break_after = int(directives.get("break_after", -1))
        for index in range(count):
            if index == break_after:
                raise StreamBrokenError("simulator broke the stream (on request)")
            if index and persona.inter_token_ms > 0:
                await asyncio.sleep(persona.inter_token_ms / 1000)
            yield TextChunk(rng.choice(_VOCABULARY) + ("." if index == count - 1 else " "))

        if persona.reports_usage:
            prompt_tokens = sum(count_tokens(m["content"]) for m in call.messages)
            yield UsageReport(prompt_tokens, count)
        reason = "length" if limit is not None and wanted > limit else "stop"
        yield FinishReport(reason, call.provider_model or call.persona)


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
