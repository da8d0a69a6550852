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
    guardrail: bool = False
    """The caller asked for the guardrail; a provider with its own guardrail
    (a simulator persona's planted one) applies it only then."""


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
    """Why the provider stopped: "stop", "length", "content_filter", or
    "refused" when the provider's own guardrail refused the request (it then
    sends no text, and the router reports the generation as refused)."""

    reason: str
    response_model: str = ""
    refusal_reason: str = ""
    """Why the provider refused; set only with reason "refused"."""


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
