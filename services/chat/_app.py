"""Builds the chat service from settings: database, router client, server."""

import logging
import pathlib

from koverage.chat.v1 import chat_pb2, chat_pb2_grpc
from koverage.db import migrate, open_async_pool
from koverage.router.v1 import router_pb2_grpc
from koverage.serving import MeshServer, connect
from koverage.settings import Settings
from services.chat._generations import GenerationRegistry
from services.chat._models import ModelCatalog
from services.chat._servicer import ChatServicer
from services.chat._store import ChatStore

MIGRATIONS_DIR = pathlib.Path(__file__).parent / "migrations"
"""The chat service's schema migrations (`NNNN_description.sql`)."""

ABANDONED_REASON = "the chat process stopped while the answer was streaming"
"""failure_reason of messages a stopped process left streaming."""

_POOL_MAX_SIZE = 10
# How long a call waits for a pooled connection before it gets UNAVAILABLE:
# long enough for a burst of turns, short enough that a database outage is
# reported while the client still waits.
_POOL_TIMEOUT_S = 5.0

logger = logging.getLogger(__name__)


def migrate_database(database_url: str) -> int:
    """Applies the chat migrations the database lacks; returns how many.

    Raises:
        ValueError: `database_url` is empty.
        MigrationError: See `koverage.db.migrate`.
    """
    _require_database_url(database_url)
    return len(migrate(database_url, owner="chat", directory=MIGRATIONS_DIR))


async def build_server(settings: Settings, *, recover: bool = True) -> MeshServer:
    """The chat MeshServer, not yet started, with its pool and router channel.

    Args:
        settings: `database_url`, `router_address`, `client_api_key`,
            `chat_address`, `chat_default_model` and `chat_orphan_grace_s`
            are used.
        recover: Mark messages left `streaming` by a stopped process as
            failed before serving (see `ChatStore.fail_abandoned`, whose
            known limitation is why one chat process per database is
            assumed).

    Raises:
        ValueError: `database_url` is empty.
    """
    _require_database_url(settings.database_url)
    pool = await open_async_pool(
        settings.database_url,
        min_size=1,
        max_size=_POOL_MAX_SIZE,
        name="chat",
        timeout_s=_POOL_TIMEOUT_S,
    )
    store = ChatStore(pool)
    if recover:
        failed = await store.fail_abandoned(ABANDONED_REASON)
        if failed:
            logger.warning("marked %d abandoned streaming messages failed", failed)

    channel = connect(settings.router_address, api_key=settings.client_api_key)
    router = router_pb2_grpc.RouterServiceStub(channel)
    generations = GenerationRegistry(
        router, store, orphan_grace_s=settings.chat_orphan_grace_s
    )
    servicer = ChatServicer(
        store,
        ModelCatalog(router),
        generations,
        default_model=settings.chat_default_model,
    )
    server = MeshServer("chat", settings, settings.chat_address)
    chat_pb2_grpc.add_ChatServiceServicer_to_server(servicer, server.grpc)
    server.expose(chat_pb2.DESCRIPTOR.services_by_name["ChatService"])

    # Cleanups run last-registered first: generations, then channel, then pool.
    async def close_pool() -> None:
        await pool.close()

    async def close_channel() -> None:
        await channel.close()

    async def stop_generations() -> None:
        await generations.stop_all("the chat server stopped while the answer streamed")

    # Handlers cancelled at the end of the drain must not cancel their
    # generations: stop_generations then stores them failed, not cancelled.
    async def begin_draining() -> None:
        generations.begin_draining()

    server.on_draining(begin_draining)
    server.on_stop(close_pool)
    server.on_stop(close_channel)
    server.on_stop(stop_generations)
    return server


def _require_database_url(database_url: str) -> None:
    if not database_url:
        raise ValueError(
            "database_url is empty: set KOVERAGE_DATABASE_URL to the Postgres "
            "the chat service stores conversations in"
        )
