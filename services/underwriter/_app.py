"""Builds the underwriter server from settings."""

import pathlib

from koverage.db import migrate, open_async_pool
from koverage.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc
from koverage.serving import MeshServer, connect
from koverage.settings import Settings
from services.underwriter._router_client import RouterGenerate
from services.underwriter._service import EvaluationServicer
from services.underwriter._store import RunStore

MIGRATIONS_DIR = pathlib.Path(__file__).with_name("migrations")


async def build_server(settings: Settings) -> MeshServer:
    """Migrates the database, opens the pool and the router channel, and
    returns the (not yet started) server."""
    if not settings.database_url:
        raise ValueError("the underwriter needs KOVERAGE_DATABASE_URL")
    migrate(settings.database_url, owner="underwriter", directory=MIGRATIONS_DIR)
    pool = await open_async_pool(settings.database_url, max_size=4, name="underwriter")
    store = RunStore(pool)
    abandoned = await store.fail_abandoned()
    channel = connect(settings.router_address, api_key=settings.client_api_key)
    work_dir = (
        pathlib.Path(settings.run_dir or pathlib.Path.home() / ".koverage")
        / "eval-runs"
    )
    servicer = EvaluationServicer(store, RouterGenerate(channel), channel, work_dir)

    server = MeshServer("underwriter", settings, settings.underwriter_address)
    evaluation_pb2_grpc.add_EvaluationServiceServicer_to_server(servicer, server.grpc)
    server.expose(evaluation_pb2.DESCRIPTOR.services_by_name["EvaluationService"])

    async def close() -> None:
        await servicer.close()
        await channel.close()
        await pool.close()

    server.on_stop(close)
    server.abandoned_runs = abandoned
    return server
