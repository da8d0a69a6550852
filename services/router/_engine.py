"""The router's core: one generation from request to summary.

Order of work for one request: validate; look the model up; screen the
prompt (guardrail); walk the fallback chain, skipping providers whose circuit
is open; per candidate, retry transient failures with jittered backoff until
the first token; then stream, scrubbing PII when asked; finally price the
call and summarise it. Every provider attempt is a GenAI client span.
"""

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from koverage.errors import DeadlineExceededError, InvalidArgumentError
from koverage.llmobs import (
    ERROR_TYPE,
    GEN_AI_CONVERSATION_ID,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_SEED,
    GEN_AI_REQUEST_TEMPERATURE,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    KOVERAGE_COMPLETION_PREVIEW,
    KOVERAGE_COST_USD,
    KOVERAGE_PROMPT_PREVIEW,
    KOVERAGE_SIMULATED,
    KOVERAGE_STATUS,
    KOVERAGE_TENANT,
    KOVERAGE_TIME_TO_FIRST_TOKEN_MS,
    KOVERAGE_USAGE_ESTIMATED,
    GenAIMetrics,
    GenAIOperation,
    LlmCallStatus,
)
from services.router._breaker import BreakerState, CircuitBreaker
from services.router._catalog import Catalog, ModelEntry
from services.router._errors import (
    FirstTokenTimeoutError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from services.router._guardrail import OutputScrubber, screen_prompt
from services.router.providers import (
    FinishReport,
    Provider,
    ProviderCall,
    TextChunk,
    UsageReport,
)

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer("koverage.router")

_ROLES = frozenset({"system", "user", "assistant"})
_MAX_MESSAGES = 1024
_MAX_PROMPT_CHARS = 2_000_000
_ATTEMPTS_PER_MODEL = 3
_PREVIEW_CHARS = 256


@dataclasses.dataclass(frozen=True)
class GenerateParams:
    """A validated generation request, independent of the wire format."""

    model: str
    messages: tuple[dict[str, str], ...]
    temperature: float | None = None
    max_output_tokens: int | None = None
    seed: int | None = None
    guardrail: bool = False
    conversation_id: str = ""
    fallback_models: tuple[str, ...] = ()
    disable_fallback: bool = False
    tenant: str = ""


@dataclasses.dataclass(frozen=True)
class Delta:
    """A piece of answer text sent to the caller."""

    text: str
    index: int


@dataclasses.dataclass(frozen=True)
class Summary:
    """The last event of a generation."""

    status: str  # "complete" | "refused"
    model: str
    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: Decimal = Decimal(0)
    finish_reason: str = ""
    ttft_s: float | None = None
    duration_s: float = 0.0
    refusal_reason: str = ""
    trace_id: str = ""
    fallbacks_tried: tuple[str, ...] = ()
    output_redactions: int = 0
    simulated: bool = False


class Router:
    """Routes generations to providers. One instance per process."""

    def __init__(
        self,
        catalog: Catalog,
        providers: dict[str, Provider],
        *,
        first_token_timeout_s: float = 30.0,
        breaker_factory: Callable[[], CircuitBreaker] = CircuitBreaker,
        retry_wait_max_s: float = 1.0,
        metrics: GenAIMetrics | None = None,
    ) -> None:
        self.catalog = catalog
        self._providers = providers
        self._first_token_timeout_s = first_token_timeout_s
        self._breakers: dict[str, CircuitBreaker] = {
            name: breaker_factory() for name in providers
        }
        self._retry_wait_max_s = retry_wait_max_s
        self._metrics = metrics or GenAIMetrics()

    def breaker(self, provider: str) -> CircuitBreaker:
        return self._breakers[provider]

    async def generate(
        self, params: GenerateParams, *, deadline_s: float | None = None
    ) -> AsyncIterator[Delta | Summary]:
        """Streams deltas then one Summary.

        Args:
            params: the request.
            deadline_s: seconds the caller will wait in all; None for no limit.

        Raises:
            InvalidArgumentError, ModelNotFoundError, ProviderRateLimitedError,
            ProviderUnavailableError, StreamBrokenError, DeadlineExceededError.
        """
        started = time.perf_counter()
        _validate(params)
        entry = self.catalog.get(params.model)
        fallbacks = (
            ()
            if params.disable_fallback
            else (params.fallback_models or entry.fallback_models)
        )
        chain = [entry] + [self.catalog.get(m) for m in fallbacks]

        if params.guardrail:
            screening = screen_prompt(params.messages)
            if screening.refused:
                yield self._refuse(params, entry, screening, started)
                return

        deadline = None if deadline_s is None else time.monotonic() + deadline_s
        try:
            async for event in self._walk_chain(params, chain, started, deadline):
                yield event
        except TimeoutError:
            raise DeadlineExceededError(
                f"deadline of {deadline_s:.3f}s passed before the answer finished"
            ) from None

    async def _walk_chain(self, params, chain, started, deadline):
        tried: list[str] = []
        last_error: Exception | None = None
        for entry in chain:
            provider = self._providers.get(entry.provider_key)
            if provider is None:
                last_error = ProviderRejectedError(
                    f"provider {entry.provider!r} for model {entry.id!r} is not "
                    f"configured (set its KOVERAGE_* key or URL)"
                )
                tried.append(entry.id)
                continue
            breaker = self._breakers[entry.provider_key]
            if not breaker.allow():
                last_error = ProviderUnavailableError(
                    f"circuit for provider {entry.provider!r} is open after repeated "
                    f"failures; retry in a few seconds"
                )
                tried.append(entry.id)
                continue
            try:
                async for event in self._serve(
                    params, entry, provider, breaker, started, deadline, tuple(tried)
                ):
                    yield event
                return
            except (ProviderUnavailableError, ProviderRateLimitedError) as exc:
                # Raised only before the first token: safe to fall back.
                logger.warning(
                    "provider failed before first token; falling back",
                    extra={
                        "model": entry.id,
                        "provider": entry.provider,
                        "error_type": type(exc).__name__,
                    },
                )
                last_error = exc
                tried.append(entry.id)
        assert last_error is not None
        raise last_error

    async def _serve(self, params, entry, provider, breaker, started, deadline, tried):
        call = ProviderCall(
            provider_model=entry.provider_model,
            messages=params.messages,
            temperature=params.temperature,
            max_output_tokens=params.max_output_tokens,
            seed=params.seed,
            persona=entry.persona,
            guardrail=params.guardrail,
        )
        with _tracer.start_as_current_span(
            f"chat {entry.id}",
            kind=SpanKind.CLIENT,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            _set_request_attributes(span, params, entry)
            try:
                stream, head = await self._open_with_retries(
                    provider, breaker, entry, call, deadline
                )
            except BaseException as exc:
                _set_error(span, exc)
                self._record_failure(entry, started, exc)
                raise
            async for event in self._stream(
                params, entry, span, stream, head, started, deadline, tried
            ):
                yield event

    async def _open_with_retries(self, provider, breaker, entry, call, deadline):
        """Opens the stream and reads up to its first token, retrying transient
        failures with jittered exponential backoff (never after a token)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(_ATTEMPTS_PER_MODEL),
            wait=wait_random_exponential(multiplier=0.05, max=self._retry_wait_max_s),
            retry=retry_if_exception(
                lambda exc: _is_retryable(exc, self._retry_wait_max_s)
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                _check_deadline(deadline)
                try:
                    opened = await self._open(provider, entry, call, deadline)
                except ProviderRateLimitedError:
                    breaker.record_success()  # throttled, but up
                    raise
                except ProviderUnavailableError:
                    breaker.record_failure()
                    if breaker.state is BreakerState.OPEN:
                        raise ProviderUnavailableError(
                            f"circuit for provider {entry.provider!r} opened after "
                            f"repeated failures",
                            retryable=False,
                        ) from None
                    raise
                except BaseException:
                    breaker.release()
                    raise
                breaker.record_success()
                return opened
        raise AssertionError("unreachable")  # pragma: no cover

    async def _open(self, provider, entry, call, deadline):
        timeout_s = entry.first_token_timeout_s or self._first_token_timeout_s
        if deadline is not None:
            timeout_s = min(timeout_s, max(0.0, deadline - time.monotonic()))
        stream = provider.stream(call)
        head = []
        try:
            async with asyncio.timeout(timeout_s):
                async for event in stream:
                    head.append(event)
                    if isinstance(event, TextChunk):
                        break
        except TimeoutError:
            await stream.aclose()
            if deadline is not None and time.monotonic() >= deadline:
                raise
            raise FirstTokenTimeoutError(
                f"{entry.provider} sent no first token for {entry.id} within "
                f"{timeout_s:.1f}s"
            ) from None
        except BaseException:
            await stream.aclose()
            raise
        return stream, head

    async def _stream(
        self, params, entry, span, stream, head, started, deadline, tried
    ):
        scrubber = OutputScrubber() if params.guardrail else None
        usage: UsageReport | None = None
        finish = FinishReport("stop")
        answer: list[str] = []
        ttft_s = None
        index = 0

        async def events():
            for event in head:
                yield event
            remaining = (
                None if deadline is None else max(0.0, deadline - time.monotonic())
            )
            async with asyncio.timeout(remaining):
                async for event in stream:
                    yield event

        try:
            async for event in events():
                if isinstance(event, TextChunk):
                    answer.append(event.text)
                    text = scrubber.feed(event.text) if scrubber else event.text
                    if text:
                        if ttft_s is None:
                            ttft_s = time.perf_counter() - started
                        yield Delta(text, index)
                        index += 1
                elif isinstance(event, UsageReport):
                    usage = event
                elif isinstance(event, FinishReport):
                    finish = event
            if scrubber:
                tail = scrubber.finish()
                if tail:
                    if ttft_s is None:
                        ttft_s = time.perf_counter() - started
                    yield Delta(tail, index)
        except BaseException as exc:
            _set_error(span, exc)
            self._record_failure(entry, started, exc)
            raise
        finally:
            await stream.aclose()

        duration_s = time.perf_counter() - started
        text = "".join(answer)
        if usage is None:
            input_tokens = sum(_estimate_tokens(m["content"]) for m in params.messages)
            output_tokens = _estimate_tokens(text)
        else:
            input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
        # A provider's own guardrail refusal (finish reason "refused") is a
        # refused generation, like one refused by the router's guardrail.
        refused = finish.reason == "refused"
        summary = Summary(
            status="refused" if refused else "complete",
            model=entry.id,
            provider=entry.provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            usage_estimated=usage is None,
            cost_usd=entry.cost_usd(input_tokens, output_tokens, duration_s),
            finish_reason=finish.reason,
            ttft_s=ttft_s,
            duration_s=duration_s,
            refusal_reason=finish.refusal_reason if refused else "",
            trace_id=format(span.get_span_context().trace_id, "032x"),
            fallbacks_tried=tried,
            output_redactions=scrubber.redactions if scrubber else 0,
            simulated=entry.simulated,
        )
        _set_result_attributes(span, summary, finish, text)
        self._metrics.record(
            operation=GenAIOperation.CHAT,
            provider=entry.provider,
            request_model=entry.id,
            response_model=finish.response_model or entry.id,
            duration_s=duration_s,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            time_to_first_chunk_s=ttft_s,
        )
        yield summary

    def _record_failure(
        self, entry: ModelEntry, started: float, exc: BaseException
    ) -> None:
        cancelled = isinstance(exc, (asyncio.CancelledError, GeneratorExit))
        self._metrics.record(
            operation=GenAIOperation.CHAT,
            provider=entry.provider,
            request_model=entry.id,
            duration_s=time.perf_counter() - started,
            error_type="cancelled" if cancelled else type(exc).__name__,
        )

    def _refuse(self, params, entry, screening, started) -> Summary:
        with _tracer.start_as_current_span(
            f"chat {entry.id}", kind=SpanKind.CLIENT
        ) as span:
            _set_request_attributes(span, params, entry)
            span.set_attribute(KOVERAGE_STATUS, LlmCallStatus.REFUSED)
            span.set_attribute("koverage.guardrail.rule", screening.rule)
            span.set_attribute(GEN_AI_RESPONSE_FINISH_REASONS, ["refused"])
            trace_id = format(span.get_span_context().trace_id, "032x")
        return Summary(
            status="refused",
            model=entry.id,
            provider=entry.provider,
            finish_reason="refused",
            duration_s=time.perf_counter() - started,
            refusal_reason=screening.reason,
            trace_id=trace_id,
            simulated=entry.simulated,
        )


def _validate(params: GenerateParams) -> None:
    if not params.model:
        raise InvalidArgumentError("model is required (see ListModels)", field="model")
    if not params.messages:
        raise InvalidArgumentError("at least one message is required", field="messages")
    if len(params.messages) > _MAX_MESSAGES:
        raise InvalidArgumentError(
            f"{len(params.messages)} messages; at most {_MAX_MESSAGES} allowed",
            field="messages",
        )
    total = 0
    for i, message in enumerate(params.messages):
        if message["role"] not in _ROLES:
            raise InvalidArgumentError(
                f"messages[{i}].role must be system, user or assistant",
                field=f"messages[{i}].role",
            )
        total += len(message["content"])
    if total > _MAX_PROMPT_CHARS:
        raise InvalidArgumentError(
            f"prompt is {total} characters; at most {_MAX_PROMPT_CHARS} allowed",
            field="messages",
        )
    if params.temperature is not None and not 0.0 <= params.temperature <= 2.0:
        raise InvalidArgumentError(
            f"temperature={params.temperature} must be in [0, 2]", field="temperature"
        )
    if params.max_output_tokens is not None and params.max_output_tokens < 1:
        raise InvalidArgumentError(
            "max_output_tokens must be at least 1 when set", field="max_output_tokens"
        )
    if params.disable_fallback and params.fallback_models:
        raise InvalidArgumentError(
            "fallback_models must be empty when disable_fallback is set",
            field="fallback_models",
        )


def _is_retryable(exc: BaseException, wait_max_s: float) -> bool:
    if isinstance(exc, ProviderRateLimitedError):
        # A Retry-After longer than our backoff means "not soon": fall back
        # (or report RESOURCE_EXHAUSTED) instead of hammering the provider.
        return exc.retry_after_s is None or exc.retry_after_s <= wait_max_s
    if isinstance(exc, FirstTokenTimeoutError):
        return False  # a cold start: fall back rather than wait again
    return isinstance(exc, ProviderUnavailableError) and exc.retryable


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError


def _estimate_tokens(text: str) -> int:
    """Rough count (about four characters a token) when usage is missing."""
    return (len(text) + 3) // 4


def _set_request_attributes(span, params: GenerateParams, entry: ModelEntry) -> None:
    span.set_attribute(GEN_AI_OPERATION_NAME, "chat")
    span.set_attribute(GEN_AI_PROVIDER_NAME, entry.provider)
    span.set_attribute(GEN_AI_REQUEST_MODEL, entry.id)
    span.set_attribute(KOVERAGE_SIMULATED, entry.simulated)
    span.set_attribute("koverage.guardrail.enabled", params.guardrail)
    if params.tenant:
        span.set_attribute(KOVERAGE_TENANT, params.tenant)
    if params.conversation_id:
        span.set_attribute(GEN_AI_CONVERSATION_ID, params.conversation_id)
    if params.temperature is not None:
        span.set_attribute(GEN_AI_REQUEST_TEMPERATURE, params.temperature)
    if params.max_output_tokens is not None:
        span.set_attribute(GEN_AI_REQUEST_MAX_TOKENS, params.max_output_tokens)
    if params.seed is not None:
        span.set_attribute(GEN_AI_REQUEST_SEED, params.seed)
    last_user = next(
        (m["content"] for m in reversed(params.messages) if m["role"] == "user"), ""
    )
    span.set_attribute(KOVERAGE_PROMPT_PREVIEW, last_user[:_PREVIEW_CHARS])


def _set_result_attributes(
    span, summary: Summary, finish: FinishReport, text: str
) -> None:
    span.set_attribute(GEN_AI_RESPONSE_MODEL, finish.response_model or summary.model)
    span.set_attribute(GEN_AI_RESPONSE_FINISH_REASONS, [summary.finish_reason])
    span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, summary.input_tokens)
    span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, summary.output_tokens)
    span.set_attribute(KOVERAGE_USAGE_ESTIMATED, summary.usage_estimated)
    span.set_attribute(KOVERAGE_COST_USD, str(summary.cost_usd))
    span.set_attribute(
        KOVERAGE_STATUS,
        LlmCallStatus.REFUSED
        if summary.status == "refused"
        else LlmCallStatus.COMPLETE,
    )
    if summary.ttft_s is not None:
        span.set_attribute(KOVERAGE_TIME_TO_FIRST_TOKEN_MS, summary.ttft_s * 1000)
        span.set_attribute(GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, summary.ttft_s)
    span.set_attribute(KOVERAGE_COMPLETION_PREVIEW, text[:_PREVIEW_CHARS])


def _set_error(span, exc: BaseException) -> None:
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        span.set_attribute(KOVERAGE_STATUS, LlmCallStatus.CANCELLED)
        span.set_attribute(ERROR_TYPE, "cancelled")
        return
    span.set_attribute(KOVERAGE_STATUS, LlmCallStatus.ERROR)
    span.set_attribute(ERROR_TYPE, type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
