"""The worker's record decoder: rows, attribute JSON, and both envelope paths."""

import json

import pytest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from koverage.db import connect
from services.ingest._envelope import EnvelopeBuilder, tenant_resource
from services.worker import (
    SPAN_COLUMNS,
    SpanWriter,
    UndecodableRecord,
    decode_record,
    encode_rows,
)
from services.worker._decode import fast_path_built
from tests.ingest.otlp import any_value, llm_attributes, make_span


def _kv(key: str, value: common_pb2.AnyValue) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=value)


def _ingest_record(
    span: trace_pb2.Span, tenant: str = "acme", scope_name: str = "tests"
) -> bytes:
    """The record the ingest service publishes for `span` (its own builder)."""
    resource = resource_pb2.Resource(attributes=[_kv("service.name", any_value("svc"))])
    scope = common_pb2.InstrumentationScope(name=scope_name)
    builder = EnvelopeBuilder(
        tenant_resource(resource, tenant), scope.SerializeToString()
    )
    return builder.envelope(span.SerializeToString())


def _tricky_span() -> tuple[trace_pb2.Span, dict]:
    """A span whose attributes cover every AnyValue kind, and their JSON."""
    nested = common_pb2.AnyValue(
        array_value=common_pb2.ArrayValue(
            values=[
                any_value([1, [2.5, "x"]]),
                common_pb2.AnyValue(
                    kvlist_value=common_pb2.KeyValueList(
                        values=[_kv("in\x00f", any_value(float("inf")))]
                    )
                ),
                common_pb2.AnyValue(),
            ]
        )
    )
    span = make_span("tricky")
    span.attributes.extend(
        [
            _kv("empty", common_pb2.AnyValue(string_value="")),
            _kv("unset", common_pb2.AnyValue()),
            _kv("unicode", any_value("h\u00e9llo \u2603 \U0001f600")),
            _kv("bytes", common_pb2.AnyValue(bytes_value=b"\x00\xff")),
            _kv("tenth", any_value(0.1)),
            _kv("huge", any_value(1e300)),
            _kv("zero_double", any_value(0.0)),
            _kv("zero_int", any_value(0)),
            _kv("min_int", any_value(-(2**63))),
            _kv("false", any_value(False)),
            _kv("nested", nested),
            _kv(
                "empty_array", common_pb2.AnyValue(array_value=common_pb2.ArrayValue())
            ),
        ]
    )
    expected = {
        "empty": "",
        "unset": None,
        "unicode": "h\u00e9llo \u2603 \U0001f600",
        "bytes": "00ff",
        "tenth": 0.1,
        "huge": 1e300,
        "zero_double": 0.0,
        "zero_int": 0,
        "min_int": -(2**63),
        "false": False,
        "nested": [[1, [2.5, "x"]], {"inf": "inf"}, None],
        "empty_array": [],
    }
    return span, expected


def test_decode_writes_every_attribute_kind_as_its_json():
    span, expected = _tricky_span()
    row = dict(zip(SPAN_COLUMNS, decode_record(_ingest_record(span)).span, strict=True))

    assert row["attributes"][:1] == b"\x01"
    assert json.loads(row["attributes"][1:]) == expected
    assert json.loads(row["resource_attributes"][1:]) == {
        "service.name": "svc",
        "koverage.tenant": "acme",
    }


def test_postgres_stores_the_tricky_attributes_as_decoded(database_url):
    span, expected = _tricky_span()
    writer = SpanWriter(database_url)
    try:
        writer.write(encode_rows([decode_record(_ingest_record(span))]))
    finally:
        writer.close()

    # jsonb keeps numbers as numeric (1e300 reads back as 1 and 300 zeros),
    # so compare as jsonb, in Postgres.
    with connect(database_url) as conn:
        same = conn.execute(
            "SELECT attributes = %s::jsonb FROM spans", (json.dumps(expected),)
        ).fetchone()[0]
    assert same is True


@pytest.mark.parametrize("layout", ["schema_urls", "no_scope", "two_resource_fields"])
def test_decode_gives_the_same_rows_whatever_the_envelope_layout(layout):
    span = make_span("chat m", attributes=llm_attributes())
    record = _ingest_record(span)
    envelope = trace_pb2.ResourceSpans.FromString(record)
    if layout == "schema_urls":
        envelope.schema_url = "https://example.com/r"
        envelope.scope_spans[0].schema_url = "https://example.com/s"
        other = envelope.SerializeToString()
    elif layout == "no_scope":
        envelope.scope_spans[0].ClearField("scope")
        other = envelope.SerializeToString()
    else:
        # A second `resource` field merges into the first, as protobuf says.
        extra = resource_pb2.Resource(attributes=[_kv("host.name", any_value("h"))])
        other = record + b"\x0a" + bytes([len(extra.SerializeToString())])
        other += extra.SerializeToString()

    decoded, reference = decode_record(other), decode_record(record)

    assert decoded.llm_call == reference.llm_call
    if layout == "two_resource_fields":
        resource = json.loads(decoded.span[-1][1:])
        assert resource["host.name"] == "h" and resource["koverage.tenant"] == "acme"
        assert decoded.span[:-1] == reference.span[:-1]
    else:
        assert decoded.span == reference.span


@pytest.mark.parametrize("field", [b"tests", b"acme", b"chat"])
def test_decode_refuses_invalid_utf8_in_scope_resource_or_span(field):
    record = _ingest_record(make_span("chat m", attributes=llm_attributes()))
    at = record.index(field)
    broken = record[:at] + b"\xff" + record[at + 1 :]

    with pytest.raises(UndecodableRecord, match="not an OTLP ResourceSpans"):
        decode_record(broken)


def test_decode_refuses_an_ingest_layout_record_without_a_tenant():
    with pytest.raises(UndecodableRecord, match="koverage.tenant"):
        decode_record(_ingest_record(make_span("x"), tenant=""))


def test_decode_names_the_span_ids_first_when_the_tenant_is_missing_too():
    span = make_span("x", span_id=b"short")
    with pytest.raises(UndecodableRecord, match="span ids have the wrong length"):
        decode_record(_ingest_record(span, tenant=""))


def test_the_c_fast_path_is_built_here():
    # setup.py builds it (optional: without a compiler the worker falls back
    # to protobuf alone, at about half the decode rate); these machines
    # have one, so a missing build is a defect.
    assert fast_path_built()
