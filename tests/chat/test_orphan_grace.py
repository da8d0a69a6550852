"""The orphan grace: a dropped StreamChat caller can resume; nobody resuming
cancels to the provider; cancel_on_disconnect cancels at once; a stopping
server fails what still streams."""

import asyncio
import logging

import psycopg
import pytest

from koverage.chat.v1 import chat_pb2, chat_pb2_grpc
from koverage.serving import connect
from services.chat._generations import GenerationRegistry
from tests.chat.conftest import read_until_chars, running_chat, stored_answer
from tests.fixtures.openai_server import Scenario

_TOKENS = tuple(f" t{i}" for i in range(100))
_ANSWER = "".join(_TOKENS)
# 100 tokens 30 ms apart: still streaming when a test drops or resumes it.
_SLOW = Scenario(tokens=_TOKENS, inter_token_delay_s=0.03)
_GENERATIONS_LOGGER = "services.chat._generations"


async def _logged(caplog, message: str) -> None:
    """Waits until the generations logger has logged `message`."""
    for _ in range(200):
        if any(r.getMessage() == message for r in caplog.records):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never logged {message!r}")


async def _start_and_drop(address: str, chars: int, **fields):
    """Starts a StreamChat on its own channel, reads `chars` characters, then
    closes the channel as a client losing its connection would."""
    channel = connect(address)
    call = chat_pb2_grpc.ChatServiceStub(channel).StreamChat(
        chat_pb2.StreamChatRequest(
            content="long answer please", model="fixture/model", **fields
        ),
        timeout=30,
    )
    started, received = await read_until_chars(call, chars)
    await channel.close()
    return started, received


async def test_dropped_client_resumes_within_the_grace_and_gets_the_whole_answer(
    router, database_url, caplog
):
    caplog.set_level(logging.INFO, logger=_GENERATIONS_LOGGER)
    upstream = router.upstream
    upstream.default = _SLOW
    async with running_chat(router, database_url, chat_orphan_grace_s=600.0) as chat:
        started, received = await _start_and_drop(chat.address, 12)
        await _logged(caplog, "client left mid-stream; generation orphaned")

        resumed = [
            event
            async for event in chat.stub.ResumeGeneration(
                chat_pb2.ResumeGenerationRequest(
                    message_id=started.message_id, offset_chars=len(received)
                ),
                timeout=30,
            )
        ]
        answer = await stored_answer(chat.stub, started.conversation_id)

    # The resumer attached to the live generation, not to a stored one.
    assert any(
        r.getMessage() == "a watcher re-attached; orphaned generation continues"
        for r in caplog.records
    )
    deltas = [e.delta for e in resumed if e.HasField("delta")]
    assert deltas[0].offset_chars == len(received)
    assert received + "".join(d.text for d in deltas) == _ANSWER
    assert resumed[-1].completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    assert answer.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    assert answer.content == _ANSWER
    assert upstream.requests[0].finished
    assert not upstream.requests[0].closed_by_client
    assert not upstream.client_closed.is_set()


async def test_dropped_client_nobody_resumes_and_the_grace_ends_in_a_cancel(
    router, database_url, caplog
):
    caplog.set_level(logging.INFO, logger=_GENERATIONS_LOGGER)
    upstream = router.upstream
    upstream.default = _SLOW
    async with running_chat(router, database_url, chat_orphan_grace_s=0.5) as chat:
        started, received = await _start_and_drop(chat.address, 12)

        await asyncio.wait_for(upstream.client_closed.wait(), 10)
        answer = await stored_answer(chat.stub, started.conversation_id)

    messages = [r.getMessage() for r in caplog.records]
    orphaned = messages.index("client left mid-stream; generation orphaned")
    expired = messages.index(
        "no watcher re-attached in time; orphaned generation cancelled"
    )
    assert orphaned < expired
    assert "client left mid-stream; generation cancelled" not in messages
    assert answer.status == chat_pb2.MESSAGE_STATUS_CANCELLED
    assert answer.content.startswith(received)
    assert _ANSWER.startswith(answer.content)
    assert "no ResumeGeneration attached within 0.5 s" in answer.failure_reason
    assert upstream.requests[0].closed_by_client
    assert not upstream.requests[0].finished


async def test_cancel_on_disconnect_cancels_at_once_when_the_connection_drops(
    router, database_url, caplog
):
    caplog.set_level(logging.INFO, logger=_GENERATIONS_LOGGER)
    upstream = router.upstream
    upstream.default = _SLOW
    # A grace longer than the test: only the immediate cancel can stop it.
    async with running_chat(router, database_url, chat_orphan_grace_s=600.0) as chat:
        started, received = await _start_and_drop(
            chat.address, 12, cancel_on_disconnect=True
        )

        await asyncio.wait_for(upstream.client_closed.wait(), 10)
        answer = await stored_answer(chat.stub, started.conversation_id)

    messages = [r.getMessage() for r in caplog.records]
    assert "client left mid-stream; generation cancelled" in messages
    assert "client left mid-stream; generation orphaned" not in messages
    assert answer.status == chat_pb2.MESSAGE_STATUS_CANCELLED
    assert answer.content.startswith(received)
    assert "cancel_on_disconnect" in answer.failure_reason
    assert upstream.requests[0].closed_by_client


async def test_a_stopping_server_fails_streaming_answers_instead_of_cancelling(
    router, database_url, caplog
):
    caplog.set_level(logging.INFO, logger=_GENERATIONS_LOGGER)
    upstream = router.upstream
    upstream.default = _SLOW
    async with running_chat(router, database_url, chat_orphan_grace_s=600.0) as chat:
        calls = [
            chat.stub.StreamChat(
                chat_pb2.StreamChatRequest(
                    content=f"answer {i}",
                    model="fixture/model",
                    cancel_on_disconnect=flag,
                ),
                timeout=30,
            )
            for i, flag in enumerate((False, True))
        ]
        started = [(await read_until_chars(call, 4))[0] for call in calls]

        # A call ending while the server drains looks like the server's own
        # cancellation at the end of the drain: even cancel_on_disconnect
        # must not store it cancelled. The other call is ended by the server.
        stopping = asyncio.ensure_future(chat.server.stop(1.0))
        await _logged(
            caplog, "draining; generations whose watchers leave run on until stopped"
        )
        calls[1].cancel()
        await stopping

    for _ in range(200):
        if all(r.closed_by_client for r in upstream.requests):
            break
        await asyncio.sleep(0.05)
    assert len(upstream.requests) == 2
    assert all(r.closed_by_client and not r.finished for r in upstream.requests)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for event in started:
            cur = await conn.execute(
                "SELECT status, failure_reason FROM chat_messages WHERE id = %s",
                (event.message_id,),
            )
            status, reason = await cur.fetchone()
            assert status == "failed"
            assert "server stopped" in reason


def test_negative_orphan_grace_is_refused():
    with pytest.raises(ValueError, match="orphan_grace_s=-1"):
        GenerationRegistry(None, None, orphan_grace_s=-1)
