"""The C fast path of the decoder gives exactly the protobuf path's rows."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

import services.worker._decode as decode_module
from services.worker import UndecodableRecord, decode_record
from tests.ingest.otlp import any_value, llm_attributes, make_span
from tests.worker.conftest import envelope

split_span = pytest.importorskip("services.worker._span_wire").split_span

_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _outcome(value: bytes):
    """decode_record's rows, or its refusal, as a comparable value."""
    try:
        return decode_record(value)
    except UndecodableRecord as exc:
        return ("undecodable", str(exc))


def _both_paths(value: bytes, monkeypatch) -> tuple:
    fast = _outcome(value)
    with monkeypatch.context() as patch:
        patch.setattr(decode_module, "_split_span", None)
        slow = _outcome(value)
    return fast, slow


_texts = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12
) | st.sampled_from(["", "a\x00b", "ü", "🙂", "gen_ai.operation.name"])
# Mostly what the fast path reads, with every kind it leaves to protobuf
# (bytes, non-finite doubles, nested arrays, key-value lists) mixed in.
_plain_values = st.one_of(
    st.none(),
    _texts,
    _texts,
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([float("nan"), float("-inf"), b"", b"\x00\xff"]),
)
_values = st.one_of(
    _plain_values,
    _plain_values,
    _plain_values,
    st.lists(_plain_values, max_size=3),
    st.lists(st.lists(_plain_values, max_size=2), max_size=2),
    st.dictionaries(_texts, _plain_values, max_size=2),
)


@st.composite
def _spans(draw) -> trace_pb2.Span:
    span = trace_pb2.Span(
        trace_id=draw(st.sampled_from([b"\x01" * 16] * 8 + [b"\x02" * 15, b""])),
        span_id=draw(st.sampled_from([b"\x03" * 8] * 8 + [b"\x04" * 9])),
        parent_span_id=draw(st.sampled_from([b"", b"\x05" * 8])),
        name=draw(_texts),
        kind=draw(st.sampled_from([0, 1, 5, 40_000, -3])),
        start_time_unix_nano=draw(
            st.sampled_from([1_764_800_000_123_456_789] * 8 + [0, 1])
        ),
        end_time_unix_nano=draw(st.sampled_from([0, 2, 1_764_800_001_000_000_000])),
        trace_state=draw(st.sampled_from(["", "k=v"])),
        flags=draw(st.sampled_from([0, 257])),
        dropped_attributes_count=draw(st.sampled_from([0, 3])),
    )
    span.status.code = draw(st.sampled_from([0, 1, 2, 7]))
    span.status.message = draw(_texts)
    for key, value in draw(st.lists(st.tuples(_texts, _values), max_size=4)):
        span.attributes.append(common_pb2.KeyValue(key=key, value=any_value(value)))
    if draw(st.booleans()):
        span.attributes.append(
            common_pb2.KeyValue(key="gen_ai.operation.name", value=any_value("chat"))
        )
    if draw(st.integers(0, 9)) == 0:
        span.events.add(name="exception", time_unix_nano=5)
    if draw(st.integers(0, 9)) == 0:
        span.links.add(trace_id=b"\x06" * 16, span_id=b"\x07" * 8)
    return span


def test_the_worker_decodes_through_the_c_fast_path():
    assert decode_module._split_span is split_span


def test_common_records_take_the_fast_path_and_odd_ones_do_not():
    plain = envelope(make_span("db query", attributes={"db.system": "postgresql"}))
    llm = envelope(make_span("chat m", attributes=llm_attributes()))
    assert split_span(plain) is not None and split_span(llm) is not None

    with_event = make_span("e")
    with_event.events.add(name="exception")
    nested = make_span("n", attributes={"list": [[1]]})
    nul = make_span("bad\x00name")
    nan = make_span("n", attributes={"x": float("nan")})
    for span in (with_event, nested, nul, nan):
        assert split_span(envelope(span)) is None


@_SETTINGS
@given(_spans())
def test_generated_spans_decode_the_same_on_both_paths(monkeypatch, span):
    fast, slow = _both_paths(envelope(span), monkeypatch)
    assert fast == slow


@_SETTINGS
@given(st.data())
def test_damaged_records_decode_or_fail_the_same_on_both_paths(monkeypatch, data):
    span = make_span(
        "chat m", attributes=llm_attributes(**{"x": [1, "a"], "flag": True})
    )
    value = bytearray(envelope(span))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, len(value) - 1))
        if kind == "flip":
            value[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del value[at : at + data.draw(st.integers(1, 8))]
        else:
            value[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        if not value:
            value = bytearray(b"\x0a")

    fast, slow = _both_paths(bytes(value), monkeypatch)
    assert fast == slow


def test_invalid_utf8_falls_back_to_protobuf_which_refuses_it(monkeypatch):
    value = envelope(make_span("caf\u00e9"))
    broken = value.replace("caf\u00e9".encode(), b"caf\xff\xfe")
    assert len(broken) == len(value)

    fast, slow = _both_paths(broken, monkeypatch)
    assert fast == slow
    assert fast[0] == "undecodable"


def _raw_envelope(span_bytes: bytes) -> bytes:
    """The ingest layout around span bytes as given (not re-serialized)."""
    resource = trace_pb2.ResourceSpans.FromString(envelope(make_span("x"))).resource
    resource_bytes = resource.SerializeToString()

    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    return field(1, resource_bytes) + field(2, field(2, span_bytes))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_every_plain_attribute_kind_reads_the_same_on_both_paths(monkeypatch):
    attributes = {
        "text": "hello",
        "empty": "",
        "yes": True,
        "no": False,
        "big": 2**63 - 1,
        "small": -(2**63),
        "ratio": 0.1,
        "negative zero": -0.0,
        "unset": None,
        "list": ["a", 1, 2.5, False, None],
        "": "empty key",
    }
    span = make_span("kinds", attributes=attributes)
    span.attributes.append(common_pb2.KeyValue(key="text", value=any_value("again")))
    value = envelope(span)

    assert split_span(value) is not None
    fast, slow = _both_paths(value, monkeypatch)
    assert fast == slow


def test_a_field_given_twice_merges_as_protobuf_merges(monkeypatch):
    # Concatenated messages merge: singular fields take the last value,
    # a repeated sub-message (status) merges field by field.
    first = make_span("first", attributes={"a": "1"})
    first.status.code = 2
    second = trace_pb2.Span(name="second")
    second.status.message = "late message"
    value = _raw_envelope(first.SerializeToString() + second.SerializeToString())

    assert split_span(value) is None  # left to protobuf
    fast, slow = _both_paths(value, monkeypatch)
    assert fast == slow
    assert fast.span[5] == "second" and fast.span[10:12] == (2, "late message")
