"""The ingest service against a real Tansu broker: publish, reject, refuse."""

import os

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from koverage.settings import Settings
from services.ingest import (
    REASON_HEADER,
    STAGE_HEADER,
    TENANT_ATTRIBUTE,
    KafkaPublisher,
    build_server,
)
from tests.ingest.conftest import export_call, running_ingest
from tests.ingest.otlp import (
    export_request,
    llm_attributes,
    make_span,
    read_topic,
)


def _headers(record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers() or ()}


async def test_valid_spans_are_published_keyed_by_trace_id_with_the_callers_tenant(
    kafka_bootstrap, topics
):
    spans = [make_span("a"), make_span("chat sim/steady", attributes=llm_attributes())]
    async with running_ingest(
        kafka_bootstrap, topics, api_keys="k-acme=acme", auth_required=True
    ) as (server, _):
        channel, export = export_call(server.address, "k-acme")
        async with channel:
            response = await export(
                export_request(spans).SerializeToString(), timeout=10
            )

    assert not response.HasField("partial_success")
    records = read_topic(kafka_bootstrap, topics[0], 2, partitions=2)
    assert sorted(r.key() for r in records) == sorted(s.trace_id for s in spans)
    for record in records:
        envelope = trace_pb2.ResourceSpans.FromString(record.value())
        (span,) = [s for scope in envelope.scope_spans for s in scope.spans]
        assert span.trace_id == record.key()
        resource = {
            kv.key: kv.value.string_value for kv in envelope.resource.attributes
        }
        assert resource[TENANT_ATTRIBUTE] == "acme"
        assert resource["service.name"] == "test-service"
        assert _headers(record)["koverage-tenant"] == "acme"


async def test_sender_cannot_choose_its_tenant(kafka_bootstrap, topics):
    request = export_request([make_span()])
    attribute = request.resource_spans[0].resource.attributes.add(key=TENANT_ATTRIBUTE)
    attribute.value.string_value = "someone-else"
    async with running_ingest(kafka_bootstrap, topics, api_keys="k1=acme") as (
        server,
        _,
    ):
        channel, export = export_call(server.address, "k1")
        async with channel:
            await export(request.SerializeToString(), timeout=10)

    (record,) = read_topic(kafka_bootstrap, topics[0], 1, partitions=2)
    envelope = trace_pb2.ResourceSpans.FromString(record.value())
    tenants = [
        kv.value.string_value
        for kv in envelope.resource.attributes
        if kv.key == TENANT_ATTRIBUTE
    ]
    assert tenants == ["acme"]


async def test_each_bad_span_is_rejected_with_its_reason_and_the_rest_kept(
    kafka_bootstrap, topics
):
    good = [make_span("good-1"), make_span("good-2", attributes=llm_attributes())]
    bad = {
        "bad trace_id": make_span("short-trace", trace_id=b"\x01" * 8),
        "bad span_id": make_span("zero-span", span_id=b"\x00" * 8),
        "too large": make_span("huge", attributes={"blob": "x" * 5000}),
        "lacks required": make_span(
            "chat missing", attributes=llm_attributes(**{"gen_ai.provider.name": None})
        ),
        "unredacted PII": make_span(
            "chat leak",
            attributes=llm_attributes(
                **{"koverage.prompt_preview": "write to jane.doe@example.com"}
            ),
        ),
        "end_time": make_span("backwards", duration_ms=-5),
    }
    request = export_request(good + list(bad.values()))
    # A span whose name is invalid UTF-8 fails the whole-request parse.
    marker = make_span("UTF8MARK")
    request.resource_spans[0].scope_spans[0].spans.append(marker)
    raw = request.SerializeToString().replace(b"UTF8MARK", b"UTF8\xff\xfeRK")

    async with running_ingest(kafka_bootstrap, topics, ingest_max_span_bytes=4096) as (
        server,
        _,
    ):
        channel, export = export_call(server.address)
        async with channel:
            response = await export(raw, timeout=10)

    assert response.partial_success.rejected_spans == len(bad) + 1
    message = response.partial_success.error_message
    for reason in list(bad) + ["does not decode"]:
        assert reason in message
    published = read_topic(kafka_bootstrap, topics[0], len(good), partitions=2)
    assert sorted(r.key() for r in published) == sorted(s.trace_id for s in good)
    dead = read_topic(kafka_bootstrap, topics[1], len(bad) + 1)
    reasons = [_headers(r)[REASON_HEADER] for r in dead]
    assert len(reasons) == len(bad) + 1
    for expected in list(bad) + ["does not decode"]:
        assert sum(expected in reason for reason in reasons) == 1, expected
    assert all(_headers(r)[STAGE_HEADER] == "ingest" for r in dead)
    assert all(b"jane.doe@example.com" not in r.value() for r in published + dead)


async def test_malformed_request_is_invalid_argument(kafka_bootstrap, topics):
    async with running_ingest(kafka_bootstrap, topics) as (server, _):
        channel, export = export_call(server.address)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await export(b"\x0a\xff\xff\xff\xff\x0f garbage", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an OTLP" in caught.value.details()


async def test_missing_or_unknown_key_is_unauthenticated(kafka_bootstrap, topics):
    request = export_request([make_span()]).SerializeToString()
    async with running_ingest(
        kafka_bootstrap, topics, api_keys="k1=acme", auth_required=True
    ) as (server, _):
        for key in ("", "wrong"):
            channel, export = export_call(server.address, key)
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await export(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert read_topic(kafka_bootstrap, topics[0], 1, partitions=2, timeout_s=1) == []


async def test_tenant_over_its_rate_gets_resource_exhausted_with_retry_info(
    kafka_bootstrap, topics
):
    request = export_request([make_span() for _ in range(10)]).SerializeToString()
    async with running_ingest(
        kafka_bootstrap,
        topics,
        ingest_rate_limit_spans_per_s=5.0,
        ingest_rate_limit_burst_spans=10,
    ) as (server, _):
        channel, export = export_call(server.address)
        async with channel:
            await export(request, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await export(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = status_pb2.Status.FromString(
        dict(caught.value.trailing_metadata())["grpc-status-details-bin"]
    )
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert 0 < info.retry_delay.ToNanoseconds() <= 2 * 10**9


async def test_unreachable_kafka_is_unavailable_not_acknowledged():
    # A port nobody listens on: Kafka can never acknowledge.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings.from_env(
        {}, ingest_address="127.0.0.1:0", metrics_port=-1, kafka_bootstrap=dead
    )
    publisher = KafkaPublisher(dead, delivery_timeout_s=1.0, config={"log_level": 0})
    server = build_server(settings, publisher=publisher, create_topics=False)
    await server.start()
    try:
        channel, export = export_call(server.address)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await export(
                    export_request([make_span()]).SerializeToString(), timeout=10
                )
    finally:
        await server.stop(0.5)
        publisher.close(timeout_s=0.1)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry" in caught.value.details()


def test_random_ids_are_distinct():
    # Guards the builders above: a collision would hide a lost span.
    assert len({os.urandom(16) for _ in range(100)}) == 100
