"""A killed chat process, restart and recovery; schema upgrades in place."""

import asyncio
import contextlib
import json
import os
import pathlib
import shutil
import signal
import sys
import uuid

import psycopg

from koverage.chat.v1 import chat_pb2, chat_pb2_grpc
from koverage.db import applied_migrations, migrate
from koverage.serving import connect
from services.chat import ABANDONED_REASON, MIGRATIONS_DIR, migrate_database
from tests.chat.conftest import running_chat, stream_turn
from tests.engines import fresh_database
from tests.fixtures.openai_server import Scenario

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
_SLOW_TOKENS = tuple(f" t{i}" for i in range(200))


@contextlib.asynccontextmanager
async def chat_process(router_address: str, database_url: str):
    """Runs `python -m services.chat`; yields (process, address)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOVERAGE_")}
    env.update(
        KOVERAGE_CHAT_ADDRESS="127.0.0.1:0",
        KOVERAGE_ROUTER_ADDRESS=router_address,
        KOVERAGE_DATABASE_URL=database_url,
        KOVERAGE_METRICS_PORT="-1",
        KOVERAGE_SHUTDOWN_GRACE_S="0.5",
        KOVERAGE_LOG_LEVEL="INFO",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.chat",
        cwd=_REPO_ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    drain = None
    try:
        address = await asyncio.wait_for(_listening_address(process), 30)
        # Keep reading stderr so the child never blocks on a full pipe.
        drain = asyncio.ensure_future(process.stderr.read())
        yield process, address
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        if drain is not None:
            await drain


async def _listening_address(process) -> str:
    seen = []
    while line := await process.stderr.readline():
        seen.append(line.decode(errors="replace"))
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("msg") == "listening":
                return entry["address"]
    raise AssertionError("chat exited before listening:\n" + "".join(seen[-20:]))


async def _stored_row(database_url: str, message_id: str) -> tuple[str, str, str]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT status, content, failure_reason FROM chat_messages WHERE id = %s",
            (message_id,),
        )
        return await cur.fetchone()


async def test_killed_process_leaves_a_failed_message_and_next_turn_works(
    router, database_url
):
    upstream = router.upstream
    upstream.default = Scenario(tokens=_SLOW_TOKENS, inter_token_delay_s=0.05)

    async with chat_process(router.address, database_url) as (process, address):
        channel = connect(address)
        try:
            call = chat_pb2_grpc.ChatServiceStub(channel).StreamChat(
                chat_pb2.StreamChatRequest(content="long", model="fixture/model"),
                timeout=30,
            )
            started = (await call.read()).started
            # Wait until some partial text is stored, then kill mid-stream.
            for _ in range(200):
                status, content, _ = await _stored_row(database_url, started.message_id)
                if content:
                    break
                await asyncio.sleep(0.05)
            process.send_signal(signal.SIGKILL)
            await process.wait()
        finally:
            await channel.close()

    status, content, _ = await _stored_row(database_url, started.message_id)
    assert status == "streaming"  # nobody could write the end
    assert content and "".join(_SLOW_TOKENS).startswith(content)
    await asyncio.wait_for(upstream.client_closed.wait(), 10)

    upstream.default = Scenario()
    async with chat_process(router.address, database_url) as (_, address):
        channel = connect(address)
        try:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            stored = await stub.GetConversation(
                chat_pb2.GetConversationRequest(
                    conversation_id=started.conversation_id
                ),
                timeout=5,
            )
            after = await stream_turn(
                stub, conversation_id=started.conversation_id, content="again"
            )
        finally:
            await channel.close()

    answer = stored.messages[-1]
    assert answer.status == chat_pb2.MESSAGE_STATUS_FAILED
    assert answer.failure_reason == ABANDONED_REASON
    assert answer.content == content
    assert after.completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    assert upstream.requests[-1].body["messages"] == [
        {"role": "user", "content": "again"}
    ]


async def test_an_existing_database_is_upgraded_in_place(router, tmp_path):
    first_only = tmp_path / "migrations"
    first_only.mkdir()
    shutil.copy(MIGRATIONS_DIR / "0001_conversations.sql", first_only)
    conversation_id, user_id, answer_id = (str(uuid.uuid4()) for _ in range(3))

    with fresh_database("koverage_test_chat_upgrade") as url:
        migrate(url, owner="chat", directory=first_only)
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO chat_conversations (id, tenant, title, model) "
                "VALUES (%s, 'default', 'old', 'fixture/model')",
                (conversation_id,),
            )
            conn.execute(
                "INSERT INTO chat_messages (id, conversation_id, role, content, status)"
                " VALUES (%s, %s, 'user', 'Remember 42.', 'complete'),"
                " (%s, %s, 'assistant', 'Noted: 42.', 'complete')",
                (user_id, conversation_id, answer_id, conversation_id),
            )

        assert migrate_database(url) == 1
        assert [m.version for m in applied_migrations(url, "chat")] == [1, 2]
        assert migrate_database(url) == 0

        async with running_chat(router, url) as chat:
            resumed = [
                e
                async for e in chat.stub.ResumeGeneration(
                    chat_pb2.ResumeGenerationRequest(message_id=answer_id), timeout=5
                )
            ]
            turn = await stream_turn(
                chat.stub, conversation_id=conversation_id, content="What number?"
            )

    assert resumed[0].delta.text == "Noted: 42."
    assert resumed[-1].completed.finish_reason == "stop"
    assert turn.completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    assert router.upstream.requests[0].body["messages"] == [
        {"role": "user", "content": "Remember 42."},
        {"role": "assistant", "content": "Noted: 42."},
        {"role": "user", "content": "What number?"},
    ]


async def test_upgrade_keeps_one_streaming_answer_per_conversation(router, tmp_path):
    first_only = tmp_path / "migrations"
    first_only.mkdir()
    shutil.copy(MIGRATIONS_DIR / "0001_conversations.sql", first_only)
    crowded, single = str(uuid.uuid4()), str(uuid.uuid4())
    older, newer, alone = (str(uuid.uuid4()) for _ in range(3))

    with fresh_database("koverage_test_chat_upgrade_dups") as url:
        migrate(url, owner="chat", directory=first_only)
        with psycopg.connect(url) as conn:
            for conversation_id in (crowded, single):
                conn.execute(
                    "INSERT INTO chat_conversations (id, tenant, title, model) "
                    "VALUES (%s, 'default', 'old', 'fixture/model')",
                    (conversation_id,),
                )
            # Two answers left streaming in one conversation, one in another.
            for message_id, conversation_id in (
                (older, crowded),
                (newer, crowded),
                (alone, single),
            ):
                conn.execute(
                    "INSERT INTO chat_messages (id, conversation_id, role, "
                    "content, status) VALUES (%s, %s, 'user', 'q', 'complete'), "
                    "(%s, %s, 'assistant', 'part', 'streaming')",
                    (str(uuid.uuid4()), conversation_id, message_id, conversation_id),
                )

        assert migrate_database(url) == 1
        rows = {m: await _stored_row(url, m) for m in (older, newer, alone)}
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute(
                "SELECT finish_reason FROM chat_messages WHERE id = %s", (older,)
            )
            (older_finish,) = await cur.fetchone()

        async with running_chat(router, url) as chat:
            turn = await stream_turn(chat.stub, conversation_id=crowded, content="go")
            stored = await chat.stub.GetConversation(
                chat_pb2.GetConversationRequest(conversation_id=crowded), timeout=5
            )

    assert rows[older][:2] == ("failed", "part")
    assert "newer answer in the same conversation" in rows[older][2]
    assert older_finish == "error"
    assert rows[newer] == ("streaming", "part", "")
    assert rows[alone] == ("streaming", "part", "")
    # Start-up recovery fails the newest; the conversation then goes on.
    assert stored.messages[3].status == chat_pb2.MESSAGE_STATUS_FAILED
    assert stored.messages[3].failure_reason == ABANDONED_REASON
    assert turn.completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
