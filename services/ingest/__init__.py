"""Beacon's ingest service: OTLP TraceService in front of Kafka."""

from services.ingest._app import TRACE_SERVICE, build_server
from services.ingest._envelope import (
    REASON_HEADER,
    SOURCE_HEADER,
    STAGE_HEADER,
    TENANT_ATTRIBUTE,
    TENANT_HEADER,
)
from services.ingest._publisher import KafkaPublisher, Record
from services.ingest._ratelimit import TenantRateLimiter
from services.ingest._servicer import IngestConfig, IngestServicer
from services.ingest._validate import REQUIRED_GENAI_ATTRIBUTES, validate_span

__all__ = [
    "REASON_HEADER",
    "REQUIRED_GENAI_ATTRIBUTES",
    "SOURCE_HEADER",
    "STAGE_HEADER",
    "TENANT_ATTRIBUTE",
    "TENANT_HEADER",
    "TRACE_SERVICE",
    "IngestConfig",
    "IngestServicer",
    "KafkaPublisher",
    "Record",
    "TenantRateLimiter",
    "build_server",
    "validate_span",
]
