"""Chat test fixtures: real Postgres, a real router on loopback in front of
the simulator and a loopback OpenAI-compatible server, and the chat server."""

import asyncio
import contextlib
import dataclasses
import pathlib

import grpc
import psycopg
import pytest
import yaml

from koverage.chat.v1 import chat_pb2, chat_pb2_grpc
from koverage.serving import MeshServer, connect
from koverage.settings import Settings
from services.chat import build_server, migrate_database
from services.router import Router, load_catalog
from services.router import build_server as build_router_server
from services.router.providers import OpenAICompatibleProvider, SimulatorProvider
from tests.engines import fresh_database
from tests.fixtures.openai_server import OpenAICompatibleServer

CHAT_CATALOG = {
    "models": [
        {
            "id": "fixture/model",
            "provider": "openai_compatible",
            "provider_model": "fixture-model",
            "input_usd_per_mtok": "2.00",
            "output_usd_per_mtok": "8.00",
            "context_window_tokens": 4096,
        },
        # The loopback provider behind a 256-token window: tests see exactly
        # which history the trimming rule kept.
        {
            "id": "fixture/tiny",
            "provider": "openai_compatible",
            "provider_model": "fixture-model",
            "input_usd_per_mtok": "2.00",
            "output_usd_per_mtok": "8.00",
            "context_window_tokens": 256,
        },
        {
            "id": "sim/steady",
            "provider": "simulator",
            "persona": "steady",
            "input_usd_per_mtok": "0.50",
            "output_usd_per_mtok": "1.50",
            "context_window_tokens": 8192,
        },
        {
            "id": "sim/fast",
            "provider": "simulator",
            "persona": "fast",
            "input_usd_per_mtok": "0.10",
            "output_usd_per_mtok": "0.40",
            "context_window_tokens": 8192,
        },
        {
            "id": "sim/slow",
            "provider": "simulator",
            "persona": "slow",
            "input_usd_per_mtok": "0.50",
            "output_usd_per_mtok": "1.50",
            "context_window_tokens": 8192,
        },
        {
            "id": "sim/tiny-context",
            "provider": "simulator",
            "persona": "steady",
            "input_usd_per_mtok": "0.50",
            "output_usd_per_mtok": "1.50",
            "context_window_tokens": 256,
        },
    ]
}


@dataclasses.dataclass
class RouterHandle:
    """A running router and the loopback provider behind `fixture/model`."""

    address: str
    upstream: OpenAICompatibleServer


@dataclasses.dataclass
class ChatHandle:
    """A running chat server and a client stub for it."""

    server: MeshServer
    stub: chat_pb2_grpc.ChatServiceStub
    settings: Settings
    router: RouterHandle

    @property
    def address(self) -> str:
        return self.server.address


@pytest.fixture(scope="session")
def migrated_database_url():
    """One migrated database for the session, dropped at its end."""
    with fresh_database("koverage_test_chat") as url:
        migrate_database(url)
        yield url


@pytest.fixture
def database_url(migrated_database_url):
    """The session's database, emptied before the test."""
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE chat_conversations, chat_messages")
    return migrated_database_url


@pytest.fixture
async def router(tmp_path: pathlib.Path):
    """A real router server on loopback with the chat test catalog."""
    catalog_path = tmp_path / "catalog.yaml"
    catalog_path.write_text(yaml.safe_dump(CHAT_CATALOG))
    async with OpenAICompatibleServer() as upstream:
        provider = OpenAICompatibleProvider("openai_compatible", upstream.base_url, "k")
        router = Router(
            load_catalog(catalog_path),
            {"openai_compatible": provider, "simulator": SimulatorProvider()},
            retry_wait_max_s=0.05,
        )
        settings = Settings.from_env(
            {}, router_address="127.0.0.1:0", metrics_port=-1, shutdown_grace_s=0.5
        )
        server = build_router_server(settings, router)
        await server.start()
        try:
            yield RouterHandle(server.address, upstream)
        finally:
            await server.stop(0.5)


@contextlib.asynccontextmanager
async def running_chat(router: RouterHandle, database_url: str, **overrides):
    """Starts a chat server; yields a ChatHandle with a stub using `api_key`."""
    api_key = overrides.pop("api_key", "")
    settings = Settings.from_env(
        {},
        chat_address="127.0.0.1:0",
        router_address=router.address,
        database_url=database_url,
        metrics_port=-1,
        shutdown_grace_s=0.5,
        **overrides,
    )
    server = await build_server(settings)
    await server.start()
    channel = connect(server.address, api_key=api_key)
    try:
        yield ChatHandle(
            server, chat_pb2_grpc.ChatServiceStub(channel), settings, router
        )
    finally:
        await channel.close()
        await server.stop(0.5)


@pytest.fixture
async def chat(router: RouterHandle, database_url: str):
    """A chat server without authentication (tenant `default`).

    Its orphan grace is far longer than any test, so an orphaned generation
    is only ever cancelled by the behaviour a test exercises.
    """
    async with running_chat(router, database_url, chat_orphan_grace_s=600.0) as handle:
        yield handle


@dataclasses.dataclass
class Turn:
    """What one StreamChat call returned."""

    started: chat_pb2.ChatStarted
    deltas: list[chat_pb2.ChatDelta]
    completed: chat_pb2.ChatCompleted | None

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas)


async def stream_turn(stub: chat_pb2_grpc.ChatServiceStub, **fields) -> Turn:
    """Runs one StreamChat call to its end."""
    started, deltas, completed = None, [], None
    async for event in stub.StreamChat(
        chat_pb2.StreamChatRequest(**fields), timeout=30
    ):
        kind = event.WhichOneof("event")
        if kind == "started":
            started = event.started
        elif kind == "delta":
            deltas.append(event.delta)
        else:
            completed = event.completed
    return Turn(started, deltas, completed)


async def rpc_code(awaitable) -> grpc.StatusCode:
    """Awaits a unary call that must fail; returns its status code."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    return caught.value.code()


async def read_until_chars(call, chars: int):
    """Reads a StreamChat call until `chars` characters arrived; returns the
    started event and the text."""
    started, text = None, ""
    async for event in call:
        if event.HasField("started"):
            started = event.started
        elif event.HasField("delta"):
            assert event.delta.offset_chars == len(text)
            text += event.delta.text
            if len(text) >= chars:
                return started, text
    raise AssertionError("stream ended early")


async def stored_answer(stub, conversation_id: str) -> chat_pb2.Message:
    """The conversation's last message once it stopped streaming."""
    for _ in range(200):
        stored = await stub.GetConversation(
            chat_pb2.GetConversationRequest(conversation_id=conversation_id), timeout=5
        )
        answer = stored.messages[-1]
        if answer.status != chat_pb2.MESSAGE_STATUS_STREAMING:
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError("the answer stayed streaming")
