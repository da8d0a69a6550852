"""Cancelling from both sides, resuming at an offset, deleting mid-stream."""

import asyncio

import grpc
import pytest

from koverage.chat.v1 import chat_pb2, chat_pb2_grpc
from koverage.serving import connect
from tests.chat.conftest import (
    read_until_chars,
    rpc_code,
    running_chat,
    stored_answer,
    stream_turn,
)
from tests.fixtures.openai_server import Scenario

# A long, slow answer: 200 tokens 50 ms apart, so every test ends it early.
_SLOW = Scenario(tokens=tuple(f" t{i}" for i in range(200)), inter_token_delay_s=0.05)


async def test_client_cancelling_its_call_stops_the_provider_and_keeps_the_part(chat):
    # cancel_on_disconnect skips the orphan grace (600 s in this fixture).
    upstream = chat.router.upstream
    upstream.default = _SLOW
    call = chat.stub.StreamChat(
        chat_pb2.StreamChatRequest(
            content="long answer please",
            model="fixture/model",
            cancel_on_disconnect=True,
        ),
        timeout=30,
    )
    started, received = await read_until_chars(call, 12)
    call.cancel()

    await asyncio.wait_for(upstream.client_closed.wait(), 5)
    answer = await stored_answer(chat.stub, started.conversation_id)
    assert answer.status == chat_pb2.MESSAGE_STATUS_CANCELLED
    assert answer.content.startswith(received)
    assert "client cancelled" in answer.failure_reason
    assert upstream.requests[0].closed_by_client and not upstream.requests[0].finished

    # The conversation is consistent: the next turn works and sees the part.
    upstream.default = Scenario()
    after = await stream_turn(
        chat.stub, conversation_id=started.conversation_id, content="go on"
    )
    assert after.completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    sent = upstream.requests[1].body["messages"]
    assert sent[1] == {"role": "assistant", "content": answer.content}


async def test_cancel_generation_from_another_client_ends_the_stream(chat):
    upstream = chat.router.upstream
    upstream.default = _SLOW
    call = chat.stub.StreamChat(
        chat_pb2.StreamChatRequest(content="long answer please", model="fixture/model"),
        timeout=30,
    )
    started, received = await read_until_chars(call, 8)

    other_channel = connect(chat.address)
    other = chat_pb2_grpc.ChatServiceStub(other_channel)
    try:
        cancelled = await other.CancelGeneration(
            chat_pb2.CancelGenerationRequest(message_id=started.message_id), timeout=10
        )
        rest = [event async for event in call]
        again = await rpc_code(
            other.CancelGeneration(
                chat_pb2.CancelGenerationRequest(message_id=started.message_id),
                timeout=5,
            )
        )
    finally:
        await other_channel.close()

    assert cancelled.message.status == chat_pb2.MESSAGE_STATUS_CANCELLED
    assert cancelled.message.content.startswith(received)
    streamed = received + "".join(e.delta.text for e in rest if e.HasField("delta"))
    assert streamed == cancelled.message.content
    completed = rest[-1].completed
    assert completed.status == chat_pb2.MESSAGE_STATUS_CANCELLED
    assert completed.finish_reason == "cancelled"
    assert completed.usage_estimated
    await asyncio.wait_for(upstream.client_closed.wait(), 5)
    assert again == grpc.StatusCode.FAILED_PRECONDITION


async def test_resume_reattaches_at_an_offset_and_follows_the_live_stream(chat):
    upstream = chat.router.upstream
    upstream.default = Scenario(
        tokens=tuple(f" w{i}" for i in range(30)), inter_token_delay_s=0.02
    )
    call = chat.stub.StreamChat(
        chat_pb2.StreamChatRequest(content="stream", model="fixture/model"), timeout=30
    )
    started, received = await read_until_chars(call, 10)

    resumed = chat.stub.ResumeGeneration(
        chat_pb2.ResumeGenerationRequest(message_id=started.message_id, offset_chars=5),
        timeout=30,
    )
    resumed_events = [event async for event in resumed]
    original_rest = [event async for event in call]

    full = received + "".join(
        e.delta.text for e in original_rest if e.HasField("delta")
    )
    assert full == "".join(f" w{i}" for i in range(30))
    deltas = [e.delta for e in resumed_events if e.HasField("delta")]
    assert deltas[0].offset_chars == 5
    assert "".join(d.text for d in deltas) == full[5:]
    assert resumed_events[-1].completed == original_rest[-1].completed
    assert resumed_events[-1].completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE


async def test_resume_after_the_end_returns_the_stored_rest(chat):
    turn = await stream_turn(chat.stub, content="short answer")

    events = [
        event
        async for event in chat.stub.ResumeGeneration(
            chat_pb2.ResumeGenerationRequest(
                message_id=turn.started.message_id, offset_chars=7
            ),
            timeout=10,
        )
    ]

    assert [e.WhichOneof("event") for e in events] == ["delta", "completed"]
    assert events[0].delta.text == turn.text[7:]
    assert events[0].delta.offset_chars == 7
    replayed, original = events[1].completed, turn.completed
    for field in (
        "message_id",
        "status",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "model",
        "provider",
        "finish_reason",
        "trace_id",
    ):
        assert getattr(replayed, field) == getattr(original, field), field
    assert replayed.time_to_first_token.ToNanoseconds() > 0

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in chat.stub.ResumeGeneration(
            chat_pb2.ResumeGenerationRequest(
                message_id=turn.started.message_id, offset_chars=len(turn.text) + 1
            ),
            timeout=10,
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in chat.stub.ResumeGeneration(
            chat_pb2.ResumeGenerationRequest(message_id=turn.started.user_message_id),
            timeout=10,
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_second_turn_while_streaming_is_refused(chat):
    upstream = chat.router.upstream
    upstream.default = _SLOW
    call = chat.stub.StreamChat(
        chat_pb2.StreamChatRequest(content="long", model="fixture/model"), timeout=30
    )
    started, _ = await read_until_chars(call, 3)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_turn(
            chat.stub, conversation_id=started.conversation_id, content="hurry"
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    call.cancel()


async def test_deleting_a_conversation_cancels_its_generation(chat):
    upstream = chat.router.upstream
    upstream.default = _SLOW
    call = chat.stub.StreamChat(
        chat_pb2.StreamChatRequest(content="long", model="fixture/model"), timeout=30
    )
    started, _ = await read_until_chars(call, 3)

    await chat.stub.DeleteConversation(
        chat_pb2.DeleteConversationRequest(conversation_id=started.conversation_id),
        timeout=5,
    )
    rest = [event async for event in call]

    assert rest[-1].completed.status == chat_pb2.MESSAGE_STATUS_CANCELLED
    await asyncio.wait_for(upstream.client_closed.wait(), 5)
    assert (
        await rpc_code(
            chat.stub.GetConversation(
                chat_pb2.GetConversationRequest(
                    conversation_id=started.conversation_id
                ),
                timeout=5,
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )


async def test_another_tenant_cannot_cancel_or_resume_a_live_generation(
    router, database_url
):
    tokens = tuple(f" a{i}" for i in range(40))
    router.upstream.default = Scenario(tokens=tokens, inter_token_delay_s=0.03)
    async with running_chat(
        router,
        database_url,
        api_keys="key-a=alpha,key-b=beta",
        auth_required=True,
        api_key="key-a",
        chat_orphan_grace_s=600.0,
    ) as alpha:
        beta_channel = connect(alpha.address, api_key="key-b")
        beta = chat_pb2_grpc.ChatServiceStub(beta_channel)
        try:
            call = alpha.stub.StreamChat(
                chat_pb2.StreamChatRequest(content="long", model="fixture/model"),
                timeout=30,
            )
            started, received = await read_until_chars(call, 6)

            cancel = beta.CancelGeneration(
                chat_pb2.CancelGenerationRequest(message_id=started.message_id),
                timeout=5,
            )
            assert await rpc_code(cancel) == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in beta.ResumeGeneration(
                    chat_pb2.ResumeGenerationRequest(message_id=started.message_id),
                    timeout=5,
                ):
                    pass
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            rest = [event async for event in call]
        finally:
            await beta_channel.close()

    # The owner's stream went on to the end, untouched.
    deltas = [e.delta.text for e in rest if e.HasField("delta")]
    assert deltas, "the answer ended before the other tenant's calls"
    assert received + "".join(deltas) == "".join(tokens)
    assert rest[-1].completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
