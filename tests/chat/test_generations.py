"""Generation.follow: replay from any offset, and live followers."""

import asyncio

from koverage.chat.v1 import chat_pb2
from koverage.router.v1 import router_pb2
from services.chat._generations import Generation, GenerationSpec
from services.chat._history import PromptPlan

_CHUNKS = ("Hel", "lo", ", ", "wor", "ld", ".")


def _finished_generation() -> Generation:
    spec = GenerationSpec(
        tenant="t",
        conversation_id="c",
        message_id="m",
        model=router_pb2.ModelInfo(id="sim/steady"),
        plan=PromptPlan(
            messages=(), history_messages_dropped=0, estimated_prompt_tokens=0
        ),
        guardrail=False,
        temperature=None,
        max_output_tokens=None,
        trace_id="0" * 32,
        requested_at=0.0,
    )
    generation = Generation(spec)
    for chunk in _CHUNKS:
        generation._append(chunk)
    generation.completed = chat_pb2.ChatCompleted(message_id="m")
    return generation


async def test_follow_from_every_offset_yields_the_rest_on_router_boundaries():
    generation = _finished_generation()
    text = "".join(_CHUNKS)

    for offset in range(len(text) + 1):
        events = [e async for e in generation.follow(offset)]

        deltas, completed = events[:-1], events[-1]
        assert completed.message_id == "m"
        assert "".join(d.text for d in deltas) == text[offset:]
        # Each delta's offset is where its text starts in the answer.
        assert [d.offset_chars for d in deltas] == [
            len(text) - len("".join(d.text for d in deltas[i:]))
            for i in range(len(deltas))
        ]
        # After the first (possibly partial) delta, chunks are the router's.
        assert [d.text for d in deltas[1:]] == list(
            _CHUNKS[len(_CHUNKS) - len(deltas) + 1 :]
        )


async def test_follow_wraps_deltas_and_the_end_in_the_callers_messages():
    generation = _finished_generation()

    events = [
        e
        async for e in generation.follow(
            4,
            wrap_delta=lambda text, offset: ("delta", text, offset),
            wrap_completed=lambda completed: ("end", completed.message_id),
        )
    ]

    assert events == [
        ("delta", "o", 4),
        ("delta", ", ", 5),
        ("delta", "wor", 7),
        ("delta", "ld", 10),
        ("delta", ".", 12),
        ("end", "m"),
    ]


async def test_a_cancelled_follower_does_not_stop_another_from_getting_new_text():
    generation = _finished_generation()
    generation.completed = None
    first = asyncio.create_task(_collect(generation.follow(0)))
    second = asyncio.create_task(_collect(generation.follow(0)))
    await asyncio.sleep(0)  # both caught up and waiting

    first.cancel()
    await asyncio.sleep(0)
    generation._append(" Bye.")
    await asyncio.sleep(0)
    generation.completed = chat_pb2.ChatCompleted(message_id="m")
    generation._notify()
    events = await asyncio.wait_for(second, 5)

    assert first.cancelled()
    assert "".join(e.text for e in events[:-1]) == "Hello, world. Bye."
    assert events[-1].message_id == "m"


async def _collect(events) -> list:
    return [e async for e in events]
