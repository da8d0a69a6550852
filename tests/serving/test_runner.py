"""koverage.serving.run: the service entry points' event loop."""

import asyncio

import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from koverage.serving import MeshServer, connect, loop_factory, run
from koverage.settings import Settings


async def _loop_type():
    return type(asyncio.get_running_loop())


def test_uvloop_and_asyncio_are_chosen_by_name():
    assert run(_loop_type, event_loop="uvloop") is uvloop.Loop
    assert run(_loop_type, event_loop="auto") is uvloop.Loop
    assert not issubclass(run(_loop_type, event_loop="asyncio"), uvloop.Loop)


def test_event_loop_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("KOVERAGE_EVENT_LOOP", "asyncio")
    assert not issubclass(run(_loop_type), uvloop.Loop)

    monkeypatch.setenv("KOVERAGE_EVENT_LOOP", "uvloop")
    assert run(_loop_type) is uvloop.Loop


def test_unknown_event_loop_is_a_value_error():
    with pytest.raises(ValueError, match="event_loop='trio'"):
        loop_factory("trio")


def test_mesh_server_serves_on_uvloop():
    async def serve_and_check():
        settings = Settings.from_env({}, metrics_port=-1)
        server = MeshServer("probe", settings, "127.0.0.1:0")
        await server.start()
        channel = connect(server.address)
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        finally:
            await channel.close()
            await server.stop(0)
        return type(asyncio.get_running_loop()), reply.status

    loop_type, status = run(serve_and_check, event_loop="uvloop")

    assert loop_type is uvloop.Loop
    assert status == health_pb2.HealthCheckResponse.SERVING
