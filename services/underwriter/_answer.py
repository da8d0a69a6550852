"""What the Underwriter needs from a model call: `Answer` and `GenerateFn`."""

import dataclasses
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class Answer:
    """One finished model call.

    Attributes:
        text: the whole response text ("" on error).
        cost_usd: cost as a decimal string (e.g. "0.000123"), exact.
        latency_ms: time from request to the last token.
        ttft_ms: time to the first token.
        refused: the router's guardrail (or the provider) refused the call.
        error: why the call failed; None when it succeeded. A failed call is
            cached as failed and rerun only with `retry_errors`.
        served_model: the model that actually answered, as the router's
            final event names it ("" when the caller does not know, e.g. the
            in-process simulator). It differs from the requested model when
            the router fell back to another one.
    """

    text: str = ""
    cost_usd: str = "0"
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    refused: bool = False
    error: str | None = None
    served_model: str = ""


class GenerateFn(Protocol):
    """Makes one model call; the lead wires it to RouterService.Generate.

    It is used for the models under test and for the judges alike. It should
    return an `Answer` with `error` set rather than raise; an exception that
    escapes is recorded as an error answer (except cancellation).

    `pinned=True` (every judge call) asks that no other model may answer in
    the requested model's place: the router must not walk a fallback chain
    to a different model. The runner still checks `Answer.served_model` and
    discards a verdict that another model gave.
    """

    async def __call__(
        self,
        model: str,
        messages: list[dict[str, str]],
        temperature: float,
        seed: int,
        guardrail: bool,
        *,
        pinned: bool = False,
    ) -> Answer: ...
