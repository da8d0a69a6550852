"""Many conversations at once: no crossed tokens, no stalls between them."""

import asyncio

from koverage.chat.v1 import chat_pb2
from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import connect
from tests.chat.conftest import stream_turn

_CONVERSATIONS = 50


async def test_fifty_concurrent_conversations_get_their_own_answers(chat):
    prompts = [
        f"conversation {i} asks about topic {i * 7} [[sim:tokens=30]]"
        for i in range(_CONVERSATIONS)
    ]
    turns = await asyncio.gather(
        *(stream_turn(chat.stub, content=p, model="sim/steady") for p in prompts)
    )

    # The simulator's answer is a pure function of the prompt, so asking the
    # router directly gives each conversation's one correct answer.
    channel = connect(chat.router.address)
    try:
        router = router_pb2_grpc.RouterServiceStub(channel)

        async def answer(prompt: str) -> str:
            request = router_pb2.GenerateRequest(
                model="sim/steady",
                messages=[
                    router_pb2.ChatMessage(role=router_pb2.ROLE_USER, content=prompt)
                ],
            )
            events = [e async for e in router.Generate(request, timeout=10)]
            return "".join(e.delta.text for e in events if e.HasField("delta"))

        expected = await asyncio.gather(*(answer(p) for p in prompts))
    finally:
        await channel.close()

    assert len({t.started.conversation_id for t in turns}) == _CONVERSATIONS
    assert len(set(expected)) == _CONVERSATIONS  # the check can tell them apart
    for turn, answer in zip(turns, expected, strict=True):
        assert turn.completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
        assert turn.text == answer
        offsets = [d.offset_chars for d in turn.deltas]
        assert offsets == [
            len("".join(d.text for d in turn.deltas[:i]))
            for i in range(len(turn.deltas))
        ]

    stored = await asyncio.gather(
        *(
            chat.stub.GetConversation(
                chat_pb2.GetConversationRequest(
                    conversation_id=t.started.conversation_id
                ),
                timeout=10,
            )
            for t in turns
        )
    )
    for conversation, prompt, answer in zip(stored, prompts, expected, strict=True):
        assert [m.content for m in conversation.messages] == [prompt, answer]


async def test_a_stalled_model_does_not_hold_up_other_conversations(chat):
    stalled = chat.stub.StreamChat(
        chat_pb2.StreamChatRequest(content="wait [[sim:stall_ms=20000]]"), timeout=60
    )
    first = await stalled.read()
    assert first.HasField("started")
    reader = asyncio.ensure_future(stalled.read())

    other = await stream_turn(chat.stub, content="quick one", model="sim/fast")

    assert other.completed.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    assert not reader.done()  # the stalled answer has sent nothing yet
    stalled.cancel()
    reader.cancel()
