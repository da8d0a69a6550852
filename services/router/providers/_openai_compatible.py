"""Any OpenAI-compatible chat completions endpoint: OpenRouter, Modal vLLM,
vLLM, Ollama, llama.cpp server."""

import logging
from collections.abc import AsyncIterator

import httpx
import openai

from services.router._errors import (
    ProviderRateLimitedError,
    ProviderRejectedError,
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

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 5.0
# Read timeout between bytes of a stream; first-token and caller deadlines
# are enforced above this layer.
_READ_TIMEOUT_S = 120.0


class OpenAICompatibleProvider:
    """Streams chat completions through the OpenAI SDK.

    Retries are the router's job, so the SDK's own are off.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str,
        *,
        default_headers: dict[str, str] | None = None,
    ) -> None:
        if not base_url:
            raise ValueError(f"provider {name!r}: base_url is empty")
        self.name = name
        self.base_url = base_url
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "unused",
            max_retries=0,
            timeout=httpx.Timeout(_READ_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S),
            default_headers=default_headers,
        )

    async def close(self) -> None:
        await self._client.close()

    async def stream(self, call: ProviderCall) -> AsyncIterator[ProviderEvent]:
        kwargs = {
            "model": call.provider_model,
            "messages": list(call.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if call.temperature is not None:
            kwargs["temperature"] = call.temperature
        if call.max_output_tokens is not None:
            kwargs["max_tokens"] = call.max_output_tokens
        if call.seed is not None:
            kwargs["seed"] = call.seed

        try:
            response = await self._client.chat.completions.create(**kwargs)
        except openai.APIError as exc:
            raise self._translate(exc) from exc

        # `async with` closes the HTTP response on every exit, including task
        # cancellation: that is what tells the upstream to stop generating.
        started = finished = False
        async with response as chunks:
            try:
                async for chunk in chunks:
                    for event in _events_of(chunk):
                        started = started or isinstance(event, TextChunk)
                        finished = finished or isinstance(event, FinishReport)
                        yield event
            except (openai.APIError, httpx.HTTPError) as exc:
                if started:
                    raise StreamBrokenError(
                        f"{self.name} dropped the stream mid-answer: {_brief(exc)}"
                    ) from exc
                raise self._translate(exc) from exc
        # A stream that ends without a finish reason was cut, not finished:
        # some servers close the connection cleanly when they crash.
        if not finished:
            message = f"{self.name} closed the stream without a finish reason"
            if started:
                raise StreamBrokenError(message)
            raise ProviderUnavailableError(message)

    def _translate(self, exc: Exception) -> Exception:
        if isinstance(exc, openai.RateLimitError):
            return ProviderRateLimitedError(
                f"{self.name} rate-limited the call; retry later",
                retry_after_s=_retry_after_s(exc.response),
            )
        if isinstance(exc, openai.APIStatusError) and exc.status_code < 500:
            # 4xx other than 429: our request was wrong for this provider
            # (bad key, unknown model name). Not worth retrying, but the
            # caller's own input was fine, so it is the provider that is
            # unusable for now.
            return ProviderRejectedError(
                f"{self.name} rejected the call with HTTP {exc.status_code}: "
                f"{_brief(exc)}; check its API key and model name in the catalog"
            )
        return ProviderUnavailableError(f"{self.name} is unavailable: {_brief(exc)}")


def _events_of(chunk) -> list[ProviderEvent]:
    events: list[ProviderEvent] = []
    for choice in chunk.choices or ():
        text = choice.delta.content if choice.delta else None
        if text:
            events.append(TextChunk(text))
        if choice.finish_reason:
            events.append(FinishReport(choice.finish_reason, chunk.model or ""))
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        events.append(
            UsageReport(usage.prompt_tokens or 0, usage.completion_tokens or 0)
        )
    return events


def _retry_after_s(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    raw = response.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None


def _brief(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
