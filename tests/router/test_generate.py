"""RouterService.Generate over real gRPC against loopback OpenAI-compatible servers."""

import asyncio
from decimal import Decimal

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import connect
from tests.fixtures.openai_server import Scenario
from tests.router.conftest import collect, request, running_router


async def test_streams_deltas_then_summary_with_provider_usage(tmp_path, upstreams):
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        texts, summary = await collect(stub.Generate(request(), timeout=10))

    assert "".join(texts) == "Hello from the fixture."
    assert summary.usage.input_tokens == 11 and summary.usage.output_tokens == 5
    assert not summary.usage.estimated
    # 11 * 2.00 / 1e6 + 5 * 8.00 / 1e6, exactly.
    assert Decimal(summary.cost_usd) == Decimal("0.000062")
    assert summary.finish_reason == router_pb2.FINISH_REASON_STOP
    assert summary.provider == "openai_compatible"
    assert summary.status == router_pb2.GENERATION_STATUS_COMPLETE
    assert summary.time_to_first_token.ToNanoseconds() > 0
    sent = upstreams["generic"].requests[0]
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.headers["authorization"] == "Bearer k1"


async def test_missing_usage_chunk_marks_counts_estimated(tmp_path, upstreams):
    upstreams["generic"].default = Scenario(include_usage=False)
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        _, summary = await collect(stub.Generate(request(), timeout=10))

    assert summary.usage.estimated
    assert summary.usage.output_tokens > 0


async def test_rate_limit_is_retried_before_first_token(tmp_path, upstreams):
    upstreams["generic"].script = [Scenario(status=429, retry_after_s=0)]
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        texts, summary = await collect(stub.Generate(request(), timeout=10))

    assert len(upstreams["generic"].requests) == 2
    assert "".join(texts) == "Hello from the fixture."


async def test_persistent_rate_limit_is_resource_exhausted_with_retry_info(
    tmp_path, upstreams
):
    upstreams["generic"].default = Scenario(status=429, retry_after_s=7)
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        call = stub.Generate(request(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(call)

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate-limited" in caught.value.details()
    details = dict(caught.value.trailing_metadata())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert info.retry_delay.seconds == 7


async def test_server_errors_exhaust_retries_as_unavailable(tmp_path, upstreams):
    upstreams["generic"].default = Scenario(status=503)
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub.Generate(request(), timeout=10))

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(upstreams["generic"].requests) == 3


async def test_cold_modal_falls_back_to_openrouter(tmp_path, upstreams):
    # Modal's first token comes after 5 s; the catalog allows 0.3 s.
    upstreams["modal"].default = Scenario(first_token_delay_s=5)
    upstreams["openrouter"].default = Scenario(tokens=("warm", " answer"))
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        texts, summary = await collect(
            stub.Generate(request("modal/qwen3-8b"), timeout=10)
        )

    assert "".join(texts) == "warm answer"
    assert summary.model == "openrouter/qwen3-8b"
    assert list(summary.fallbacks_tried) == ["modal/qwen3-8b"]
    assert upstreams["modal"].requests[0].headers["authorization"] == "Bearer modal-key"
    await asyncio.wait_for(upstreams["modal"].client_closed.wait(), 5)


async def test_disable_fallback_lets_only_the_requested_model_answer(
    tmp_path, upstreams
):
    upstreams["modal"].default = Scenario(first_token_delay_s=5)
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(
                stub.Generate(
                    request("modal/qwen3-8b", disable_fallback=True), timeout=10
                )
            )
        with pytest.raises(grpc.aio.AioRpcError) as contradictory:
            await collect(
                stub.Generate(
                    request(
                        "modal/qwen3-8b",
                        disable_fallback=True,
                        fallback_models=["openrouter/qwen3-8b"],
                    ),
                    timeout=10,
                )
            )

    # The cold model is reported as such; the catalog's fallback never ran.
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert upstreams["openrouter"].requests == []
    assert contradictory.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "disable_fallback" in contradictory.value.details()


async def test_gpu_priced_model_costs_gpu_seconds(tmp_path, upstreams):
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        _, summary = await collect(stub.Generate(request("modal/qwen3-8b"), timeout=10))

    duration_s = summary.duration.ToNanoseconds() / 1e9
    assert summary.model == "modal/qwen3-8b"
    assert Decimal(summary.cost_usd) == pytest.approx(
        Decimal("0.000542") * Decimal(duration_s), abs=Decimal("0.000001")
    )


async def test_mid_stream_disconnect_is_unavailable_without_retry(tmp_path, upstreams):
    upstreams["generic"].default = Scenario(disconnect_after_tokens=2)
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        call = stub.Generate(request(), timeout=10)
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for event in call:
                received.append(event.delta.text)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # Chunks ready together may arrive as one delta (see coalesce_deltas).
    assert "".join(received) == "Hello from"
    assert len(upstreams["generic"].requests) == 1


async def test_caller_cancel_closes_the_upstream_connection(tmp_path, upstreams):
    upstreams["generic"].default = Scenario(
        tokens=tuple(f" t{i}" for i in range(200)), inter_token_delay_s=0.05
    )
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        call = stub.Generate(request(), timeout=30)
        async for event in call:
            if event.delta.index == 2:
                break
        call.cancel()
        await asyncio.wait_for(upstreams["generic"].client_closed.wait(), 5)

    seen = upstreams["generic"].requests[0]
    assert seen.closed_by_client and not seen.finished


async def test_deadline_is_honoured(tmp_path, upstreams):
    upstreams["generic"].default = Scenario(
        tokens=tuple(f" t{i}" for i in range(100)), inter_token_delay_s=0.1
    )
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub.Generate(request(), timeout=0.5))
        await asyncio.wait_for(upstreams["generic"].client_closed.wait(), 5)

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_open_circuit_skips_the_provider(tmp_path, upstreams):
    upstreams["generic"].default = Scenario(status=500)
    async with running_router(tmp_path, upstreams["providers"]) as (stub, router, _):
        with pytest.raises(grpc.aio.AioRpcError):
            await collect(stub.Generate(request(), timeout=10))
        calls_when_opened = len(upstreams["generic"].requests)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub.Generate(request(), timeout=10))

    assert calls_when_opened == 3
    assert len(upstreams["generic"].requests) == 3
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "circuit" in caught.value.details()


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"model": "no/such-model"}, grpc.StatusCode.NOT_FOUND),
        ({"model": ""}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"temperature": 3.5}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"max_output_tokens": 0}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"fallback_models": ["no/such-fallback"]}, grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_bad_requests_get_their_status(tmp_path, upstreams, fields, code):
    fields = {"model": "fixture/model", **fields}
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub.Generate(request(**fields), timeout=10))

    assert caught.value.code() == code
    assert caught.value.details()
    assert upstreams["generic"].requests == []


async def test_no_messages_and_bad_role_are_invalid(tmp_path, upstreams):
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await collect(
                stub.Generate(
                    router_pb2.GenerateRequest(model="fixture/model"), timeout=5
                )
            )
        bad_role = router_pb2.GenerateRequest(
            model="fixture/model", messages=[router_pb2.ChatMessage(content="hi")]
        )
        with pytest.raises(grpc.aio.AioRpcError) as role:
            await collect(stub.Generate(bad_role, timeout=5))

    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert role.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "role" in role.value.details()


@pytest.mark.parametrize(
    ("messages", "named"),
    [
        # One past the router's limits: 1024 messages, 2,000,000 characters.
        (
            [router_pb2.ChatMessage(role=router_pb2.ROLE_USER, content="hi")] * 1025,
            "1025 messages",
        ),
        (
            [
                router_pb2.ChatMessage(
                    role=router_pb2.ROLE_USER, content="x" * 2_000_001
                )
            ],
            "2000001 characters",
        ),
    ],
    ids=["too-many-messages", "oversized-prompt"],
)
async def test_oversized_requests_are_invalid_and_never_reach_the_provider(
    tmp_path, upstreams, messages, named
):
    oversized = router_pb2.GenerateRequest(model="fixture/model", messages=messages)
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub.Generate(oversized, timeout=10))
        # The same server still answers a request within the limits.
        texts, _ = await collect(stub.Generate(request(), timeout=10))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in caught.value.details()
    assert "".join(texts) == "Hello from the fixture."
    assert len(upstreams["generic"].requests) == 1


async def test_the_unknown_fallback_is_named_in_the_not_found_message(
    tmp_path, upstreams
):
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(
                stub.Generate(
                    request(fallback_models=["sim/steady", "no/such-fallback"]),
                    timeout=10,
                )
            )

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'no/such-fallback'" in caught.value.details()
    assert upstreams["generic"].requests == []


@pytest.mark.parametrize("key", ["", "k-wrong"], ids=["no-key", "unknown-key"])
async def test_required_auth_refuses_list_models_and_generate(tmp_path, upstreams, key):
    async with running_router(
        tmp_path,
        upstreams["providers"],
        client_api_key=key,
        auth_required=True,
        api_keys="k-good=acme",
    ) as (stub, _, server):
        with pytest.raises(grpc.aio.AioRpcError) as listing:
            await stub.ListModels(router_pb2.ListModelsRequest(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as generating:
            await collect(stub.Generate(request(), timeout=5))
        async with connect(server.address, api_key="k-good") as channel:
            good = router_pb2_grpc.RouterServiceStub(channel)
            listed = await good.ListModels(router_pb2.ListModelsRequest(), timeout=5)
            texts, _ = await collect(good.Generate(request(), timeout=10))

    assert listing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert generating.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "API key" in generating.value.details()
    # Only the call with the known key reached the provider.
    assert len(upstreams["generic"].requests) == 1
    assert listed.models and "".join(texts) == "Hello from the fixture."


async def test_unconfigured_provider_is_a_failed_precondition_naming_the_setting(
    tmp_path, upstreams
):
    providers = {"simulator": upstreams["providers"]["simulator"]}
    async with running_router(tmp_path, providers) as (stub, _, _):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub.Generate(request(), timeout=5))

    # Retrying cannot help until the provider is configured.
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not configured" in caught.value.details()


async def test_list_models_returns_the_catalog(tmp_path, upstreams):
    async with running_router(tmp_path, upstreams["providers"]) as (stub, _, _):
        response = await stub.ListModels(router_pb2.ListModelsRequest(), timeout=5)

    by_id = {m.id: m for m in response.models}
    assert by_id["modal/qwen3-8b"].gpu_usd_per_second == "0.000542"
    assert list(by_id["modal/qwen3-8b"].fallback_models) == ["openrouter/qwen3-8b"]
    assert by_id["sim/steady"].simulated
    assert [m.id for m in response.models] == sorted(by_id)


async def test_genai_metrics_are_recorded_per_call(tmp_path, upstreams):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from koverage.llmobs import GenAIMetrics
    from services.router import Router, load_catalog
    from services.router._engine import GenerateParams

    reader = InMemoryMetricReader()
    router = Router(
        load_catalog(),
        upstreams["providers"],
        metrics=GenAIMetrics(MeterProvider(metric_readers=[reader])),
    )
    params = GenerateParams(
        model="sim/fast", messages=({"role": "user", "content": "a b c"},)
    )
    events = [e async for e in router.generate(params)]

    points = {
        metric.name: metric.data.data_points
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    tokens = {
        p.attributes["gen_ai.token.type"]: p.sum
        for p in points["gen_ai.client.token.usage"]
    }
    assert tokens == {"input": 3, "output": events[-1].output_tokens}
    assert points["gen_ai.client.operation.duration"][0].count == 1
    assert points["gen_ai.client.operation.time_to_first_chunk"][0].count == 1
