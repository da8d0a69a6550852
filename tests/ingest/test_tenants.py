"""Tenant attribution: a trusted relay's spans keep their tenant, others cannot."""

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from services.ingest import TENANT_ATTRIBUTE, TENANT_HEADER
from tests.ingest.conftest import export_call, running_ingest
from tests.ingest.otlp import export_request, llm_attributes, make_span, read_topic

_KEYS = "k-relay=mesh-collector,k-acme=acme"


def _tenants_by_span_name(records) -> dict[str, tuple[str, str]]:
    """span name -> (resource tenant, tenant header) of each spans record."""
    found = {}
    for record in records:
        envelope = trace_pb2.ResourceSpans.FromString(record.value())
        (span,) = [s for scope in envelope.scope_spans for s in scope.spans]
        (tenant,) = [
            kv.value.string_value
            for kv in envelope.resource.attributes
            if kv.key == TENANT_ATTRIBUTE
        ]
        found[span.name] = (tenant, dict(record.headers())[TENANT_HEADER].decode())
    return found


def _relayed_request():
    """Spans of three tenants, as a shared collector forwards them."""
    request = export_request(
        [
            make_span("acme call", attributes={TENANT_ATTRIBUTE: "acme"}),
            make_span(
                "globex llm",
                attributes=llm_attributes(**{TENANT_ATTRIBUTE: "globex"}),
            ),
            make_span("no tenant named"),
        ]
    )
    # A second resource names its tenant on the resource instead.
    second = request.resource_spans.add()
    second.CopyFrom(export_request([make_span("initech span")]).resource_spans[0])
    second.resource.attributes.append(
        common_pb2.KeyValue(
            key=TENANT_ATTRIBUTE, value=common_pb2.AnyValue(string_value="initech")
        )
    )
    return request


async def _export_as(kafka_bootstrap, topics, api_key, request, *, trusted=True):
    """Exports `request` with `api_key` to an ingest that trusts the mesh
    collector's tenant as a relay (or no one); returns the response."""
    extra = {"ingest_trusted_tenants": "mesh-collector"} if trusted else {}
    async with running_ingest(
        kafka_bootstrap, topics, api_keys=_KEYS, auth_required=True, **extra
    ) as (server, _):
        channel, export = export_call(server.address, api_key)
        async with channel:
            return await export(request.SerializeToString(), timeout=10)


async def test_trusted_relay_spans_keep_the_tenant_they_name(kafka_bootstrap, topics):
    response = await _export_as(kafka_bootstrap, topics, "k-relay", _relayed_request())

    assert not response.HasField("partial_success")
    records = read_topic(kafka_bootstrap, topics[0], 4, partitions=2)
    assert _tenants_by_span_name(records) == {
        "acme call": ("acme", "acme"),
        "globex llm": ("globex", "globex"),
        "no tenant named": ("mesh-collector", "mesh-collector"),
        "initech span": ("initech", "initech"),
    }


async def test_untrusted_sender_keeps_its_own_tenant_whatever_it_asserts(
    kafka_bootstrap, topics
):
    await _export_as(kafka_bootstrap, topics, "k-acme", _relayed_request())

    records = read_topic(kafka_bootstrap, topics[0], 4, partitions=2)
    tenants = _tenants_by_span_name(records)
    assert len(tenants) == 4
    assert set(tenants.values()) == {("acme", "acme")}


async def test_no_sender_is_trusted_by_default(kafka_bootstrap, topics):
    await _export_as(
        kafka_bootstrap, topics, "k-relay", _relayed_request(), trusted=False
    )

    records = read_topic(kafka_bootstrap, topics[0], 4, partitions=2)
    tenants = _tenants_by_span_name(records)
    assert len(tenants) == 4
    assert set(tenants.values()) == {("mesh-collector", "mesh-collector")}


async def test_a_rejected_relayed_span_is_dead_lettered_under_its_tenant(
    kafka_bootstrap, topics
):
    request = export_request(
        [
            make_span(
                "leaky",
                attributes={TENANT_ATTRIBUTE: "acme", "note": "mail a@example.com"},
            )
        ]
    )
    response = await _export_as(kafka_bootstrap, topics, "k-relay", request)

    assert response.partial_success.rejected_spans == 1
    (dead,) = read_topic(kafka_bootstrap, topics[1], 1)
    assert dict(dead.headers())[TENANT_HEADER] == b"acme"
