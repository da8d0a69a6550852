"""Beacon's worker: Kafka spans -> Postgres, and the TelemetryService read API."""

from services.worker._app import (
    MIGRATIONS_OWNER,
    build_consumer,
    build_worker,
    migrate_database,
)
from services.worker._consumer import ConsumerConfig, ConsumerStats, SpanConsumer
from services.worker._copy_encode import EncodedRows, encode_rows
from services.worker._decode import (
    LLM_CALL_COLUMNS,
    LLM_CALL_TYPES,
    SPAN_COLUMNS,
    SPAN_TYPES,
    DecodedSpan,
    UndecodableRecord,
    decode_record,
)
from services.worker._telemetry import TelemetryServicer
from services.worker._writer import (
    DatabaseUnavailableError,
    RowsRejectedError,
    SpanWriter,
    WriteResult,
    copy_encoded,
    copy_rows,
)

__all__ = [
    "LLM_CALL_COLUMNS",
    "LLM_CALL_TYPES",
    "MIGRATIONS_OWNER",
    "SPAN_COLUMNS",
    "SPAN_TYPES",
    "ConsumerConfig",
    "ConsumerStats",
    "DatabaseUnavailableError",
    "DecodedSpan",
    "EncodedRows",
    "RowsRejectedError",
    "SpanConsumer",
    "SpanWriter",
    "TelemetryServicer",
    "UndecodableRecord",
    "WriteResult",
    "build_consumer",
    "build_worker",
    "copy_encoded",
    "copy_rows",
    "decode_record",
    "encode_rows",
    "migrate_database",
]
