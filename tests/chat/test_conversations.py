"""Conversation CRUD, paging, tenant isolation and bad input."""

import uuid

import grpc
import pytest

from koverage.chat.v1 import chat_pb2, chat_pb2_grpc
from koverage.serving import connect
from tests.chat.conftest import rpc_code, running_chat, stream_turn


async def test_conversations_are_created_listed_newest_first_and_deleted(chat):
    created = []
    for i in range(5):
        response = await chat.stub.CreateConversation(
            chat_pb2.CreateConversationRequest(title=f"c{i}", system_prompt="Be kind."),
            timeout=5,
        )
        created.append(response.conversation)
    assert created[0].model == "sim/steady"
    assert created[0].system_prompt == "Be kind."

    titles, token = [], ""
    while True:
        page = await chat.stub.ListConversations(
            chat_pb2.ListConversationsRequest(page_size=2, page_token=token), timeout=5
        )
        titles.append([c.title for c in page.conversations])
        token = page.next_page_token
        if not token:
            break
    assert titles == [["c4", "c3"], ["c2", "c1"], ["c0"]]

    await chat.stub.DeleteConversation(
        chat_pb2.DeleteConversationRequest(conversation_id=created[2].id), timeout=5
    )
    remaining = await chat.stub.ListConversations(
        chat_pb2.ListConversationsRequest(), timeout=5
    )
    assert [c.title for c in remaining.conversations] == ["c4", "c3", "c1", "c0"]
    code = await rpc_code(
        chat.stub.GetConversation(
            chat_pb2.GetConversationRequest(conversation_id=created[2].id), timeout=5
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_created_conversation_takes_its_model_and_system_prompt(chat):
    created = await chat.stub.CreateConversation(
        chat_pb2.CreateConversationRequest(
            title="memo", model="fixture/model", system_prompt="Answer in French."
        ),
        timeout=5,
    )
    turn = await stream_turn(
        chat.stub,
        conversation_id=created.conversation.id,
        content="Hi",
        system_prompt="ignored when continuing",
    )

    assert turn.started.model == "fixture/model"
    assert chat.router.upstream.requests[0].body["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
    ]


_BAD_CHAT_REQUESTS = [
    ({"content": ""}, grpc.StatusCode.INVALID_ARGUMENT, "content is empty"),
    ({"content": "  \n "}, grpc.StatusCode.INVALID_ARGUMENT, "content is empty"),
    ({"content": "x" * 32_769}, grpc.StatusCode.INVALID_ARGUMENT, "at most 32768"),
    (
        {"content": "hi", "conversation_id": "abc"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a UUID",
    ),
    (
        {"content": "hi", "conversation_id": str(uuid.uuid4())},
        grpc.StatusCode.NOT_FOUND,
        "not found",
    ),
    (
        {"content": "hi", "model": "nope/model"},
        grpc.StatusCode.NOT_FOUND,
        "not in the router's catalog",
    ),
    # A turn naming its model reads the conversation only when storing the
    # turn; an unknown conversation must still be refused as before.
    (
        {"content": "hi", "conversation_id": str(uuid.uuid4()), "model": "sim/steady"},
        grpc.StatusCode.NOT_FOUND,
        "not found; ListConversations",
    ),
    # Both unknown: the conversation is reported, as when it is read first.
    (
        {"content": "hi", "conversation_id": str(uuid.uuid4()), "model": "nope/model"},
        grpc.StatusCode.NOT_FOUND,
        "not found; ListConversations",
    ),
    (
        {"content": "hi", "temperature": 2.5},
        grpc.StatusCode.INVALID_ARGUMENT,
        "temperature",
    ),
    (
        {"content": "hi", "max_output_tokens": 0},
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_output_tokens",
    ),
    (
        {"content": "hi", "system_prompt": "s" * 8193},
        grpc.StatusCode.INVALID_ARGUMENT,
        "system_prompt",
    ),
    # Postgres text cannot hold NUL; it must not reach the database.
    (
        {"content": "a\x00b"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "content contains a NUL character",
    ),
    (
        {"content": "hi", "system_prompt": "\x00"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "system_prompt contains a NUL character",
    ),
]


async def test_bad_chat_requests_get_a_clear_status_and_change_nothing(chat):
    for fields, code, words in _BAD_CHAT_REQUESTS:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream_turn(chat.stub, **fields)

        assert (caught.value.code(), words) == (code, words)
        assert words in caught.value.details()
    listed = await chat.stub.ListConversations(
        chat_pb2.ListConversationsRequest(), timeout=5
    )
    assert list(listed.conversations) == []


async def test_bad_paging_and_ids_are_invalid_arguments(chat):
    stub = chat.stub
    calls = [
        stub.ListConversations(
            chat_pb2.ListConversationsRequest(page_size=101), timeout=5
        ),
        stub.ListConversations(
            chat_pb2.ListConversationsRequest(page_token="not-a-token"), timeout=5
        ),
        stub.GetConversation(
            chat_pb2.GetConversationRequest(conversation_id="1"), timeout=5
        ),
        stub.DeleteConversation(chat_pb2.DeleteConversationRequest(), timeout=5),
        stub.CancelGeneration(
            chat_pb2.CancelGenerationRequest(message_id="x"), timeout=5
        ),
        stub.CreateConversation(
            chat_pb2.CreateConversationRequest(title="t" * 201), timeout=5
        ),
        stub.CreateConversation(
            chat_pb2.CreateConversationRequest(title="a\x00b"), timeout=5
        ),
        stub.CreateConversation(
            chat_pb2.CreateConversationRequest(system_prompt="\x00"), timeout=5
        ),
    ]
    for call in calls:
        assert await rpc_code(call) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.ResumeGeneration(
            chat_pb2.ResumeGenerationRequest(message_id="not-an-id"), timeout=5
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message_id='not-an-id' is not a UUID" in caught.value.details()
    listed = await stub.ListConversations(
        chat_pb2.ListConversationsRequest(), timeout=5
    )
    assert list(listed.conversations) == []
    unknown = str(uuid.uuid4())
    assert (
        await rpc_code(
            stub.CancelGeneration(
                chat_pb2.CancelGenerationRequest(message_id=unknown), timeout=5
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        await rpc_code(
            stub.CreateConversation(
                chat_pb2.CreateConversationRequest(model="no/such"), timeout=5
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )


async def test_tenants_cannot_see_or_touch_each_others_conversations(
    router, database_url
):
    async with running_chat(
        router,
        database_url,
        api_keys="key-a=alpha,key-b=beta",
        auth_required=True,
        api_key="key-a",
    ) as alpha:
        beta_channel = connect(alpha.address, api_key="key-b")
        nobody_channel = connect(alpha.address)
        wrong_channel = connect(alpha.address, api_key="key-c")
        beta = chat_pb2_grpc.ChatServiceStub(beta_channel)
        try:
            turn = await stream_turn(alpha.stub, content="alpha's secret plan")
            conversation_id = turn.started.conversation_id
            message_id = turn.started.message_id

            # Every way in for beta answers NOT_FOUND, as if nothing existed.
            by_id = chat_pb2.GetConversationRequest(conversation_id=conversation_id)
            assert await rpc_code(beta.GetConversation(by_id, timeout=5)) == (
                grpc.StatusCode.NOT_FOUND
            )
            assert (
                await rpc_code(
                    beta.DeleteConversation(
                        chat_pb2.DeleteConversationRequest(
                            conversation_id=conversation_id
                        ),
                        timeout=5,
                    )
                )
                == grpc.StatusCode.NOT_FOUND
            )
            assert (
                await rpc_code(
                    beta.CancelGeneration(
                        chat_pb2.CancelGenerationRequest(message_id=message_id),
                        timeout=5,
                    )
                )
                == grpc.StatusCode.NOT_FOUND
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in beta.ResumeGeneration(
                    chat_pb2.ResumeGenerationRequest(message_id=message_id), timeout=5
                ):
                    pass
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stream_turn(beta, conversation_id=conversation_id, content="hi")
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            listed = await beta.ListConversations(
                chat_pb2.ListConversationsRequest(), timeout=5
            )
            assert list(listed.conversations) == []

            # Missing and unknown keys are refused before anything runs,
            # for unary calls and for StreamChat alike.
            for channel in (nobody_channel, wrong_channel):
                stub = chat_pb2_grpc.ChatServiceStub(channel)
                assert (
                    await rpc_code(
                        stub.ListConversations(
                            chat_pb2.ListConversationsRequest(), timeout=5
                        )
                    )
                    == grpc.StatusCode.UNAUTHENTICATED
                )
                for fields in ({}, {"conversation_id": conversation_id}):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await stream_turn(stub, content="let me in", **fields)
                    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

            # Alpha still has its conversation, untouched.
            mine = await alpha.stub.GetConversation(by_id, timeout=5)
            assert next(m.content for m in mine.messages) == "alpha's secret plan"
            assert mine.conversation.message_count == 2
            listed = await alpha.stub.ListConversations(
                chat_pb2.ListConversationsRequest(), timeout=5
            )
            assert [c.id for c in listed.conversations] == [conversation_id]
        finally:
            for channel in (beta_channel, nobody_channel, wrong_channel):
                await channel.close()
