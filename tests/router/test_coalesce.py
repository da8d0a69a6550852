"""coalesce_deltas: text ready at the same moment goes out as one delta."""

import asyncio

import pytest

from services.router._engine import Delta, Summary
from services.router._servicer import coalesce_deltas
from tests.router.conftest import collect, request, running_router

_SUMMARY = Summary(status="complete", model="m", provider="p")


async def _events(texts, *, gap_s=0.0, error=None, closed=None):
    """Yields one Delta per text (`gap_s` apart), then a summary or `error`."""
    try:
        for i, text in enumerate(texts):
            if gap_s:
                await asyncio.sleep(gap_s)
            yield Delta(text, i)
        if error is not None:
            raise error
        yield _SUMMARY
    finally:
        if closed is not None:
            closed.set()


async def test_backlog_goes_out_as_one_delta_numbered_without_gaps():
    texts = [f"w{i} " for i in range(10)]
    received = []
    async for event in coalesce_deltas(_events(texts)):
        received.append(event)
        # A slow caller: the whole stream is ready by the time it asks again.
        await asyncio.sleep(0.01)

    deltas = [e for e in received if isinstance(e, Delta)]
    assert "".join(d.text for d in deltas) == "".join(texts)
    assert len(deltas) < len(texts)
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert received[-1] == _SUMMARY


async def test_a_caller_that_keeps_up_gets_one_delta_per_chunk():
    texts = ["a", "b", "c", "d"]
    received = [e async for e in coalesce_deltas(_events(texts, gap_s=0.02))]

    assert received[:-1] == [Delta(t, i) for i, t in enumerate(texts)]
    assert received[-1] == _SUMMARY


async def test_deltas_before_an_error_arrive_then_the_error_is_raised():
    received = []
    with pytest.raises(ConnectionError, match="upstream broke"):
        async for event in coalesce_deltas(
            _events(["x", "y"], error=ConnectionError("upstream broke"))
        ):
            received.append(event)

    assert "".join(e.text for e in received) == "xy"


async def test_closing_early_closes_the_source_stream():
    closed = asyncio.Event()
    stream = coalesce_deltas(_events(["a"] * 100, gap_s=0.01, closed=closed))
    first = await anext(stream)
    await stream.aclose()

    assert first == Delta("a", 0)
    await asyncio.wait_for(closed.wait(), 1)


async def test_router_without_coalescing_sends_one_delta_per_chunk(tmp_path, upstreams):
    async with running_router(
        tmp_path, upstreams["providers"], router_coalesce_deltas=False
    ) as (stub, _, _):
        call = stub.Generate(request(), timeout=10)
        texts, summary = await collect(call)

    assert texts == ["Hello", " from", " the", " fixture", "."]
    assert summary is not None


async def test_router_with_coalescing_streams_the_same_text(tmp_path, upstreams):
    async with running_router(
        tmp_path, upstreams["providers"], router_coalesce_deltas=True
    ) as (stub, _, _):
        call = stub.Generate(request(), timeout=10)
        texts, summary = await collect(call)

    assert "".join(texts) == "Hello from the fixture."
    assert summary.usage.output_tokens == 5
