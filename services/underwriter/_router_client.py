"""The Underwriter's model calls, all through RouterService.Generate."""

import time

import grpc

from koverage.router.v1 import router_pb2, router_pb2_grpc
from services.underwriter._answer import Answer

_ROLES = {
    "system": router_pb2.ROLE_SYSTEM,
    "user": router_pb2.ROLE_USER,
    "assistant": router_pb2.ROLE_ASSISTANT,
}
_CALL_TIMEOUT_S = 120.0


class RouterGenerate:
    """A `GenerateFn` over a channel to the router.

    Errors come back as `Answer(error=...)`, never raised, so the runner
    caches them as failed calls that `--retry-errors` can rerun.

    A pinned call (every judge call) sets `disable_fallback`: the router
    lets only the requested model answer, never one from a fallback chain.
    The answer's `served_model` is the router's `summary.model`, which the
    runner checks as well.
    """

    def __init__(
        self, channel: grpc.aio.Channel, timeout_s: float = _CALL_TIMEOUT_S
    ) -> None:
        self._stub = router_pb2_grpc.RouterServiceStub(channel)
        self._timeout_s = timeout_s

    async def __call__(
        self,
        model: str,
        messages: list[dict[str, str]],
        temperature: float,
        seed: int,
        guardrail: bool,
        *,
        pinned: bool = False,
    ) -> Answer:
        request = router_pb2.GenerateRequest(
            model=model,
            messages=[
                router_pb2.ChatMessage(role=_ROLES[m["role"]], content=m["content"])
                for m in messages
            ],
            temperature=temperature,
            seed=seed,
            guardrail=guardrail,
            disable_fallback=pinned,
        )
        started = time.perf_counter()
        texts: list[str] = []
        ttft_ms = 0.0
        summary = None
        try:
            async for event in self._stub.Generate(request, timeout=self._timeout_s):
                if event.HasField("delta"):
                    if not texts:
                        ttft_ms = (time.perf_counter() - started) * 1000
                    texts.append(event.delta.text)
                else:
                    summary = event.summary
        except grpc.aio.AioRpcError as exc:
            return Answer(error=f"{exc.code().name}: {exc.details()}")
        if summary is None:
            return Answer(error="the router closed the stream without a summary")
        # Cost and timings come from the router's final event, so they are
        # the same figures Beacon records for the call; the client's own
        # clock is the fallback for a summary without them.
        latency_ms = summary.duration.ToNanoseconds() / 1e6 or (
            (time.perf_counter() - started) * 1000
        )
        if summary.HasField("time_to_first_token"):
            ttft_ms = summary.time_to_first_token.ToNanoseconds() / 1e6
        return Answer(
            text="".join(texts),
            cost_usd=summary.cost_usd or "0",
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            refused=summary.status == router_pb2.GENERATION_STATUS_REFUSED,
            served_model=summary.model or model,
        )
