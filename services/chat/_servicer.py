"""ChatService over gRPC: validation, tenancy and the turn lifecycle."""

import asyncio
import base64
import binascii
import datetime
import json
import logging
import time
import uuid

from opentelemetry import trace

from koverage.chat.v1 import chat_pb2, chat_pb2_grpc
from koverage.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
)
from koverage.serving import current_tenant
from services.chat._convert import (
    completed_from_record,
    conversation_to_proto,
    message_to_proto,
)
from services.chat._generations import Generation, GenerationRegistry, GenerationSpec
from services.chat._history import plan_prompt
from services.chat._models import ModelCatalog
from services.chat._store import ChatStore, NewConversation, Outcome

MAX_CONTENT_CHARS = 32_768
"""Longest user message, in characters."""

MAX_TITLE_CHARS = 200
"""Longest conversation title, in characters."""

MAX_SYSTEM_PROMPT_CHARS = 8_192
"""Longest system prompt, in characters."""

_DEFAULT_PAGE_SIZE = 20
_MAX_PAGE_SIZE = 100
_AUTO_TITLE_CHARS = 60
_CANCEL_WAIT_S = 10.0

# gRPC shows a client that cancels its call, one whose connection broke,
# and a server stopping past its grace period the same way: the handler is
# cancelled. So an early end orphans the generation instead of cancelling
# it (see GenerationRegistry.watching): it runs on for the orphan grace
# period, a ResumeGeneration can pick it up, and otherwise it is cancelled.
#
# Known limitation: a client that cancels on purpose pays for up to the
# grace period of provider tokens unless it sets cancel_on_disconnect, and
# a client whose reconnect takes longer than the grace finds a cancelled,
# partial answer. While the server drains, even cancel_on_disconnect calls
# leave their generation running until the drain ends (at most
# KOVERAGE_SHUTDOWN_GRACE_S), because the server's own cancellation then is
# indistinguishable from the client's; the answer is then stored failed.
# A client-sent "stop" message (a bidirectional stream, or a
# CancelGeneration sent before hanging up) would remove the ambiguity.
# A call that ends before its turn is stored (no generation yet) still
# closes the answer as cancelled at once.
_CALL_ENDED_REASON = (
    "the StreamChat call ended before the answer was stored (the client "
    "cancelled or disconnected, or the server stopped)"
)

logger = logging.getLogger(__name__)


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    """Conversations per tenant, answers streamed through the router."""

    def __init__(
        self,
        store: ChatStore,
        catalog: ModelCatalog,
        generations: GenerationRegistry,
        *,
        default_model: str,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._generations = generations
        self._default_model = default_model

    async def StreamChat(self, request: chat_pb2.StreamChatRequest, context):
        requested_at = time.perf_counter()
        tenant = current_tenant()
        content = _checked_content(request.content)
        _check_text(request.system_prompt, MAX_SYSTEM_PROMPT_CHARS, "system_prompt")
        temperature = request.temperature if request.HasField("temperature") else None
        if temperature is not None and not 0.0 <= temperature <= 2.0:
            raise InvalidArgumentError(
                f"temperature={temperature} must be in [0, 2]", field="temperature"
            )
        max_output_tokens = (
            request.max_output_tokens if request.HasField("max_output_tokens") else None
        )
        if max_output_tokens == 0:
            raise InvalidArgumentError(
                "max_output_tokens must be at least 1 when set",
                field="max_output_tokens",
            )

        # Find the model first: an unknown model changes nothing. A turn
        # that names its model reads the conversation only in start_turn
        # (one database round trip fewer before the first token), unless
        # the model lookup fails: then an unknown conversation is still
        # reported first, as when the conversation is read up front.
        conversation_id = None
        new_conversation = None
        if request.conversation_id:
            conversation_id = _parse_id(request.conversation_id, "conversation_id")
        if conversation_id is not None and not request.model:
            existing = await self._store.get_conversation(tenant, conversation_id)
            model = await self._catalog.get(existing.model)
        elif conversation_id is not None:
            try:
                model = await self._catalog.get(request.model)
            except Exception:
                await self._store.get_conversation(tenant, conversation_id)
                raise
        else:
            model_id = request.model or self._default_model
            new_conversation = NewConversation(
                title=_auto_title(content),
                model=model_id,
                system_prompt=request.system_prompt,
            )
            model = await self._catalog.get(model_id)

        async def plan(conversation, history):
            return plan_prompt(
                system_prompt=conversation.system_prompt,
                history=history,
                new_content=content,
                model=model.id,
                context_window_tokens=model.context_window_tokens,
                max_output_tokens=max_output_tokens,
            )

        trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")

        def start_turn():
            return self._store.start_turn(
                tenant,
                conversation_id,
                new_conversation,
                content,
                model.id,
                trace_id,
                plan,
            )

        # A row left streaming by a final write that failed (its outcome is
        # still waiting for the database) blocks the turn; store it and retry.
        try:
            turn, prompt = await self._store_turn(start_turn())
        except FailedPreconditionError:
            if conversation_id is None or not await self._generations.store_unstored(
                tenant, conversation_id
            ):
                raise
            turn, prompt = await self._store_turn(start_turn())
        generation = self._generations.start(
            GenerationSpec(
                tenant=tenant,
                conversation_id=turn.conversation.id,
                message_id=turn.assistant_message.id,
                model=model,
                plan=prompt,
                guardrail=request.guardrail,
                temperature=temperature,
                max_output_tokens=max_output_tokens,
                trace_id=trace_id,
                requested_at=requested_at,
            )
        )

        # Follow the generation; if this call ends first (the client
        # cancelled it or went away), the registry orphans or cancels it.
        with self._generations.watching(
            generation, cancel_on_leave=request.cancel_on_disconnect
        ):
            yield chat_pb2.StreamChatResponse(
                started=chat_pb2.ChatStarted(
                    conversation_id=turn.conversation.id,
                    user_message_id=turn.user_message.id,
                    message_id=turn.assistant_message.id,
                    model=model.id,
                )
            )
            async for response in generation.follow(
                0, wrap_delta=_stream_chat_delta, wrap_completed=_stream_chat_completed
            ):
                yield response

    async def _store_turn(self, storing):
        """Awaits `start_turn`; if this call is cancelled meanwhile, lets the
        write finish and closes the stored answer as cancelled, so no row is
        left streaming without a generation behind it."""
        task = asyncio.ensure_future(storing)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            try:
                turn, _ = await task
                await self._store.finish_message(
                    turn.assistant_message.id,
                    Outcome(
                        status="cancelled",
                        content="",
                        model=turn.assistant_message.model,
                        finish_reason="cancelled",
                        failure_reason=_CALL_ENDED_REASON,
                    ),
                )
            except Exception:
                logger.debug("turn abandoned before it was stored", exc_info=True)
            raise

    async def CreateConversation(
        self, request: chat_pb2.CreateConversationRequest, context
    ) -> chat_pb2.CreateConversationResponse:
        tenant = current_tenant()
        _check_text(request.title, MAX_TITLE_CHARS, "title")
        _check_text(request.system_prompt, MAX_SYSTEM_PROMPT_CHARS, "system_prompt")
        model = await self._catalog.get(request.model or self._default_model)
        record = await self._store.create_conversation(
            tenant,
            NewConversation(
                title=request.title.strip(),
                model=model.id,
                system_prompt=request.system_prompt,
            ),
        )
        return chat_pb2.CreateConversationResponse(
            conversation=conversation_to_proto(record)
        )

    async def ListConversations(
        self, request: chat_pb2.ListConversationsRequest, context
    ) -> chat_pb2.ListConversationsResponse:
        tenant = current_tenant()
        page_size = request.page_size or _DEFAULT_PAGE_SIZE
        if page_size > _MAX_PAGE_SIZE:
            raise InvalidArgumentError(
                f"page_size={page_size} is too large; use 1 to {_MAX_PAGE_SIZE}",
                field="page_size",
            )
        after = _decode_page_token(request.page_token) if request.page_token else None

        # One row past the page tells whether another page follows.
        records = await self._store.list_conversations(tenant, page_size + 1, after)
        page = records[:page_size]
        next_token = ""
        if len(records) > page_size:
            next_token = _encode_page_token(page[-1].create_time, page[-1].id)
        return chat_pb2.ListConversationsResponse(
            conversations=[conversation_to_proto(r) for r in page],
            next_page_token=next_token,
        )

    async def GetConversation(
        self, request: chat_pb2.GetConversationRequest, context
    ) -> chat_pb2.GetConversationResponse:
        conversation_id = _parse_id(request.conversation_id, "conversation_id")
        conversation, messages = await self._store.get_conversation_with_messages(
            current_tenant(), conversation_id
        )
        return chat_pb2.GetConversationResponse(
            conversation=conversation_to_proto(conversation),
            messages=[message_to_proto(m) for m in messages],
        )

    async def DeleteConversation(
        self, request: chat_pb2.DeleteConversationRequest, context
    ) -> chat_pb2.DeleteConversationResponse:
        tenant = current_tenant()
        conversation_id = _parse_id(request.conversation_id, "conversation_id")
        await self._store.delete_conversation(tenant, conversation_id)
        for generation in self._generations.in_conversation(tenant, conversation_id):
            generation.cancel("cancelled", "the conversation was deleted")
        return chat_pb2.DeleteConversationResponse()

    async def CancelGeneration(
        self, request: chat_pb2.CancelGenerationRequest, context
    ) -> chat_pb2.CancelGenerationResponse:
        tenant = current_tenant()
        message_id = _parse_id(request.message_id, "message_id")
        generation = self._generations.get(tenant, message_id)
        if generation is not None and generation.unstored is not None:
            raise FailedPreconditionError(
                f"generation {message_id} already finished with status failed "
                "(its outcome is waiting for the database); nothing to cancel"
            )
        live = generation is not None and generation.cancel(
            "cancelled", "cancelled by CancelGeneration"
        )
        if live:
            await _wait_briefly(generation)
            if generation.record is not None:
                return chat_pb2.CancelGenerationResponse(
                    message=message_to_proto(generation.record)
                )

        record = await self._store.get_assistant_message(tenant, message_id)
        if live:
            return chat_pb2.CancelGenerationResponse(message=message_to_proto(record))
        if record.status == "streaming":
            raise UnavailableError(
                f"generation {message_id} is streaming but not in this chat "
                "process; retry, or restart chat to mark abandoned ones failed"
            )
        raise FailedPreconditionError(
            f"generation {message_id} already finished with status "
            f"{record.status}; nothing to cancel"
        )

    async def ResumeGeneration(
        self, request: chat_pb2.ResumeGenerationRequest, context
    ):
        tenant = current_tenant()
        message_id = _parse_id(request.message_id, "message_id")
        offset = request.offset_chars

        generation = self._generations.get(tenant, message_id)
        if generation is not None:
            if offset > generation.length_chars:
                raise _offset_error(offset, generation.length_chars)
            with self._generations.watching(generation):
                async for response in generation.follow(
                    offset, wrap_delta=_resume_delta, wrap_completed=_resume_completed
                ):
                    yield response
            return

        record = await self._store.get_assistant_message(tenant, message_id)
        if record.status == "streaming":
            raise UnavailableError(
                f"generation {message_id} is streaming but not in this chat "
                "process; retry shortly"
            )
        if offset > len(record.content):
            raise _offset_error(offset, len(record.content))
        if offset < len(record.content):
            yield chat_pb2.ResumeGenerationResponse(
                delta=chat_pb2.ChatDelta(
                    text=record.content[offset:], offset_chars=offset
                )
            )
        yield chat_pb2.ResumeGenerationResponse(completed=completed_from_record(record))


def _delta_maker(response_type):
    """A `wrap_delta` for `Generation.follow` building `response_type`."""

    def make(text: str, offset_chars: int):
        # Filling the submessage in place copies nothing (delta=ChatDelta(...)
        # would build a ChatDelta and copy it into the response).
        response = response_type()
        delta = response.delta
        delta.text = text
        delta.offset_chars = offset_chars
        return response

    return make


def _completed_maker(response_type):
    """A `wrap_completed` for `Generation.follow` building `response_type`."""
    return lambda completed: response_type(completed=completed)


_stream_chat_delta = _delta_maker(chat_pb2.StreamChatResponse)
_stream_chat_completed = _completed_maker(chat_pb2.StreamChatResponse)
_resume_delta = _delta_maker(chat_pb2.ResumeGenerationResponse)
_resume_completed = _completed_maker(chat_pb2.ResumeGenerationResponse)


def _checked_content(content: str) -> str:
    if not content.strip():
        raise InvalidArgumentError(
            "content is empty; send 1 to 32,768 characters of text", field="content"
        )
    _check_text(content, MAX_CONTENT_CHARS, "content")
    return content


def _check_text(value: str, limit: int, field: str) -> None:
    """Refuses text longer than `limit` characters, or text Postgres cannot
    store (it has no NUL character in text)."""
    if len(value) > limit:
        raise InvalidArgumentError(
            f"{field} has {len(value)} characters; at most {limit} are allowed",
            field=field,
        )
    if "\x00" in value:
        raise InvalidArgumentError(
            f"{field} contains a NUL character (\\x00) at index "
            f"{value.index(chr(0))}, which cannot be stored; remove it",
            field=field,
        )


def _parse_id(value: str, field: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise InvalidArgumentError(
            f"{field}={shown!r} is not a UUID such as "
            "'0b8e2a9c-1f4d-4c57-9a8e-3d2f6b1c7e90'",
            field=field,
        ) from None


def _auto_title(content: str) -> str:
    words = " ".join(content.split())
    if len(words) <= _AUTO_TITLE_CHARS:
        return words
    return words[: _AUTO_TITLE_CHARS - 1].rstrip() + "…"


def _encode_page_token(create_time: datetime.datetime, conversation_id: str) -> str:
    payload = json.dumps({"t": create_time.isoformat(), "id": conversation_id})
    return base64.urlsafe_b64encode(payload.encode()).decode()


def _decode_page_token(token: str) -> tuple[datetime.datetime, str]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
        create_time = datetime.datetime.fromisoformat(payload["t"])
        conversation_id = str(uuid.UUID(payload["id"]))
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeError):
        raise InvalidArgumentError(
            "page_token is not one this server issued; pass next_page_token "
            "from the previous response, or empty for the first page",
            field="page_token",
        ) from None
    if create_time.tzinfo is None:
        raise InvalidArgumentError("page_token is malformed", field="page_token")
    return create_time, conversation_id


def _offset_error(offset: int, length: int) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"offset_chars={offset} is past the {length} characters generated so far",
        field="offset_chars",
    )


async def _wait_briefly(generation: Generation) -> None:
    try:
        await asyncio.wait_for(generation.wait(), _CANCEL_WAIT_S)
    except TimeoutError:
        logger.warning(
            "cancelled generation did not stop in time",
            extra={"message_id": generation.message_id},
        )
