"""RouterService over gRPC: wire format in, Router events out."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import current_tenant
from services.router._engine import Delta, GenerateParams, Router, Summary

logger = logging.getLogger(__name__)

_ROLE_NAMES = {
    router_pb2.ROLE_SYSTEM: "system",
    router_pb2.ROLE_USER: "user",
    router_pb2.ROLE_ASSISTANT: "assistant",
}
_FINISH_REASONS = {
    "stop": router_pb2.FINISH_REASON_STOP,
    "length": router_pb2.FINISH_REASON_LENGTH,
    "content_filter": router_pb2.FINISH_REASON_CONTENT_FILTER,
    "refused": router_pb2.FINISH_REASON_REFUSED,
}
_STATUSES = {
    "complete": router_pb2.GENERATION_STATUS_COMPLETE,
    "refused": router_pb2.GENERATION_STATUS_REFUSED,
}


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """Translates RouterService calls to the Router engine."""

    def __init__(self, router: Router, *, coalesce_deltas: bool = False) -> None:
        """A servicer over `router`.

        Args:
            router: The engine.
            coalesce_deltas: Send the text of deltas that are ready at the
                same moment as one message (see `coalesce_deltas`).
        """
        self._router = router
        self._coalesce_deltas = coalesce_deltas

    async def Generate(self, request: router_pb2.GenerateRequest, context):
        params = GenerateParams(
            model=request.model,
            messages=tuple(
                {"role": _ROLE_NAMES.get(m.role, "unspecified"), "content": m.content}
                for m in request.messages
            ),
            temperature=request.temperature
            if request.HasField("temperature")
            else None,
            max_output_tokens=(
                request.max_output_tokens
                if request.HasField("max_output_tokens")
                else None
            ),
            seed=request.seed if request.HasField("seed") else None,
            guardrail=request.guardrail,
            conversation_id=request.conversation_id,
            fallback_models=tuple(request.fallback_models),
            disable_fallback=request.disable_fallback,
            tenant=current_tenant(),
        )
        events = self._router.generate(params, deadline_s=context.time_remaining())
        if self._coalesce_deltas:
            events = coalesce_deltas(events)
        async for event in events:
            if isinstance(event, Delta):
                yield router_pb2.GenerateResponse(
                    delta=router_pb2.TextDelta(text=event.text, index=event.index)
                )
            else:
                yield router_pb2.GenerateResponse(summary=summary_to_proto(event))

    async def ListModels(self, request, context) -> router_pb2.ListModelsResponse:
        return router_pb2.ListModelsResponse(
            models=[
                router_pb2.ModelInfo(
                    id=e.id,
                    provider=e.provider,
                    provider_model=e.provider_model,
                    input_usd_per_mtok=str(e.input_usd_per_mtok),
                    output_usd_per_mtok=str(e.output_usd_per_mtok),
                    gpu_usd_per_second=(
                        ""
                        if e.gpu_usd_per_second is None
                        else str(e.gpu_usd_per_second)
                    ),
                    context_window_tokens=e.context_window_tokens,
                    fallback_models=list(e.fallback_models),
                    simulated=e.simulated,
                )
                for e in self._router.catalog
            ]
        )


async def coalesce_deltas(
    events: AsyncIterator[Delta | Summary],
) -> AsyncIterator[Delta | Summary]:
    """Re-yields `events`, joining deltas that are ready at the same moment.

    The engine's stream is read by a task of its own into a buffer. Each time
    the caller asks for the next event, every delta buffered by then goes out
    as one delta, numbered from 0 in the order sent (so `index` stays the
    position of the message in the stream). While the caller keeps up, this
    is one delta per provider chunk, as without coalescing; when it falls
    behind (a slow network write, a busy event loop), the backlog goes out as
    one message instead of many, which is what lets the stream catch up:
    each gRPC message costs far more CPU than its text. The summary and
    errors are passed on in order. Closing the returned generator (the call
    was cancelled) cancels the reading task, which closes the engine's
    stream and so the upstream provider call.
    """
    buffer: list[Delta | Summary] = []
    ended: list[BaseException | None] = []  # the reader's outcome, once done
    ready = asyncio.Event()

    async def read() -> None:
        try:
            async for event in events:
                buffer.append(event)
                ready.set()
        except BaseException as exc:  # passed on to the caller below
            ended.append(exc)
            ready.set()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        ended.append(None)
        ready.set()

    reader = asyncio.create_task(read())
    index = 0
    try:
        while True:
            await ready.wait()
            ready.clear()
            pending, buffer[:] = list(buffer), []
            texts: list[str] = []
            for event in pending:
                if isinstance(event, Delta):
                    texts.append(event.text)
                    continue
                if texts:
                    yield Delta("".join(texts), index)
                    index += 1
                    texts = []
                yield event
            if texts:
                yield Delta("".join(texts), index)
                index += 1
            if ended and not buffer:
                if ended[0] is not None:
                    raise ended[0]
                return
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def summary_to_proto(summary: Summary) -> router_pb2.GenerationSummary:
    """Builds the wire summary from the engine's."""
    proto = router_pb2.GenerationSummary(
        usage=router_pb2.Usage(
            input_tokens=summary.input_tokens,
            output_tokens=summary.output_tokens,
            estimated=summary.usage_estimated,
        ),
        cost_usd=str(summary.cost_usd),
        finish_reason=_FINISH_REASONS.get(
            summary.finish_reason, router_pb2.FINISH_REASON_UNSPECIFIED
        ),
        provider=summary.provider,
        model=summary.model,
        status=_STATUSES[summary.status],
        refusal_reason=summary.refusal_reason,
        trace_id=summary.trace_id,
        fallbacks_tried=list(summary.fallbacks_tried),
        output_redactions=summary.output_redactions,
        simulated=summary.simulated,
    )
    if summary.ttft_s is not None:
        proto.time_to_first_token.FromNanoseconds(int(summary.ttft_s * 1e9))
    proto.duration.FromNanoseconds(int(summary.duration_s * 1e9))
    return proto
