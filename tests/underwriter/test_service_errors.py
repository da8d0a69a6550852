"""EvaluationService status codes without a healthy backend: a database
outage is UNAVAILABLE (retryable), a missing key UNAUTHENTICATED."""

import contextlib
import socket

import grpc
import pytest
from psycopg_pool import AsyncConnectionPool

from koverage.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc
from koverage.serving import MeshServer, connect
from koverage.settings import Settings
from services.underwriter._service import EvaluationServicer
from services.underwriter._store import RunStore

_RUN_ID = "00000000-0000-0000-0000-000000000001"
_CALLS = {
    "GetRun": lambda s: s.GetRun(evaluation_pb2.GetRunRequest(run_id=_RUN_ID)),
    "ListRuns": lambda s: s.ListRuns(evaluation_pb2.ListRunsRequest()),
    "CompareRuns": lambda s: s.CompareRuns(
        evaluation_pb2.CompareRunsRequest(run_ids=[_RUN_ID, _RUN_ID])
    ),
    "GetScorecard": lambda s: s.GetScorecard(
        evaluation_pb2.GetScorecardRequest(run_id=_RUN_ID)
    ),
    "StreamReport": lambda s: _drain(
        s.StreamReport(evaluation_pb2.StreamReportRequest(run_id=_RUN_ID))
    ),
}


async def _drain(stream):
    return [chunk async for chunk in stream]


def _closed_port() -> int:
    """A loopback port with nothing listening (the database is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def underwriter_without_database(tmp_path):
    pool = AsyncConnectionPool(
        f"postgresql://postgres@127.0.0.1:{_closed_port()}/koverage",
        min_size=0,
        max_size=1,
        timeout=1.0,
        kwargs={"connect_timeout": 1},
        open=False,
    )
    await pool.open(wait=False)
    settings = Settings.from_env(
        {}, metrics_port=-1, api_keys="key-a=alpha", auth_required=True
    )
    server = MeshServer("underwriter", settings, "127.0.0.1:0")
    router = grpc.aio.insecure_channel(f"127.0.0.1:{_closed_port()}")
    servicer = EvaluationServicer(RunStore(pool), None, router, tmp_path)
    evaluation_pb2_grpc.add_EvaluationServiceServicer_to_server(servicer, server.grpc)
    await server.start()
    try:
        yield server.address
    finally:
        await server.stop(0.5)
        await router.close()
        await pool.close()


@pytest.mark.parametrize("method", sorted(_CALLS))
async def test_a_database_outage_is_unavailable(tmp_path, method):
    async with (
        underwriter_without_database(tmp_path) as address,
        connect(address, api_key="key-a") as channel,
    ):
        stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _CALLS[method](stub)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry" in caught.value.details()


@pytest.mark.parametrize("method", sorted(_CALLS))
async def test_a_missing_key_is_unauthenticated(tmp_path, method):
    async with (
        underwriter_without_database(tmp_path) as address,
        connect(address) as channel,
    ):
        stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _CALLS[method](stub)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
