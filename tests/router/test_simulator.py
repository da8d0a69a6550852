"""The offline simulator provider."""

import pytest

from services.router._errors import (
    ProviderRateLimitedError,
    ProviderUnavailableError,
    StreamBrokenError,
)
from services.router.providers import (
    FinishReport,
    Persona,
    ProviderCall,
    SimulatorProvider,
    TextChunk,
    UsageReport,
)

_FAST = {"fast": Persona(first_token_ms=0, inter_token_ms=0, output_tokens=10)}


def call(text="hello there", **fields):
    return ProviderCall(
        "sim", ({"role": "user", "content": text},), persona="fast", **fields
    )


async def events_of(provider, c):
    return [e async for e in provider.stream(c)]


async def test_same_prompt_gives_same_answer_and_usage():
    provider = SimulatorProvider(_FAST)
    first = await events_of(provider, call())
    second = await events_of(provider, call())

    assert first == second
    assert sum(isinstance(e, TextChunk) for e in first) == 10
    assert UsageReport(2, 10) in first
    assert first[-1] == FinishReport("stop", "sim")


async def test_max_output_tokens_truncates_with_length_reason():
    events = await events_of(SimulatorProvider(_FAST), call(max_output_tokens=3))
    assert sum(isinstance(e, TextChunk) for e in events) == 3
    assert events[-1].reason == "length"


@pytest.mark.parametrize(
    ("directive", "error"),
    [
        ("[[sim:fail=rate_limit]]", ProviderRateLimitedError),
        ("[[sim:fail=unavailable]]", ProviderUnavailableError),
        ("[[sim:break_after=2]]", StreamBrokenError),
    ],
)
async def test_failures_on_request(directive, error):
    with pytest.raises(error):
        await events_of(SimulatorProvider(_FAST), call(f"hi {directive}"))


async def test_declared_failure_rate_is_honoured():
    personas = {"fast": Persona(first_token_ms=0, inter_token_ms=0, failure_rate=0.3)}
    provider = SimulatorProvider(personas, seed=7)
    failures = 0
    for _ in range(1000):
        try:
            await events_of(provider, call())
        except ProviderUnavailableError:
            failures += 1
    assert 250 <= failures <= 350


def test_persona_rejects_bad_rate():
    with pytest.raises(ValueError, match="failure_rate"):
        Persona(failure_rate=1.5)
