"""No unredacted PII reaches Kafka: not on the spans topic, not in the DLQ."""

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from services.ingest import REASON_HEADER
from tests.ingest.conftest import export_call, running_ingest
from tests.ingest.otlp import any_value, export_request, make_span, read_topic

_EMAIL = "leak.person@example.com"
_SSN = "123-45-6789"


async def _export(kafka_bootstrap, topics, raw: bytes, **overrides):
    async with running_ingest(kafka_bootstrap, topics, **overrides) as (server, _):
        channel, export = export_call(server.address)
        async with channel:
            return await export(raw, timeout=10)


def _reasons(records) -> list[str]:
    return sorted(dict(r.headers())[REASON_HEADER].decode() for r in records)


async def test_pii_in_status_message_or_link_attributes_is_rejected(
    kafka_bootstrap, topics
):
    in_status = make_span("failed")
    in_status.status.message = f"could not mail {_EMAIL}"
    in_link = make_span("linked")
    in_link.links.append(
        trace_pb2.Span.Link(
            trace_id=b"\x01" * 16,
            span_id=b"\x02" * 8,
            attributes=[common_pb2.KeyValue(key="why", value=any_value(_SSN))],
        )
    )
    clean = make_span("clean")
    request = export_request([in_status, in_link, clean])

    response = await _export(kafka_bootstrap, topics, request.SerializeToString())

    assert response.partial_success.rejected_spans == 2
    (published,) = read_topic(kafka_bootstrap, topics[0], 1, partitions=2)
    assert published.key() == clean.trace_id
    dead = read_topic(kafka_bootstrap, topics[1], 2)
    reasons = _reasons(dead)
    assert "status message" in reasons[1] and "link 0 attribute 'why'" in reasons[0]
    for record in dead:
        assert _EMAIL.encode() not in record.value()
        assert _SSN.encode() not in record.value()


async def test_pii_in_resource_attributes_rejects_its_spans_redacted(
    kafka_bootstrap, topics
):
    request = export_request([make_span("a"), make_span("b")])
    request.resource_spans[0].resource.attributes.append(
        common_pb2.KeyValue(key="host.owner", value=any_value(_EMAIL))
    )
    # Spans under another, clean resource are kept.
    request.resource_spans.extend(export_request([make_span("c")]).resource_spans)

    response = await _export(kafka_bootstrap, topics, request.SerializeToString())

    assert response.partial_success.rejected_spans == 2
    assert "resource attribute 'host.owner'" in response.partial_success.error_message
    assert len(read_topic(kafka_bootstrap, topics[0], 1, partitions=2)) == 1
    dead = read_topic(kafka_bootstrap, topics[1], 2)
    assert len(dead) == 2
    for record in dead:
        envelope = trace_pb2.ResourceSpans.FromString(record.value())
        owner = {kv.key: kv.value.string_value for kv in envelope.resource.attributes}
        assert owner["host.owner"] == "[EMAIL]"


async def test_a_span_rejected_for_another_reason_is_dead_lettered_redacted(
    kafka_bootstrap, topics
):
    # Too large and bad ids are found before the PII check ever runs.
    huge = make_span("huge", attributes={"blob": "x" * 5000, "note": _EMAIL})
    bad_ids = make_span("bad ids", span_id=b"\x00" * 8, attributes={"ssn": _SSN})
    request = export_request([huge, bad_ids])

    response = await _export(
        kafka_bootstrap, topics, request.SerializeToString(), ingest_max_span_bytes=4096
    )

    assert response.partial_success.rejected_spans == 2
    dead = read_topic(kafka_bootstrap, topics[1], 2)
    assert len(dead) == 2
    for record in dead:
        assert _EMAIL.encode() not in record.value()
        assert _SSN.encode() not in record.value()
        trace_pb2.ResourceSpans.FromString(record.value())  # still an envelope


async def test_an_undecodable_span_reaches_the_dlq_without_its_bytes(
    kafka_bootstrap, topics
):
    broken = make_span("UTF8MARK", attributes={"note": _EMAIL})
    request = export_request([make_span("fine"), broken])
    raw = request.SerializeToString().replace(b"UTF8MARK", b"UTF8\xff\xfeRK")

    response = await _export(kafka_bootstrap, topics, raw)

    assert response.partial_success.rejected_spans == 1
    (dead,) = read_topic(kafka_bootstrap, topics[1], 1)
    assert not dead.value()
    assert dead.key() == broken.trace_id
    (reason,) = _reasons([dead])
    assert "does not decode" in reason and broken.span_id.hex() in reason
