"""GenAI client metrics (OpenTelemetry GenAI semantic conventions)."""

from opentelemetry import metrics

from koverage.llmobs._semconv import (
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_TOKEN_TYPE,
    METRIC_OPERATION_DURATION,
    METRIC_TIME_TO_FIRST_CHUNK,
    METRIC_TOKEN_USAGE,
)

# Bucket boundaries the conventions recommend for each instrument.
_DURATION_BUCKETS_S = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
    40.96, 81.92,
)  # fmt: skip
_TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
    16777216, 67108864,
)  # fmt: skip
_METER_NAME = "koverage.llmobs"


class GenAIMetrics:
    """Records the GenAI client metrics for one finished model call.

    Instruments: `gen_ai.client.operation.duration` (s),
    `gen_ai.client.token.usage` ({token}, one point per token type) and
    `gen_ai.client.operation.time_to_first_chunk` (s, streaming calls only).
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        """Creates the instruments.

        Args:
            meter_provider: Where to record; the global provider by default.
        """
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter(_METER_NAME)
        self._duration = meter.create_histogram(
            METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS_S,
        )
        self._tokens = meter.create_histogram(
            METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._first_chunk = meter.create_histogram(
            METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS_S,
        )

    def record(
        self,
        *,
        operation: str,
        provider: str,
        request_model: str,
        duration_s: float,
        response_model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        time_to_first_chunk_s: float | None = None,
        error_type: str | None = None,
    ) -> None:
        """Records one call.

        Args:
            operation: `gen_ai.operation.name`.
            provider: `gen_ai.provider.name`.
            request_model: `gen_ai.request.model`.
            duration_s: Whole call, from request to last chunk or error.
            response_model: `gen_ai.response.model`, when the provider said.
            input_tokens: Prompt tokens; no usage point when None.
            output_tokens: Completion tokens; no usage point when None.
            time_to_first_chunk_s: For streamed calls that produced a chunk.
            error_type: `error.type` of a failed call; None on success.

        Raises:
            ValueError: A duration or token count is negative.
        """
        for name, value in (
            ("duration_s", duration_s),
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
            ("time_to_first_chunk_s", time_to_first_chunk_s),
        ):
            if value is not None and value < 0:
                raise ValueError(f"{name}={value!r}: must be >= 0")

        attributes = {
            GEN_AI_OPERATION_NAME: operation,
            GEN_AI_PROVIDER_NAME: provider,
            GEN_AI_REQUEST_MODEL: request_model,
        }
        if response_model:
            attributes[GEN_AI_RESPONSE_MODEL] = response_model
        if error_type:
            attributes[ERROR_TYPE] = error_type
        self._duration.record(duration_s, attributes)

        # A token count of None means unknown: no usage point is recorded.
        for token_type, count in (("input", input_tokens), ("output", output_tokens)):
            if count is not None:
                self._tokens.record(
                    count, {**attributes, GEN_AI_TOKEN_TYPE: token_type}
                )
        if time_to_first_chunk_s is not None:
            self._first_chunk.record(time_to_first_chunk_s, attributes)
