"""What every Koverage server has: health, reflection, auth, error mapping,
trace propagation, metrics and graceful drain. A fake RouterService servicer
stands in for a real service."""

import asyncio
import json
import logging
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace

from koverage.errors import NotFoundError
from koverage.logs import JsonFormatter
from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import MeshServer, connect, current_tenant
from koverage.settings import Settings


class FakeRouter(router_pb2_grpc.RouterServiceServicer):
    """Streams the tenant's name word by word; model "missing" is NOT_FOUND,
    model "crash" is a bug, model "slow" streams slowly, and model "held"
    sends its second word only once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def Generate(self, request, context):
        if request.model == "missing":
            raise NotFoundError("model 'missing' is not in the catalog")
        if request.model == "crash":
            raise RuntimeError("secret internal detail")
        for word in ("tenant", current_tenant()):
            if request.model == "slow":
                await asyncio.sleep(0.3)
            if request.model == "held" and word != "tenant":
                await self.release.wait()
            yield router_pb2.GenerateResponse(delta=router_pb2.TextDelta(text=word))

    async def ListModels(self, request, context):
        return router_pb2.ListModelsResponse(
            models=[router_pb2.ModelInfo(id=current_tenant())]
        )


async def start(servicer: FakeRouter | None = None, **overrides) -> MeshServer:
    settings = Settings.from_env({}, metrics_port=0, **overrides)
    server = MeshServer("fake", settings, "127.0.0.1:0")
    servicer = servicer or FakeRouter()
    router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server.grpc)
    server.expose(router_pb2.DESCRIPTOR.services_by_name["RouterService"])
    await server.start()
    return server


async def test_health_reports_serving_then_not_serving_on_shutdown():
    servicer = FakeRouter()
    server = await start(servicer)
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service="koverage.router.v1.RouterService"),
            timeout=5,
        )
        overall = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        watch = health.Watch(
            health_pb2.HealthCheckRequest(service="koverage.router.v1.RouterService"),
            timeout=10,
        )
        watched = [(await watch.read()).status]
        stream = router_pb2_grpc.RouterServiceStub(channel).Generate(
            router_pb2.GenerateRequest(model="held"), timeout=10
        )
        first = await stream.read()

        # Stop while the stream is held open: the watcher hears NOT_SERVING
        # during the drain, and the open stream still finishes after that.
        stopping = asyncio.create_task(server.stop(5))
        watched.append((await watch.read()).status)
        stream_done_at_not_serving = stream.done()
        watch.cancel()
        servicer.release.set()
        rest = []
        while (event := await stream.read()) is not grpc.aio.EOF:
            rest.append(event.delta.text)
        await stopping

    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert watched == [
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    ]
    assert not stream_done_at_not_serving
    assert first.delta.text == "tenant" and rest == ["default"]
    assert await stream.code() == grpc.StatusCode.OK


async def test_reflection_lists_the_service():
    server = await start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = []
        async for reply in call:
            names = [s.name for s in reply.list_services_response.service]
            break
    await server.stop(0.1)
    assert "koverage.router.v1.RouterService" in names
    assert "grpc.health.v1.Health" in names


async def test_required_key_maps_to_tenant_and_missing_key_is_refused():
    server = await start(auth_required=True, api_keys="k-alpha=alpha,k-beta=beta")
    try:
        async with connect(server.address, api_key="k-beta") as channel:
            models = await router_pb2_grpc.RouterServiceStub(channel).ListModels(
                router_pb2.ListModelsRequest(), timeout=5
            )
            assert models.models[0].id == "beta"
        for key in ("", "wrong"):
            async with connect(server.address, api_key=key) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await router_pb2_grpc.RouterServiceStub(channel).ListModels(
                        router_pb2.ListModelsRequest(), timeout=5
                    )
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Health checks stay open for probes.
        async with grpc.aio.insecure_channel(server.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0.1)


async def _list_models_as(address: str, key: str, on_behalf_of: str = "") -> str:
    metadata = (("koverage-on-behalf-of", on_behalf_of),) if on_behalf_of else ()
    async with connect(address, api_key=key) as channel:
        reply = await router_pb2_grpc.RouterServiceStub(channel).ListModels(
            router_pb2.ListModelsRequest(), metadata=metadata, timeout=5
        )
    return reply.models[0].id


async def test_only_a_relay_key_may_name_the_tenant_it_calls_for():
    server = await start(
        auth_required=True,
        api_keys="k-mesh=mesh,k-alpha=alpha",
        relay_tenants="mesh",
    )
    try:
        assert await _list_models_as(server.address, "k-mesh", "beta") == "beta"
        assert await _list_models_as(server.address, "k-mesh") == "mesh"
        # Any other key keeps its own tenant whatever it claims.
        assert await _list_models_as(server.address, "k-alpha", "beta") == "alpha"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _list_models_as(server.address, "k-mesh", "no spaces, please")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "koverage-on-behalf-of" in caught.value.details()
    finally:
        await server.stop(0.1)


class ForwardingRouter(FakeRouter):
    """Answers ListModels by asking `downstream`, with a relay key, from
    inside its own RPC, as chat calls the router."""

    def __init__(self, downstream: str) -> None:
        super().__init__()
        self.downstream = downstream

    async def ListModels(self, request, context):
        async with connect(self.downstream, api_key="k-mesh") as channel:
            return await router_pb2_grpc.RouterServiceStub(channel).ListModels(
                request, timeout=5
            )


async def test_a_service_calls_onward_in_the_tenant_of_its_caller():
    keys = "k-mesh=mesh,k-alpha=alpha,k-beta=beta"
    downstream = await start(auth_required=True, api_keys=keys, relay_tenants="mesh")
    upstream = await start(
        ForwardingRouter(downstream.address), auth_required=True, api_keys=keys
    )
    try:
        assert await _list_models_as(upstream.address, "k-alpha") == "alpha"
        assert await _list_models_as(upstream.address, "k-beta") == "beta"
    finally:
        await upstream.stop(0.1)
        await downstream.stop(0.1)


async def test_without_relay_tenants_the_forwarded_tenant_is_ignored():
    keys = "k-mesh=mesh,k-alpha=alpha"
    downstream = await start(auth_required=True, api_keys=keys)
    upstream = await start(
        ForwardingRouter(downstream.address), auth_required=True, api_keys=keys
    )
    try:
        assert await _list_models_as(upstream.address, "k-alpha") == "mesh"
    finally:
        await upstream.stop(0.1)
        await downstream.stop(0.1)


async def test_optional_auth_still_refuses_an_unknown_key():
    server = await start(api_keys="k=alpha")
    try:
        async with connect(server.address) as channel:
            models = await router_pb2_grpc.RouterServiceStub(channel).ListModels(
                router_pb2.ListModelsRequest(), timeout=5
            )
            assert models.models[0].id == "default"
        async with connect(server.address, api_key="typo") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await router_pb2_grpc.RouterServiceStub(channel).ListModels(
                    router_pb2.ListModelsRequest(), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(0.1)


def _tally_handlers(calls: list[str]) -> grpc.GenericRpcHandler:
    """A client-streaming and a bidirectional RPC on raw bytes, which record
    each call that reached them."""

    async def count(requests, context):
        calls.append("Count")
        return f"{current_tenant()}:{len([r async for r in requests])}".encode()

    async def echo(requests, context):
        calls.append("Echo")
        async for item in requests:
            yield current_tenant().encode() + b":" + item

    return grpc.method_handlers_generic_handler(
        "test.Tally",
        {
            "Count": grpc.stream_unary_rpc_method_handler(count),
            "Echo": grpc.stream_stream_rpc_method_handler(echo),
        },
    )


async def test_client_and_bidi_streams_need_a_key_too():
    settings = Settings.from_env(
        {}, metrics_port=-1, auth_required=True, api_keys="k-alpha=alpha"
    )
    server = MeshServer("fake", settings, "127.0.0.1:0")
    calls: list[str] = []
    server.grpc.add_generic_rpc_handlers((_tally_handlers(calls),))
    await server.start()
    refused = {}
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            count = channel.stream_unary("/test.Tally/Count")
            echo = channel.stream_stream("/test.Tally/Echo")
            for key in ("", "wrong"):
                metadata = (("authorization", f"Bearer {key}"),) if key else ()
                with pytest.raises(grpc.aio.AioRpcError) as counted:
                    await count(iter([b"a", b"b"]), metadata=metadata, timeout=5)
                with pytest.raises(grpc.aio.AioRpcError) as echoed:
                    [r async for r in echo(iter([b"a"]), metadata=metadata, timeout=5)]
                refused[key] = (counted.value.code(), echoed.value.code())
            assert calls == []  # no handler ran without a known key

            good = (("authorization", "Bearer k-alpha"),)
            total = await count(iter([b"a", b"b"]), metadata=good, timeout=5)
            echoes = [
                r async for r in echo(iter([b"x", b"y"]), metadata=good, timeout=5)
            ]
    finally:
        await server.stop(0.1)

    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert refused == {
        "": (unauthenticated, unauthenticated),
        "wrong": (unauthenticated, unauthenticated),
    }
    assert total == b"alpha:2"
    assert echoes == [b"alpha:x", b"alpha:y"]
    assert calls == ["Count", "Echo"]


def test_auth_required_without_keys_is_a_configuration_error():
    with pytest.raises(ValueError, match="KOVERAGE_API_KEYS"):
        MeshServer("x", Settings.from_env({}, auth_required=True), "127.0.0.1:0")


async def test_errors_map_to_codes_and_bugs_hide_their_details(caplog):
    server = await start()
    try:
        async with connect(server.address) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                async for _ in stub.Generate(
                    router_pb2.GenerateRequest(model="missing"), timeout=5
                ):
                    pass
            with pytest.raises(grpc.aio.AioRpcError) as crash:
                async for _ in stub.Generate(
                    router_pb2.GenerateRequest(model="crash"), timeout=5
                ):
                    pass
    finally:
        await server.stop(0.1)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "not in the catalog" in missing.value.details()
    assert crash.value.code() == grpc.StatusCode.INTERNAL
    assert "secret internal detail" not in crash.value.details()
    assert "trace_id=" in crash.value.details()
    assert any(r.message == "rpc crashed" for r in caplog.records)


async def test_trace_context_crosses_the_hop(finished_spans):
    server = await start()
    tracer = trace.get_tracer("test")
    try:
        async with connect(server.address) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            with tracer.start_as_current_span("caller") as caller:
                async for _ in stub.Generate(
                    router_pb2.GenerateRequest(model="m"), timeout=5
                ):
                    pass
    finally:
        await server.stop(0.1)
    spans = {s.name: s for s in finished_spans.get_finished_spans()}
    server_span = spans["koverage.router.v1.RouterService/Generate"]
    assert server_span.context.trace_id == caller.get_span_context().trace_id
    assert server_span.parent.span_id == caller.get_span_context().span_id
    assert server_span.kind == trace.SpanKind.SERVER


async def test_metrics_endpoint_counts_rpcs_by_code():
    server = await start()
    try:
        async with connect(server.address) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            await stub.ListModels(router_pb2.ListModelsRequest(), timeout=5)
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read()
        )
    finally:
        await server.stop(0.1)
    text = body.decode()
    method = "/koverage.router.v1.RouterService/ListModels"
    assert (
        f'koverage_rpc_requests_total{{code="OK",method="{method}",service="fake"}}'
        in text
    )


async def test_graceful_stop_lets_an_open_stream_finish():
    server = await start()
    async with connect(server.address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        call = stub.Generate(router_pb2.GenerateRequest(model="slow"), timeout=10)
        first = await call.read()
        stopping = asyncio.create_task(server.stop(5))
        rest = [event async for event in call]
        await stopping
    assert first.delta.text == "tenant"
    assert [e.delta.text for e in rest] == ["default"]
    assert await call.code() == grpc.StatusCode.OK


def test_json_formatter_renders_extras_as_keys():
    record = logging.LogRecord(
        "koverage.x", logging.WARNING, __file__, 1, "dropped %d spans", (3,), None
    )
    record.rpc_method = "/a.B/C"
    entry = json.loads(JsonFormatter("router").format(record))
    assert entry["msg"] == "dropped 3 spans"
    assert entry["level"] == "warning"
    assert entry["rpc_method"] == "/a.B/C"
    assert entry["service"] == "router"
