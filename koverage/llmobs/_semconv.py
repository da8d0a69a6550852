"""GenAI semantic-convention names, Koverage's own attributes, and LLM spans.

Attribute and metric names follow the OpenTelemetry GenAI semantic
conventions (development status; checked against semantic-conventions
v1.41 and the semantic-conventions-genai repository): `gen_ai.*` names for
what the conventions define, `koverage.*` for what they do not.
"""

import enum
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

# GenAI semantic conventions.
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
"""Seconds (float) from issuing the request to the first chunk of the stream."""
ERROR_TYPE = "error.type"

# Koverage attributes.
KOVERAGE_COST_USD = "koverage.cost_usd"
KOVERAGE_TIME_TO_FIRST_TOKEN_MS = "koverage.time_to_first_token_ms"
KOVERAGE_USAGE_ESTIMATED = "koverage.usage_estimated"
KOVERAGE_STATUS = "koverage.status"
KOVERAGE_TENANT = "koverage.tenant"
KOVERAGE_PROMPT_PREVIEW = "koverage.prompt_preview"
KOVERAGE_COMPLETION_PREVIEW = "koverage.completion_preview"
KOVERAGE_REDACTION_COUNTS = "koverage.redaction_counts"
"""JSON object string, kind -> values replaced, e.g. `{"email":1,"phone":2}`.

Set by `RedactingSpanProcessor` on every LLM span (`{}` when nothing was
found) and on any other span it changed."""
KOVERAGE_SIMULATED = "koverage.simulated"

# GenAI metric instruments.
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"


class LlmCallStatus(enum.StrEnum):
    """How a model call ended; the value of `koverage.status`."""

    COMPLETE = "complete"
    REFUSED = "refused"
    CANCELLED = "cancelled"
    ERROR = "error"


class GenAIOperation(enum.StrEnum):
    """Well-known values of `gen_ai.operation.name`."""

    CHAT = "chat"
    TEXT_COMPLETION = "text_completion"
    EMBEDDINGS = "embeddings"


def start_llm_span(
    tracer: trace.Tracer,
    operation: str,
    provider: str,
    model: str,
    *,
    conversation_id: str | None = None,
    tenant: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
    simulated: bool = False,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> trace.Span:
    """Starts a GenAI client span named `"{operation} {model}"`, kind CLIENT.

    The span is started as a child of the current context but is not made
    current; use `trace.use_span(span, end_on_exit=True)` around the call.

    Args:
        tracer: Tracer to start the span with.
        operation: `gen_ai.operation.name`, e.g. "chat".
        provider: `gen_ai.provider.name`, e.g. "openrouter".
        model: `gen_ai.request.model`, the model the caller asked for.
        conversation_id: `gen_ai.conversation.id`, when the call is part of one.
        tenant: `koverage.tenant`, the caller's tenant.
        temperature: `gen_ai.request.temperature`.
        max_tokens: `gen_ai.request.max_tokens`.
        seed: `gen_ai.request.seed`.
        simulated: `koverage.simulated`, true for the offline simulator.
        attributes: More attributes, set last (they win over the above).

    Returns:
        The started span.

    Raises:
        ValueError: `operation`, `provider` or `model` is empty.
    """
    for name, value in (
        ("operation", operation),
        ("provider", provider),
        ("model", model),
    ):
        if not value:
            raise ValueError(f"{name}={value!r}: must be a non-empty string")

    initial: dict[str, AttributeValue] = {
        GEN_AI_OPERATION_NAME: operation,
        GEN_AI_PROVIDER_NAME: provider,
        GEN_AI_REQUEST_MODEL: model,
        KOVERAGE_SIMULATED: simulated,
    }
    optional = (
        (GEN_AI_CONVERSATION_ID, conversation_id),
        (KOVERAGE_TENANT, tenant),
        (GEN_AI_REQUEST_TEMPERATURE, temperature),
        (GEN_AI_REQUEST_MAX_TOKENS, max_tokens),
        (GEN_AI_REQUEST_SEED, seed),
    )
    for key, value in optional:
        if value is not None:
            initial[key] = value
    if attributes:
        initial.update(attributes)

    return tracer.start_span(
        f"{operation} {model}", kind=trace.SpanKind.CLIENT, attributes=initial
    )
