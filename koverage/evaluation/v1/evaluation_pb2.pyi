import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState

class RunSpec(_message.Message):
    __slots__ = ("models", "judges", "suites", "items_per_suite", "temperatures", "seed", "guardrail_arms", "concurrency")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    JUDGES_FIELD_NUMBER: _ClassVar[int]
    SUITES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PER_SUITE_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GUARDRAIL_ARMS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    judges: _containers.RepeatedScalarFieldContainer[str]
    suites: _containers.RepeatedScalarFieldContainer[str]
    items_per_suite: int
    temperatures: _containers.RepeatedScalarFieldContainer[float]
    seed: int
    guardrail_arms: _containers.RepeatedScalarFieldContainer[str]
    concurrency: int
    def __init__(self, models: _Optional[_Iterable[str]] = ..., judges: _Optional[_Iterable[str]] = ..., suites: _Optional[_Iterable[str]] = ..., items_per_suite: _Optional[int] = ..., temperatures: _Optional[_Iterable[float]] = ..., seed: _Optional[int] = ..., guardrail_arms: _Optional[_Iterable[str]] = ..., concurrency: _Optional[int] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ...) -> None: ...

class StartRunResponse(_message.Message):
    __slots__ = ("started", "progress", "finished")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    started: RunStarted
    progress: RunProgress
    finished: RunFinished
    def __init__(self, started: _Optional[_Union[RunStarted, _Mapping]] = ..., progress: _Optional[_Union[RunProgress, _Mapping]] = ..., finished: _Optional[_Union[RunFinished, _Mapping]] = ...) -> None: ...

class RunStarted(_message.Message):
    __slots__ = ("run_id", "total_calls")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CALLS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    total_calls: int
    def __init__(self, run_id: _Optional[str] = ..., total_calls: _Optional[int] = ...) -> None: ...

class RunProgress(_message.Message):
    __slots__ = ("completed_calls", "failed_calls", "total_calls")
    COMPLETED_CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILED_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CALLS_FIELD_NUMBER: _ClassVar[int]
    completed_calls: int
    failed_calls: int
    total_calls: int
    def __init__(self, completed_calls: _Optional[int] = ..., failed_calls: _Optional[int] = ..., total_calls: _Optional[int] = ...) -> None: ...

class RunFinished(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: RunSummary
    def __init__(self, summary: _Optional[_Union[RunSummary, _Mapping]] = ...) -> None: ...

class ModelIndex(_message.Message):
    __slots__ = ("model", "guardrail_arm", "index", "index_ci_low", "index_ci_high", "tier", "tier_uncertain", "simulated")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GUARDRAIL_ARM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEX_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    INDEX_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TIER_UNCERTAIN_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    model: str
    guardrail_arm: str
    index: float
    index_ci_low: float
    index_ci_high: float
    tier: str
    tier_uncertain: bool
    simulated: bool
    def __init__(self, model: _Optional[str] = ..., guardrail_arm: _Optional[str] = ..., index: _Optional[float] = ..., index_ci_low: _Optional[float] = ..., index_ci_high: _Optional[float] = ..., tier: _Optional[str] = ..., tier_uncertain: _Optional[bool] = ..., simulated: _Optional[bool] = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("run_id", "state", "spec", "create_time", "finish_time", "indexes", "error")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: RunState
    spec: RunSpec
    create_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    indexes: _containers.RepeatedCompositeFieldContainer[ModelIndex]
    error: str
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., spec: _Optional[_Union[RunSpec, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., indexes: _Optional[_Iterable[_Union[ModelIndex, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: RunSummary
    def __init__(self, run: _Optional[_Union[RunSummary, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunSummary]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RunSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CompareRunsRequest(_message.Message):
    __slots__ = ("run_ids",)
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CompareRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunSummary]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunSummary, _Mapping]]] = ...) -> None: ...

class GetScorecardRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetScorecardResponse(_message.Message):
    __slots__ = ("scorecard_json",)
    SCORECARD_JSON_FIELD_NUMBER: _ClassVar[int]
    scorecard_json: str
    def __init__(self, scorecard_json: _Optional[str] = ...) -> None: ...

class StreamReportRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class StreamReportResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...
