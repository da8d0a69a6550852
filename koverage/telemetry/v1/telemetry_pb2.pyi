import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TimeWindow(_message.Message):
    __slots__ = ("start_time", "end_time")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Percentiles(_message.Message):
    __slots__ = ("p50_ms", "p95_ms", "p99_ms", "sample_count")
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    sample_count: int
    def __init__(self, p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., sample_count: _Optional[int] = ...) -> None: ...

class GetLatencyRequest(_message.Message):
    __slots__ = ("window", "model")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    window: TimeWindow
    model: str
    def __init__(self, window: _Optional[_Union[TimeWindow, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class GetLatencyResponse(_message.Message):
    __slots__ = ("latency", "time_to_first_token")
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    latency: Percentiles
    time_to_first_token: Percentiles
    def __init__(self, latency: _Optional[_Union[Percentiles, _Mapping]] = ..., time_to_first_token: _Optional[_Union[Percentiles, _Mapping]] = ...) -> None: ...

class GetThroughputRequest(_message.Message):
    __slots__ = ("window", "bucket")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    window: TimeWindow
    bucket: _duration_pb2.Duration
    def __init__(self, window: _Optional[_Union[TimeWindow, _Mapping]] = ..., bucket: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ThroughputBucket(_message.Message):
    __slots__ = ("start_time", "call_count", "output_tokens")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    CALL_COUNT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    call_count: int
    output_tokens: int
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., call_count: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class GetThroughputResponse(_message.Message):
    __slots__ = ("call_count", "calls_per_second", "output_tokens_per_second", "buckets")
    CALL_COUNT_FIELD_NUMBER: _ClassVar[int]
    CALLS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    call_count: int
    calls_per_second: float
    output_tokens_per_second: float
    buckets: _containers.RepeatedCompositeFieldContainer[ThroughputBucket]
    def __init__(self, call_count: _Optional[int] = ..., calls_per_second: _Optional[float] = ..., output_tokens_per_second: _Optional[float] = ..., buckets: _Optional[_Iterable[_Union[ThroughputBucket, _Mapping]]] = ...) -> None: ...

class GetErrorRateRequest(_message.Message):
    __slots__ = ("window",)
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    window: TimeWindow
    def __init__(self, window: _Optional[_Union[TimeWindow, _Mapping]] = ...) -> None: ...

class GetErrorRateResponse(_message.Message):
    __slots__ = ("call_count", "error_count", "refused_count", "error_rate", "refusal_rate", "errors_by_type")
    class ErrorsByTypeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CALL_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_RATE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_BY_TYPE_FIELD_NUMBER: _ClassVar[int]
    call_count: int
    error_count: int
    refused_count: int
    error_rate: float
    refusal_rate: float
    errors_by_type: _containers.ScalarMap[str, int]
    def __init__(self, call_count: _Optional[int] = ..., error_count: _Optional[int] = ..., refused_count: _Optional[int] = ..., error_rate: _Optional[float] = ..., refusal_rate: _Optional[float] = ..., errors_by_type: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetCostByModelRequest(_message.Message):
    __slots__ = ("window",)
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    window: TimeWindow
    def __init__(self, window: _Optional[_Union[TimeWindow, _Mapping]] = ...) -> None: ...

class ModelCost(_message.Message):
    __slots__ = ("model", "provider", "call_count", "input_tokens", "output_tokens", "cost_usd")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CALL_COUNT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    call_count: int
    input_tokens: int
    output_tokens: int
    cost_usd: str
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., call_count: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_usd: _Optional[str] = ...) -> None: ...

class GetCostByModelResponse(_message.Message):
    __slots__ = ("models", "total_cost_usd")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_USD_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelCost]
    total_cost_usd: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelCost, _Mapping]]] = ..., total_cost_usd: _Optional[str] = ...) -> None: ...

class GetTraceWaterfallRequest(_message.Message):
    __slots__ = ("trace_id", "conversation_id")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    conversation_id: str
    def __init__(self, trace_id: _Optional[str] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class WaterfallSpan(_message.Message):
    __slots__ = ("trace_id", "span_id", "parent_span_id", "name", "service_name", "start_time", "duration", "depth", "status", "attributes", "time_to_first_token")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service_name: str
    start_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    depth: int
    status: str
    attributes: _containers.ScalarMap[str, str]
    time_to_first_token: _duration_pb2.Duration
    def __init__(self, trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., name: _Optional[str] = ..., service_name: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., depth: _Optional[int] = ..., status: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., time_to_first_token: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetTraceWaterfallResponse(_message.Message):
    __slots__ = ("spans",)
    SPANS_FIELD_NUMBER: _ClassVar[int]
    spans: _containers.RepeatedCompositeFieldContainer[WaterfallSpan]
    def __init__(self, spans: _Optional[_Iterable[_Union[WaterfallSpan, _Mapping]]] = ...) -> None: ...
