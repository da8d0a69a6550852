"""What a provider is: something that streams one model answer."""

import dataclasses
from collections.abc import AsyncIterator
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class ProviderCall:
    """One call as a provider sees it."""

    provider_model: str
    messages: tuple[dict[str, str], ...]
    temperature: float | None = None
    max_output_tokens: int | None = None
    seed: int | None = None
    persona: str = ""


@dataclasses.dataclass(frozen=True)
class TextChunk:
    """A piece of answer text."""

    text: str


@dataclasses.dataclass(frozen=True)
class UsageReport:
    """Token counts the provider reported in its final usage chunk."""

    input_tokens: int
    output_tokens: int


@dataclasses.dataclass(frozen=True)
class FinishReport:
    """Why the provider stopped: "stop", "length" or "content_filter"."""

    reason: str
    response_model: str = ""


ProviderEvent = TextChunk | UsageReport | FinishReport


class Provider(Protocol):
    """Streams answers from one upstream.

    `stream` is an async generator. Closing it (aclose, or cancelling the task
    iterating it) must close the upstream connection, so the upstream stops
    generating. Errors are the router's ProviderRateLimitedError,
    ProviderUnavailableError or StreamBrokenError.
    """

    name: str

    def stream(self, call: ProviderCall) -> AsyncIterator[ProviderEvent]: ...
