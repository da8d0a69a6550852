"""Beacon's in-process LLM observability: redaction, GenAI spans and metrics.

Every Koverage process installs `RedactingSpanProcessor` in front of its
batch export processor, so PII and credentials are replaced before a span is
queued; the router starts model-call spans with `start_llm_span` and records
`GenAIMetrics`. The ingest service checks again with `contains_pii`.
"""

from koverage.llmobs._drops import (
    SPANS_DROPPED,
    DropReason,
    count_dropped_spans,
    spans_dropped,
)
from koverage.llmobs._genai_metrics import GenAIMetrics
from koverage.llmobs._processor import CountingSpanExporter, RedactingSpanProcessor
from koverage.llmobs._redactor import (
    KINDS,
    contains_pii,
    find_pii,
    iban_valid,
    luhn_valid,
    redact,
)
from koverage.llmobs._semconv import (
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
    GEN_AI_TOKEN_TYPE,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    KOVERAGE_COMPLETION_PREVIEW,
    KOVERAGE_COST_USD,
    KOVERAGE_PROMPT_PREVIEW,
    KOVERAGE_REDACTION_COUNTS,
    KOVERAGE_SIMULATED,
    KOVERAGE_STATUS,
    KOVERAGE_TENANT,
    KOVERAGE_TIME_TO_FIRST_TOKEN_MS,
    KOVERAGE_USAGE_ESTIMATED,
    METRIC_OPERATION_DURATION,
    METRIC_TIME_TO_FIRST_CHUNK,
    METRIC_TOKEN_USAGE,
    GenAIOperation,
    LlmCallStatus,
    start_llm_span,
)

__all__ = [
    "ERROR_TYPE",
    "GEN_AI_CONVERSATION_ID",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MAX_TOKENS",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_REQUEST_SEED",
    "GEN_AI_REQUEST_TEMPERATURE",
    "GEN_AI_RESPONSE_FINISH_REASONS",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_TOKEN_TYPE",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "KINDS",
    "KOVERAGE_COMPLETION_PREVIEW",
    "KOVERAGE_COST_USD",
    "KOVERAGE_PROMPT_PREVIEW",
    "KOVERAGE_REDACTION_COUNTS",
    "KOVERAGE_SIMULATED",
    "KOVERAGE_STATUS",
    "KOVERAGE_TENANT",
    "KOVERAGE_TIME_TO_FIRST_TOKEN_MS",
    "KOVERAGE_USAGE_ESTIMATED",
    "METRIC_OPERATION_DURATION",
    "METRIC_TIME_TO_FIRST_CHUNK",
    "METRIC_TOKEN_USAGE",
    "SPANS_DROPPED",
    "CountingSpanExporter",
    "DropReason",
    "GenAIMetrics",
    "GenAIOperation",
    "LlmCallStatus",
    "RedactingSpanProcessor",
    "contains_pii",
    "count_dropped_spans",
    "find_pii",
    "iban_valid",
    "luhn_valid",
    "redact",
    "spans_dropped",
    "start_llm_span",
]
