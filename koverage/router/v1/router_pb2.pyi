import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_SYSTEM: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_ASSISTANT: _ClassVar[Role]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_CONTENT_FILTER: _ClassVar[FinishReason]
    FINISH_REASON_REFUSED: _ClassVar[FinishReason]

class GenerationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GENERATION_STATUS_UNSPECIFIED: _ClassVar[GenerationStatus]
    GENERATION_STATUS_COMPLETE: _ClassVar[GenerationStatus]
    GENERATION_STATUS_REFUSED: _ClassVar[GenerationStatus]
ROLE_UNSPECIFIED: Role
ROLE_SYSTEM: Role
ROLE_USER: Role
ROLE_ASSISTANT: Role
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_CONTENT_FILTER: FinishReason
FINISH_REASON_REFUSED: FinishReason
GENERATION_STATUS_UNSPECIFIED: GenerationStatus
GENERATION_STATUS_COMPLETE: GenerationStatus
GENERATION_STATUS_REFUSED: GenerationStatus

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: Role
    content: str
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., content: _Optional[str] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "messages", "temperature", "max_output_tokens", "seed", "guardrail", "conversation_id", "fallback_models", "disable_fallback")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GUARDRAIL_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_MODELS_FIELD_NUMBER: _ClassVar[int]
    DISABLE_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    temperature: float
    max_output_tokens: int
    seed: int
    guardrail: bool
    conversation_id: str
    fallback_models: _containers.RepeatedScalarFieldContainer[str]
    disable_fallback: bool
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., temperature: _Optional[float] = ..., max_output_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., guardrail: _Optional[bool] = ..., conversation_id: _Optional[str] = ..., fallback_models: _Optional[_Iterable[str]] = ..., disable_fallback: _Optional[bool] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("delta", "summary")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    delta: TextDelta
    summary: GenerationSummary
    def __init__(self, delta: _Optional[_Union[TextDelta, _Mapping]] = ..., summary: _Optional[_Union[GenerationSummary, _Mapping]] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("text", "index")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    text: str
    index: int
    def __init__(self, text: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "estimated")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    estimated: bool
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., estimated: _Optional[bool] = ...) -> None: ...

class GenerationSummary(_message.Message):
    __slots__ = ("usage", "cost_usd", "finish_reason", "provider", "model", "time_to_first_token", "duration", "status", "refusal_reason", "trace_id", "fallbacks_tried", "output_redactions", "simulated")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_REASON_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_TRIED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REDACTIONS_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    usage: Usage
    cost_usd: str
    finish_reason: FinishReason
    provider: str
    model: str
    time_to_first_token: _duration_pb2.Duration
    duration: _duration_pb2.Duration
    status: GenerationStatus
    refusal_reason: str
    trace_id: str
    fallbacks_tried: _containers.RepeatedScalarFieldContainer[str]
    output_redactions: int
    simulated: bool
    def __init__(self, usage: _Optional[_Union[Usage, _Mapping]] = ..., cost_usd: _Optional[str] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., time_to_first_token: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., status: _Optional[_Union[GenerationStatus, str]] = ..., refusal_reason: _Optional[str] = ..., trace_id: _Optional[str] = ..., fallbacks_tried: _Optional[_Iterable[str]] = ..., output_redactions: _Optional[int] = ..., simulated: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "provider", "provider_model", "input_usd_per_mtok", "output_usd_per_mtok", "gpu_usd_per_second", "context_window_tokens", "fallback_models", "simulated")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    GPU_USD_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_MODELS_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider: str
    provider_model: str
    input_usd_per_mtok: str
    output_usd_per_mtok: str
    gpu_usd_per_second: str
    context_window_tokens: int
    fallback_models: _containers.RepeatedScalarFieldContainer[str]
    simulated: bool
    def __init__(self, id: _Optional[str] = ..., provider: _Optional[str] = ..., provider_model: _Optional[str] = ..., input_usd_per_mtok: _Optional[str] = ..., output_usd_per_mtok: _Optional[str] = ..., gpu_usd_per_second: _Optional[str] = ..., context_window_tokens: _Optional[int] = ..., fallback_models: _Optional[_Iterable[str]] = ..., simulated: _Optional[bool] = ...) -> None: ...
