"""Live generations: one asyncio task per answer, with watchers.

A generation runs in its own task, independent of the RPC that started it:
it reads the router's stream, appends the text to a buffer, and stores the
outcome. Any number of watchers (the StreamChat call that started it,
ResumeGeneration calls) follow the buffer from an offset; a slow or gone
watcher never slows the generation, and a blocking model stream blocks only
its own task.

Watchers and the orphan grace: a generation counts the calls following it.
When the last one leaves before the end (a StreamChat or ResumeGeneration
call that the client cancelled or lost), the generation keeps running for
the registry's `orphan_grace_s`; a ResumeGeneration that attaches meanwhile
keeps it going, and if none does it is cancelled all the way to the
provider and stored cancelled. A StreamChat request with
`cancel_on_disconnect` cancels at once instead. While the server drains,
an early end cancels nothing: the server's own cancellation of every
handler at the end of the drain looks exactly like a client's, and the
registry fails every generation still running once the drain is over.

Persistence rule: the partial answer is written to its message row at most
once every `persist_interval_s` while text arrives (so a killed process
loses at most that much text), and the final text and outcome once at the
end, whatever the end was: complete, refused, cancelled or failed.

Model text is made storable as it arrives: Postgres text cannot hold NUL
(U+0000), so NUL characters are removed from the model's output before it
is buffered, streamed or stored. Offsets count the text without them.

A failed final write: the write is retried `_FINISH_WRITE_ATTEMPTS` times
with backoff. If it still fails, the watchers get a FAILED outcome (never
COMPLETE for an answer that is not stored), the generation stays in the
registry, so ResumeGeneration replays it, and the registry keeps retrying
to store that failed outcome in the background, with capped backoff, until
it is stored; a new turn on the same conversation tries it at once. So the
row does not stay `streaming` in a running process once the database is
back, and the next turn works.
"""

import asyncio
import bisect
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal

import grpc

from koverage.chat.v1 import chat_pb2
from koverage.errors import UnavailableError, error_from_rpc
from koverage.router.v1 import router_pb2, router_pb2_grpc
from services.chat._convert import completed_event
from services.chat._history import PromptPlan, estimate_text_tokens
from services.chat._models import estimate_cost_usd
from services.chat._store import ChatStore, MessageRecord, Outcome

PERSIST_INTERVAL_S = 1.0
"""Longest time partial text stays only in memory while a generation streams."""

_GENERATION_DEADLINE_S = 600.0
_FINISH_WRITE_ATTEMPTS = 3
_FINISH_RETRY_DELAY_S = 0.2  # doubles after each failed attempt
_SETTLE_RETRY_MAX_DELAY_S = 30.0
_LEFT_AT_ONCE_REASON = (
    "the client cancelled its StreamChat call or disconnected before the "
    "answer ended, and asked for cancel_on_disconnect"
)
_ROLES = {
    "system": router_pb2.ROLE_SYSTEM,
    "user": router_pb2.ROLE_USER,
    "assistant": router_pb2.ROLE_ASSISTANT,
}
_FINISH_REASONS = {
    router_pb2.FINISH_REASON_STOP: "stop",
    router_pb2.FINISH_REASON_LENGTH: "length",
    router_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    router_pb2.FINISH_REASON_REFUSED: "refused",
}

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GenerationSpec:
    """Everything one generation needs to run."""

    tenant: str
    conversation_id: str
    message_id: str
    model: router_pb2.ModelInfo
    plan: PromptPlan
    guardrail: bool
    temperature: float | None
    max_output_tokens: int | None
    trace_id: str
    requested_at: float
    """time.perf_counter() when the request arrived, for time to first token."""


class Generation:
    """One answer being generated, and the text it has produced so far."""

    def __init__(self, spec: GenerationSpec) -> None:
        self.spec = spec
        self._chunks: list[str] = []
        self._starts: list[int] = []  # offset of each chunk in the answer
        self._length = 0
        # One future per follower that caught up and waits, resolved on the
        # next append or at the end; a delta nobody waits for wakes nobody
        # and allocates nothing.
        self._waiters: list[asyncio.Future[None]] = []
        self._stop: tuple[str, str] | None = None  # (status, reason)
        self._running = False
        self._watchers = 0
        self._orphan_timer: asyncio.TimerHandle | None = None
        self.completed: chat_pb2.ChatCompleted | None = None
        self.record: MessageRecord | None = None
        self.unstored: Outcome | None = None
        """The outcome watchers were told but the store could not take yet."""
        self.task: asyncio.Task | None = None

    @property
    def message_id(self) -> str:
        return self.spec.message_id

    @property
    def done(self) -> bool:
        """True once the outcome is stored and `completed` is set."""
        return self.completed is not None

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    @property
    def length_chars(self) -> int:
        return self._length

    def cancel(self, status: str, reason: str) -> bool:
        """Stops the generation; it stores `status` ("cancelled" or "failed")
        with `reason`. Returns False if it had already finished."""
        if self.done or self.task is None or self.task.done():
            return False
        if self._stop is None:
            self._stop = (status, reason)
            # A task cancelled before its first step would never run its
            # body, so an unstarted one sees `_stop` when it starts instead.
            if self._running:
                self.task.cancel()
        return True

    async def wait(self) -> None:
        """Returns once the outcome is stored."""
        if self.task is not None:
            await asyncio.shield(self.task)

    async def follow(
        self,
        offset_chars: int = 0,
        *,
        wrap_delta: Callable[[str, int], object] | None = None,
        wrap_completed: Callable[[chat_pb2.ChatCompleted], object] | None = None,
    ) -> AsyncIterator:
        """Yields the text from `offset_chars` on as deltas, live, then the
        completed event. Delta boundaries follow the router's, except the
        first one when `offset_chars` falls inside a chunk.

        Args:
            offset_chars: Where in the answer to start.
            wrap_delta: Builds what is yielded for a delta from its text and
                offset (a caller's response message, so no ChatDelta is
                built and copied per delta); a `ChatDelta` by default.
            wrap_completed: Builds what is yielded for the completed event;
                the event itself by default.
        """
        position = offset_chars
        while True:
            if position < self._length:
                index = bisect.bisect_right(self._starts, position) - 1
                chunk = self._chunks[index]
                if position != self._starts[index]:
                    chunk = chunk[position - self._starts[index] :]
                if wrap_delta is None:
                    yield chat_pb2.ChatDelta(text=chunk, offset_chars=position)
                else:
                    yield wrap_delta(chunk, position)
                position += len(chunk)
                continue
            if self.completed is not None:
                if wrap_completed is None:
                    yield self.completed
                else:
                    yield wrap_completed(self.completed)
                return
            # A cancelled follower cancels only its own future; _notify
            # skips it.
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    async def run(
        self, router: router_pb2_grpc.RouterServiceStub, store: ChatStore
    ) -> None:
        """Streams the answer from the router and stores the outcome."""
        spec = self.spec
        self._running = True
        if self._stop is not None:
            await self._finish(store, self._partial_outcome(*self._stop, None))
            return
        ttft_ms: float | None = None
        last_persist = time.monotonic()
        persisted_length = 0
        call = router.Generate(_generate_request(spec), timeout=_GENERATION_DEADLINE_S)
        try:
            summary = None
            async for response in call:
                if response.HasField("summary"):
                    summary = response.summary
                    continue
                text = response.delta.text.replace("\x00", "")
                if not text:
                    continue
                if ttft_ms is None:
                    ttft_ms = (time.perf_counter() - spec.requested_at) * 1000
                self._append(text)
                if (
                    time.monotonic() - last_persist >= PERSIST_INTERVAL_S
                    and self._length > persisted_length
                ):
                    if await _save_progress(store, spec.message_id, self.text):
                        persisted_length = self._length
                    last_persist = time.monotonic()
            outcome = self._summary_outcome(summary, ttft_ms)
        except asyncio.CancelledError:
            call.cancel()
            status, reason = self._stop or ("failed", "generation task was cancelled")
            outcome = self._partial_outcome(status, reason, ttft_ms)
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc)
            logger.warning(
                "generation failed",
                extra={"message_id": spec.message_id, "code": exc.code().name},
            )
            outcome = self._partial_outcome(
                "failed", f"router {exc.code().name}: {error}", ttft_ms
            )
        except Exception as exc:
            logger.exception(
                "generation crashed", extra={"message_id": spec.message_id}
            )
            call.cancel()
            outcome = self._partial_outcome(
                "failed", f"internal error in chat: {type(exc).__name__}", ttft_ms
            )
        await self._finish(store, outcome)

    def _attach(self) -> None:
        self._watchers += 1
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
            self._orphan_timer = None
            logger.info(
                "a watcher re-attached; orphaned generation continues",
                extra={"message_id": self.message_id},
            )

    def _detach(self) -> bool:
        """Uncounts a watcher; True if nobody is left while it still runs."""
        self._watchers -= 1
        return self._watchers == 0 and not self.done and self._stop is None

    def _cancel_after(self, delay_s: float, reason: str) -> None:
        def expire() -> None:
            self._orphan_timer = None
            if self.cancel("cancelled", reason):
                logger.info(
                    "no watcher re-attached in time; orphaned generation cancelled",
                    extra={"message_id": self.message_id},
                )

        loop = asyncio.get_running_loop()
        self._orphan_timer = loop.call_later(delay_s, expire)

    def _append(self, text: str) -> None:
        self._starts.append(self._length)
        self._chunks.append(text)
        self._length += len(text)
        self._notify()

    def _notify(self) -> None:
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _summary_outcome(
        self, summary: router_pb2.GenerationSummary | None, ttft_ms: float | None
    ) -> Outcome:
        spec = self.spec
        if summary is None:
            return self._partial_outcome(
                "failed", "the router closed the stream without a summary", ttft_ms
            )
        refused = summary.status == router_pb2.GENERATION_STATUS_REFUSED
        return Outcome(
            status="refused" if refused else "complete",
            content=self.text,
            model=summary.model or spec.model.id,
            provider=summary.provider,
            input_tokens=summary.usage.input_tokens,
            output_tokens=summary.usage.output_tokens,
            usage_estimated=summary.usage.estimated,
            cost_usd=Decimal(summary.cost_usd or "0"),
            finish_reason=_FINISH_REASONS.get(summary.finish_reason, "stop"),
            failure_reason=summary.refusal_reason if refused else "",
            time_to_first_token_ms=ttft_ms,
            history_messages_dropped=spec.plan.history_messages_dropped,
            trace_id=summary.trace_id or spec.trace_id,
        )

    def _partial_outcome(
        self, status: str, reason: str, ttft_ms: float | None
    ) -> Outcome:
        """An outcome without the router's summary: counts are estimated from
        characters (the history rule's estimate), and nothing is counted when
        no text arrived."""
        spec = self.spec
        text = self.text
        input_tokens = spec.plan.estimated_prompt_tokens if text else 0
        output_tokens = estimate_text_tokens(text)
        return Outcome(
            status=status,
            content=text,
            model=spec.model.id,
            provider=spec.model.provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            usage_estimated=True,
            cost_usd=estimate_cost_usd(spec.model, input_tokens, output_tokens),
            finish_reason="cancelled" if status == "cancelled" else "error",
            failure_reason=reason,
            time_to_first_token_ms=ttft_ms,
            history_messages_dropped=spec.plan.history_messages_dropped,
            trace_id=spec.trace_id,
        )

    async def _finish(self, store: ChatStore, outcome: Outcome) -> None:
        # The write must survive a second cancellation (server shutdown).
        try:
            self.record, error = await asyncio.shield(
                self._write_outcome(store, outcome)
            )
        except asyncio.CancelledError:
            logger.warning(
                "outcome write interrupted; the row stays streaming until restart",
                extra={"message_id": self.spec.message_id},
            )
        else:
            if error is not None:
                outcome = _unstored_outcome(outcome, error)
                self.unstored = outcome
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
            self._orphan_timer = None
        self.completed = completed_event(self.spec.message_id, outcome)
        self._notify()

    async def _write_outcome(
        self, store: ChatStore, outcome: Outcome
    ) -> tuple[MessageRecord | None, Exception | None]:
        """Stores `outcome`, retrying with backoff; returns (record, None) or,
        after the last attempt failed, (None, its error)."""
        delay_s = _FINISH_RETRY_DELAY_S
        for attempt in range(1, _FINISH_WRITE_ATTEMPTS + 1):
            try:
                return await store.finish_message(self.spec.message_id, outcome), None
            except UnavailableError as exc:
                error = exc
                logger.warning(
                    "could not store a generation's outcome",
                    extra={"message_id": self.spec.message_id, "attempt": attempt},
                )
            except Exception as exc:
                error = exc
                logger.exception(
                    "unexpected error storing a generation's outcome",
                    extra={"message_id": self.spec.message_id, "attempt": attempt},
                )
            if attempt < _FINISH_WRITE_ATTEMPTS:
                await asyncio.sleep(delay_s)
                delay_s *= 2
        logger.error(
            "gave up storing a generation's outcome for now; reporting it failed",
            extra={"message_id": self.spec.message_id},
        )
        return None, error

    async def _store_unstored(self, store: ChatStore) -> bool:
        """One try at storing the outcome `_finish` could not; True once
        stored (or once the row needs it no more)."""
        if self.unstored is None:
            return True
        try:
            record = await store.finish_message(self.message_id, self.unstored)
        except UnavailableError:
            logger.debug(
                "outcome still not stored", extra={"message_id": self.message_id}
            )
            return False
        except Exception:
            logger.exception(
                "unexpected error storing a generation's outcome",
                extra={"message_id": self.message_id},
            )
            return False
        # None: another try stored it first, or the row is gone (deleted).
        self.record = record or self.record
        self.unstored = None
        logger.info(
            "stored a generation's outcome after the database came back",
            extra={"message_id": self.message_id},
        )
        return True


class GenerationRegistry:
    """Live generations of this process, by message id."""

    def __init__(
        self,
        router: router_pb2_grpc.RouterServiceStub,
        store: ChatStore,
        *,
        orphan_grace_s: float = 5.0,
    ) -> None:
        """An empty registry.

        Args:
            router: Where answers are generated.
            store: Where outcomes are stored.
            orphan_grace_s: How long a generation nobody watches any more
                keeps running before it is cancelled; 0 cancels at once.

        Raises:
            ValueError: `orphan_grace_s` is negative.
        """
        if orphan_grace_s < 0:
            raise ValueError(
                f"orphan_grace_s={orphan_grace_s} is negative; use 0 to cancel "
                "at once or a number of seconds"
            )
        self._router = router
        self._store = store
        self._orphan_grace_s = orphan_grace_s
        self._draining = False
        self._live: dict[str, Generation] = {}
        self._settlers: set[asyncio.Task] = set()

    def start(self, spec: GenerationSpec) -> Generation:
        """Starts the generation's task; it leaves the registry when stored."""
        generation = Generation(spec)
        self._live[spec.message_id] = generation

        async def run() -> None:
            try:
                await generation.run(self._router, self._store)
            finally:
                if generation.unstored is None:
                    self._live.pop(spec.message_id, None)
                else:
                    self._settle_later(generation)

        generation.task = asyncio.create_task(
            run(), name=f"generation-{spec.message_id}"
        )
        return generation

    @contextlib.contextmanager
    def watching(
        self, generation: Generation, *, cancel_on_leave: bool = False
    ) -> Iterator[None]:
        """Counts the caller as a watcher of `generation` for the block.

        Leaving the block before the generation ended cancels it at once
        when `cancel_on_leave` is set (unless the server is draining), and
        otherwise, if no other watcher is left, after the orphan grace.
        """
        generation._attach()
        try:
            yield
        finally:
            self._leave(generation, cancel_on_leave)

    def begin_draining(self) -> None:
        """From now on an early end of a watch cancels nothing; `stop_all`
        fails what still runs once the server has drained."""
        self._draining = True
        logger.info(
            "draining; generations whose watchers leave run on until stopped",
            extra={"live_generations": len(self._live)},
        )

    def get(self, tenant: str, message_id: str) -> Generation | None:
        """The tenant's live generation with this id, if any."""
        generation = self._live.get(message_id)
        if generation is None or generation.spec.tenant != tenant:
            return None
        return generation

    def in_conversation(self, tenant: str, conversation_id: str) -> list[Generation]:
        """The tenant's live generations of one conversation."""
        return [
            g
            for g in self._live.values()
            if g.spec.tenant == tenant and g.spec.conversation_id == conversation_id
        ]

    async def store_unstored(self, tenant: str, conversation_id: str) -> bool:
        """Tries now to store the outcomes of the conversation's generations
        whose final write failed; True if one got stored, so a turn refused
        for a row still `streaming` may be retried."""
        stored = False
        for generation in self.in_conversation(tenant, conversation_id):
            if generation.unstored is not None:
                stored |= await generation._store_unstored(self._store)
        return stored

    async def stop_all(self, reason: str) -> None:
        """Fails every live generation with `reason` and waits for the writes.

        Outcomes still waiting for the database are given up: their rows
        stay `streaming`, and the next start marks them failed.
        """
        settlers = list(self._settlers)
        for settler in settlers:
            settler.cancel()
        await asyncio.gather(*settlers, return_exceptions=True)
        generations = list(self._live.values())
        for generation in generations:
            generation.cancel("failed", reason)
        for generation in generations:
            try:
                await generation.wait()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("generation ended with an error")

    def _settle_later(self, generation: Generation) -> None:
        """Retries the failed final write in the background until it is
        stored, with capped exponential backoff; the generation stays
        registered meanwhile."""

        async def settle() -> None:
            delay_s = _FINISH_RETRY_DELAY_S
            try:
                while not await generation._store_unstored(self._store):
                    await asyncio.sleep(delay_s)
                    delay_s = min(2 * delay_s, _SETTLE_RETRY_MAX_DELAY_S)
            finally:
                self._live.pop(generation.message_id, None)

        task = asyncio.create_task(settle(), name=f"settle-{generation.message_id}")
        self._settlers.add(task)
        task.add_done_callback(self._settlers.discard)

    def _leave(self, generation: Generation, cancel_on_leave: bool) -> None:
        orphaned = generation._detach()
        if generation.done or self._draining:
            return
        if cancel_on_leave or (orphaned and self._orphan_grace_s == 0):
            reason = _LEFT_AT_ONCE_REASON if cancel_on_leave else _orphan_reason(0)
            if generation.cancel("cancelled", reason):
                logger.info(
                    "client left mid-stream; generation cancelled",
                    extra={"message_id": generation.message_id},
                )
        elif orphaned:
            generation._cancel_after(
                self._orphan_grace_s, _orphan_reason(self._orphan_grace_s)
            )
            logger.info(
                "client left mid-stream; generation orphaned",
                extra={
                    "message_id": generation.message_id,
                    "grace_s": self._orphan_grace_s,
                },
            )


def _orphan_reason(grace_s: float) -> str:
    return (
        "the StreamChat call ended before the answer did (the client cancelled "
        f"or disconnected) and no ResumeGeneration attached within {grace_s:g} s"
    )


def _unstored_outcome(outcome: Outcome, error: Exception) -> Outcome:
    """What watchers are told when `outcome` could not be stored: failed,
    with the same text and usage."""
    if isinstance(error, UnavailableError):
        cause = str(error)
    else:
        cause = f"internal error in chat: {type(error).__name__}"
    return dataclasses.replace(
        outcome,
        status="failed",
        finish_reason="error",
        failure_reason=(
            f"the answer ended ({outcome.status}) but could not be stored: "
            f"{cause}. It is stored as failed once the database is back; "
            "send the turn again then"
        ),
    )


async def _save_progress(store: ChatStore, message_id: str, text: str) -> bool:
    """Stores partial text; a failure only delays it (the final write
    matters), so it is logged and reported, never raised."""
    try:
        await store.save_progress(message_id, text)
    except UnavailableError:
        logger.warning(
            "could not store partial text; will retry", extra={"message_id": message_id}
        )
        return False
    return True


def _generate_request(spec: GenerationSpec) -> router_pb2.GenerateRequest:
    request = router_pb2.GenerateRequest(
        model=spec.model.id,
        messages=[
            router_pb2.ChatMessage(role=_ROLES[m["role"]], content=m["content"])
            for m in spec.plan.messages
        ],
        guardrail=spec.guardrail,
        conversation_id=spec.conversation_id,
    )
    if spec.temperature is not None:
        request.temperature = spec.temperature
    if spec.max_output_tokens is not None:
        request.max_output_tokens = spec.max_output_tokens
    return request
