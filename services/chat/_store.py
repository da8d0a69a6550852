"""Conversations and messages in Postgres, written synchronously.

Every method runs in its own transaction and filters by tenant, so a
conversation of another tenant looks exactly like one that does not exist.
A turn starts with one transaction that stores the user message and an
assistant message with status `streaming`; the generation then updates that
row while it streams and once more when it ends.

Database errors are translated here, once: a lost connection, a server
shutting down or a pool that gives no connection in time
(`psycopg.OperationalError`, which `PoolTimeout` and `TooManyRequests`
extend) become `UnavailableError`, so callers see UNAVAILABLE with a clear
message rather than INTERNAL.
"""

import dataclasses
import datetime
import logging
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TypeVar

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from koverage.db import pooled_connection
from koverage.errors import FailedPreconditionError, NotFoundError

T = TypeVar("T")

_CONVERSATION_COLUMNS = """
    c.id::text AS id, c.tenant, c.title, c.model, c.system_prompt,
    c.create_time, c.update_time,
    (SELECT count(*) FROM chat_messages m WHERE m.conversation_id = c.id)::int
        AS message_count
"""
_MESSAGE_COLUMNS = """
    m.id::text AS id, m.conversation_id::text AS conversation_id, m.role,
    m.content, m.status, m.model, m.input_tokens, m.output_tokens, m.cost_usd,
    m.failure_reason, m.create_time, m.provider, m.finish_reason,
    m.usage_estimated, m.time_to_first_token_ms, m.history_messages_dropped,
    m.trace_id
"""

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ConversationRecord:
    """One row of chat_conversations, with its message count."""

    id: str
    tenant: str
    title: str
    model: str
    system_prompt: str
    create_time: datetime.datetime
    update_time: datetime.datetime
    message_count: int


@dataclasses.dataclass(frozen=True)
class MessageRecord:
    """One row of chat_messages."""

    id: str
    conversation_id: str
    role: str
    content: str
    status: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    failure_reason: str
    create_time: datetime.datetime
    provider: str
    finish_reason: str
    usage_estimated: bool
    time_to_first_token_ms: float | None
    history_messages_dropped: int
    trace_id: str


@dataclasses.dataclass(frozen=True)
class NewConversation:
    """What a turn without a conversation id creates."""

    title: str
    model: str
    system_prompt: str


@dataclasses.dataclass(frozen=True)
class Turn:
    """A stored turn: its conversation, the user message and the answer row."""

    conversation: ConversationRecord
    user_message: MessageRecord
    assistant_message: MessageRecord


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a generation ended, as stored on its assistant message."""

    status: str
    content: str
    model: str
    provider: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: Decimal = Decimal(0)
    finish_reason: str = ""
    failure_reason: str = ""
    time_to_first_token_ms: float | None = None
    history_messages_dropped: int = 0
    trace_id: str = ""


class ChatStore:
    """The chat service's tables, through an asyncio connection pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def create_conversation(
        self, tenant: str, spec: NewConversation
    ) -> ConversationRecord:
        """Stores an empty conversation and returns it."""
        async with self._connection() as conn:
            return await _insert_conversation(conn, tenant, spec)

    async def list_conversations(
        self,
        tenant: str,
        limit: int,
        after: tuple[datetime.datetime, str] | None = None,
    ) -> list[ConversationRecord]:
        """Returns up to `limit` conversations, newest first, older than `after`.

        Args:
            tenant: Owner of the conversations.
            limit: Most rows returned.
            after: (create_time, id) of the last row of the previous page.
        """
        where = "c.tenant = %s"
        params: list[object] = [tenant]
        if after is not None:
            where += " AND (c.create_time, c.id) < (%s, %s::uuid)"
            params += [after[0], after[1]]
        params.append(limit)
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=class_row(ConversationRecord))
            await cur.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM chat_conversations c "
                f"WHERE {where} ORDER BY c.create_time DESC, c.id DESC LIMIT %s",
                params,
            )
            return await cur.fetchall()

    async def get_conversation(
        self, tenant: str, conversation_id: str
    ) -> ConversationRecord:
        """Returns the conversation.

        Raises:
            NotFoundError: No such conversation for this tenant.
        """
        async with self._connection() as conn:
            return await _conversation(conn, tenant, conversation_id)

    async def get_conversation_with_messages(
        self, tenant: str, conversation_id: str
    ) -> tuple[ConversationRecord, list[MessageRecord]]:
        """Returns the conversation and its messages, oldest first.

        Raises:
            NotFoundError: No such conversation for this tenant.
        """
        async with self._connection() as conn, conn.transaction():
            conversation = await _conversation(conn, tenant, conversation_id)
            messages = await _messages(conn, conversation_id)
        return conversation, messages

    async def delete_conversation(self, tenant: str, conversation_id: str) -> None:
        """Deletes the conversation and its messages.

        Raises:
            NotFoundError: No such conversation for this tenant.
        """
        async with self._connection() as conn:
            cur = await conn.execute(
                "DELETE FROM chat_conversations WHERE id = %s AND tenant = %s",
                (conversation_id, tenant),
            )
            if cur.rowcount == 0:
                raise _conversation_not_found(conversation_id)

    async def start_turn(
        self,
        tenant: str,
        conversation_id: str | None,
        new_conversation: NewConversation | None,
        user_content: str,
        model: str,
        trace_id: str,
        plan: Callable[[ConversationRecord, list[MessageRecord]], Awaitable[T]],
    ) -> tuple[Turn, T]:
        """Stores a user message and a streaming answer row in one transaction.

        The conversation row is locked for the transaction, so two turns on
        one conversation are ordered; the unique index on streaming rows
        refuses a second turn while one is streaming.

        Args:
            tenant: Owner.
            conversation_id: The conversation to continue, or None to create
                `new_conversation`.
            new_conversation: Used when `conversation_id` is None.
            user_content: The user's message.
            model: Model answering this turn.
            trace_id: Hex trace id stored on both messages.
            plan: Called with the conversation and its earlier messages
                before anything is written; what it returns comes back with
                the turn, and what it raises rolls the turn back.

        Raises:
            NotFoundError: The conversation does not exist for this tenant.
            FailedPreconditionError: It already has a generation streaming.
        """
        async with self._connection() as conn:
            try:
                async with conn.transaction():
                    if conversation_id is None:
                        assert new_conversation is not None
                        conversation = await _insert_conversation(
                            conn, tenant, new_conversation
                        )
                        history: list[MessageRecord] = []
                    else:
                        conversation = await _conversation(
                            conn, tenant, conversation_id, lock=True
                        )
                        history = await _messages(conn, conversation.id)
                    planned = await plan(conversation, history)
                    user = await _insert_message(
                        conn,
                        conversation.id,
                        "user",
                        user_content,
                        "complete",
                        "",
                        trace_id,
                    )
                    answer = await _insert_message(
                        conn,
                        conversation.id,
                        "assistant",
                        "",
                        "streaming",
                        model,
                        trace_id,
                    )
                    await conn.execute(
                        "UPDATE chat_conversations SET update_time = now() "
                        "WHERE id = %s",
                        (conversation.id,),
                    )
            except psycopg.errors.UniqueViolation as exc:
                raise FailedPreconditionError(
                    f"conversation {conversation_id} already has a generation "
                    "streaming; wait for it, resume it or cancel it first"
                ) from exc
        return Turn(conversation, user, answer), planned

    async def save_progress(self, message_id: str, content: str) -> None:
        """Stores the partial answer of a message that is still streaming."""
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE chat_messages SET content = %s, update_time = now() "
                "WHERE id = %s AND status = 'streaming'",
                (content, message_id),
            )

    async def finish_message(
        self, message_id: str, outcome: Outcome
    ) -> MessageRecord | None:
        """Stores how a streaming message ended; None if it was not streaming
        any more (deleted with its conversation, or marked failed at start)."""
        async with self._connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=class_row(MessageRecord))
            await cur.execute(
                "UPDATE chat_messages m SET status = %s, content = %s, "
                "model = %s, provider = %s, input_tokens = %s, "
                "output_tokens = %s, usage_estimated = %s, cost_usd = %s, "
                "finish_reason = %s, failure_reason = %s, "
                "time_to_first_token_ms = %s, history_messages_dropped = %s, "
                "trace_id = CASE WHEN %s = '' THEN m.trace_id ELSE %s END, "
                "update_time = now() "
                f"WHERE m.id = %s AND m.status = 'streaming' "
                f"RETURNING {_MESSAGE_COLUMNS}",
                (
                    outcome.status,
                    outcome.content,
                    outcome.model,
                    outcome.provider,
                    outcome.input_tokens,
                    outcome.output_tokens,
                    outcome.usage_estimated,
                    outcome.cost_usd,
                    outcome.finish_reason,
                    outcome.failure_reason,
                    outcome.time_to_first_token_ms,
                    outcome.history_messages_dropped,
                    outcome.trace_id,
                    outcome.trace_id,
                    message_id,
                ),
            )
            record = await cur.fetchone()
            if record is not None:
                await conn.execute(
                    "UPDATE chat_conversations SET update_time = now() WHERE id = %s",
                    (record.conversation_id,),
                )
        return record

    async def get_assistant_message(
        self, tenant: str, message_id: str
    ) -> MessageRecord:
        """Returns an assistant message of the tenant.

        Raises:
            NotFoundError: No such generation for this tenant.
        """
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=class_row(MessageRecord))
            await cur.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM chat_messages m "
                "JOIN chat_conversations c ON c.id = m.conversation_id "
                "WHERE m.id = %s AND c.tenant = %s AND m.role = 'assistant'",
                (message_id, tenant),
            )
            record = await cur.fetchone()
        if record is None:
            raise NotFoundError(
                f"generation {message_id} not found; use the message_id of a "
                "ChatStarted event"
            )
        return record

    async def fail_abandoned(self, reason: str) -> int:
        """Marks every message still `streaming` as failed with `reason`.

        Run once at start, before serving: no generation of this process
        exists yet, so any streaming row was left by a process that stopped.

        Known limitation: one chat process per database is assumed. A live
        generation exists only in the memory of the process running it, and
        a streaming row records neither its owner nor whether that owner is
        alive, so a starting process cannot tell a row left by a dead
        process from one another replica is streaming right now. With
        several replicas, each start fails the others' live answers (their
        final writes then find the row no longer streaming and are lost),
        and CancelGeneration or ResumeGeneration reaching the wrong replica
        answers UNAVAILABLE. Run one chat replica per database. Recording
        the owning process and a heartbeat on each streaming row, failing
        only rows whose heartbeat is stale, and routing Cancel and Resume to
        the owner would make replicas safe.

        Returns:
            How many messages were marked failed.
        """
        async with self._connection() as conn:
            cur = await conn.execute(
                "UPDATE chat_messages SET status = 'failed', failure_reason = %s, "
                "finish_reason = 'error', update_time = now() "
                "WHERE status = 'streaming'",
                (reason,),
            )
            return cur.rowcount

    def _connection(self):
        """A pooled connection; database outages raise UnavailableError."""
        return pooled_connection(self._pool, "the chat database")


async def _insert_conversation(
    conn: psycopg.AsyncConnection, tenant: str, spec: NewConversation
) -> ConversationRecord:
    cur = conn.cursor(row_factory=class_row(ConversationRecord))
    await cur.execute(
        "INSERT INTO chat_conversations AS c (id, tenant, title, model, system_prompt)"
        " VALUES (%s, %s, %s, %s, %s) "
        f"RETURNING {_CONVERSATION_COLUMNS}",
        (str(uuid.uuid4()), tenant, spec.title, spec.model, spec.system_prompt),
    )
    record = await cur.fetchone()
    assert record is not None
    return record


async def _conversation(
    conn: psycopg.AsyncConnection, tenant: str, conversation_id: str, *, lock=False
) -> ConversationRecord:
    cur = conn.cursor(row_factory=class_row(ConversationRecord))
    await cur.execute(
        f"SELECT {_CONVERSATION_COLUMNS} FROM chat_conversations c "
        "WHERE c.id = %s AND c.tenant = %s" + (" FOR UPDATE" if lock else ""),
        (conversation_id, tenant),
    )
    record = await cur.fetchone()
    if record is None:
        raise _conversation_not_found(conversation_id)
    return record


async def _messages(
    conn: psycopg.AsyncConnection, conversation_id: str
) -> list[MessageRecord]:
    cur = conn.cursor(row_factory=class_row(MessageRecord))
    await cur.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM chat_messages m "
        "WHERE m.conversation_id = %s ORDER BY m.position",
        (conversation_id,),
    )
    return await cur.fetchall()


async def _insert_message(
    conn: psycopg.AsyncConnection,
    conversation_id: str,
    role: str,
    content: str,
    status: str,
    model: str,
    trace_id: str,
) -> MessageRecord:
    cur = conn.cursor(row_factory=class_row(MessageRecord))
    await cur.execute(
        "INSERT INTO chat_messages AS m "
        "(id, conversation_id, role, content, status, model, trace_id) "
        f"VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_MESSAGE_COLUMNS}",
        (str(uuid.uuid4()), conversation_id, role, content, status, model, trace_id),
    )
    record = await cur.fetchone()
    assert record is not None
    return record


def _conversation_not_found(conversation_id: str) -> NotFoundError:
    return NotFoundError(
        f"conversation {conversation_id} not found; ListConversations shows "
        "the ones this API key can see"
    )
