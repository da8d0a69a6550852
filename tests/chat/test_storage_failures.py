"""Storage failures: a final write that fails, text Postgres cannot hold,
and a database that goes away and comes back."""

import asyncio

import grpc
import psycopg
import pytest
from psycopg import sql

from koverage.chat.v1 import chat_pb2
from koverage.errors import UnavailableError
from services.chat import ABANDONED_REASON, migrate_database
from services.chat._store import ChatStore
from tests.chat.conftest import rpc_code, running_chat, stored_answer, stream_turn
from tests.engines import fresh_database, postgres_url
from tests.fixtures.openai_server import Scenario


class FailingFinishes:
    """Makes ChatStore.finish_message raise as an outage would, `failures`
    times (or until `healed` is set when `failures` is None)."""

    def __init__(self, monkeypatch, failures: int | None) -> None:
        self.failures = failures
        self.healed = False
        self.calls = 0
        real = ChatStore.finish_message

        async def finish_message(store, message_id, outcome):
            self.calls += 1
            if not self.healed and (self.failures is None or self.calls <= failures):
                raise UnavailableError(
                    "the chat database is unavailable (OperationalError); retry shortly"
                )
            return await real(store, message_id, outcome)

        monkeypatch.setattr(ChatStore, "finish_message", finish_message)


async def test_final_write_that_fails_twice_is_retried_and_stored(chat, monkeypatch):
    failing = FailingFinishes(monkeypatch, failures=2)

    turn = await stream_turn(chat.stub, content="hello", model="fixture/model")

    assert failing.calls == 3
    assert turn.completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    answer = await stored_answer(chat.stub, turn.started.conversation_id)
    assert answer.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    assert answer.content == "Hello from the fixture."


async def test_final_write_that_keeps_failing_reports_failed_not_complete(
    chat, monkeypatch
):
    failing = FailingFinishes(monkeypatch, failures=None)

    turn = await stream_turn(chat.stub, content="hello", model="fixture/model")
    conversation_id = turn.started.conversation_id

    # The client is told the truth: the answer arrived but is not stored.
    assert turn.text == "Hello from the fixture."
    assert turn.completed.status == chat_pb2.MESSAGE_STATUS_FAILED
    assert turn.completed.finish_reason == "error"
    assert "could not be stored" in turn.completed.reason
    assert "database is unavailable" in turn.completed.reason

    # Resume replays the same text and outcome while the row waits.
    resumed = [
        e
        async for e in chat.stub.ResumeGeneration(
            chat_pb2.ResumeGenerationRequest(message_id=turn.started.message_id),
            timeout=5,
        )
    ]
    assert "".join(e.delta.text for e in resumed[:-1]) == turn.text
    assert resumed[-1].completed.status == chat_pb2.MESSAGE_STATUS_FAILED
    cancel = chat.stub.CancelGeneration(
        chat_pb2.CancelGenerationRequest(message_id=turn.started.message_id),
        timeout=5,
    )
    assert await rpc_code(cancel) == grpc.StatusCode.FAILED_PRECONDITION

    # Once the database is back, the next turn works at once.
    failing.healed = True
    after = await stream_turn(chat.stub, conversation_id=conversation_id, content="2")
    assert after.completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    stored = await chat.stub.GetConversation(
        chat_pb2.GetConversationRequest(conversation_id=conversation_id), timeout=5
    )
    first_answer = stored.messages[1]
    assert first_answer.status == chat_pb2.MESSAGE_STATUS_FAILED
    assert first_answer.content == turn.text
    assert first_answer.failure_reason == turn.completed.reason
    # A failed turn is not history (the history rule), so only "2" was sent.
    assert chat.router.upstream.requests[-1].body["messages"] == [
        {"role": "user", "content": "2"}
    ]


async def test_unstored_outcome_is_stored_in_the_background_when_the_db_is_back(
    chat, monkeypatch
):
    failing = FailingFinishes(monkeypatch, failures=None)
    turn = await stream_turn(chat.stub, content="hello", model="fixture/model")
    assert turn.completed.status == chat_pb2.MESSAGE_STATUS_FAILED

    failing.healed = True
    answer = await stored_answer(chat.stub, turn.started.conversation_id)

    assert answer.status == chat_pb2.MESSAGE_STATUS_FAILED
    assert answer.content == turn.text
    assert answer.failure_reason == turn.completed.reason


async def test_nul_characters_in_model_output_are_removed_and_stored(chat):
    chat.router.upstream.script = [Scenario(tokens=("Hel\x00lo", "\x00", " world"))]

    turn = await stream_turn(chat.stub, content="hi", model="fixture/model")

    assert turn.completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    assert turn.text == "Hello world"
    assert [d.offset_chars for d in turn.deltas] == [0, 5]
    answer = await stored_answer(chat.stub, turn.started.conversation_id)
    assert answer.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    assert answer.content == "Hello world"


@pytest.fixture
def own_database_url():
    """A migrated database of this test alone, which it may take offline."""
    with fresh_database("koverage_test_chat_outage") as url:
        migrate_database(url)
        yield url


def _set_connections_allowed(database_url: str, allowed: bool) -> None:
    """Takes the database offline (refuses and ends its sessions) or back."""
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(postgres_url(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.SQL("true" if allowed else "false")
            )
        )
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


async def test_database_outage_is_unavailable_and_the_next_turn_works_after(
    router, own_database_url
):
    async with running_chat(router, own_database_url) as chat:
        first = await stream_turn(chat.stub, content="one", model="fixture/model")
        conversation_id = first.started.conversation_id

        _set_connections_allowed(own_database_url, False)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stream_turn(
                    chat.stub, conversation_id=conversation_id, content="two"
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "chat database is unavailable" in caught.value.details()
            listing = chat.stub.ListConversations(
                chat_pb2.ListConversationsRequest(), timeout=30
            )
            assert await rpc_code(listing) == grpc.StatusCode.UNAVAILABLE
        finally:
            _set_connections_allowed(own_database_url, True)

        # The pool reconnects; then the conversation continues as if nothing
        # happened (the refused turn stored nothing).
        for _ in range(100):
            try:
                await chat.stub.ListConversations(
                    chat_pb2.ListConversationsRequest(), timeout=30
                )
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.1)
        after = await stream_turn(
            chat.stub, conversation_id=conversation_id, content="three"
        )
        stored = await chat.stub.GetConversation(
            chat_pb2.GetConversationRequest(conversation_id=conversation_id),
            timeout=5,
        )

    assert after.completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    assert [m.content for m in stored.messages] == [
        "one",
        first.text,
        "three",
        after.text,
    ]


async def test_server_stopping_with_an_unstored_outcome_leaves_it_to_restart(
    router, database_url, monkeypatch
):
    failing = FailingFinishes(monkeypatch, failures=None)
    async with running_chat(router, database_url) as chat:
        turn = await stream_turn(chat.stub, content="hello", model="fixture/model")
    assert turn.completed.status == chat_pb2.MESSAGE_STATUS_FAILED

    # The stop gave up the background write; the next start recovers the row.
    failing.healed = True
    async with running_chat(router, database_url) as chat:
        answer = await stored_answer(chat.stub, turn.started.conversation_id)
        after = await stream_turn(
            chat.stub, conversation_id=turn.started.conversation_id, content="2"
        )

    assert answer.status == chat_pb2.MESSAGE_STATUS_FAILED
    assert answer.failure_reason == ABANDONED_REASON
    assert after.completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
