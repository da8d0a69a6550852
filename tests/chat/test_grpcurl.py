"""Smoke test: grpcurl discovers ChatService by reflection and streams a chat."""

import asyncio
import json
import pathlib
import sys

import pytest

_GRPCURL = pathlib.Path(sys.executable).parent / "grpcurl"


async def _grpcurl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(_GRPCURL),
        "-plaintext",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


def _json_stream(text: str) -> list[dict]:
    decoder, objects, position = json.JSONDecoder(), [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        obj, position = decoder.raw_decode(text, position)
        objects.append(obj)
    return objects


@pytest.mark.skipif(
    not _GRPCURL.exists(), reason="grpcurl is not installed in the venv"
)
async def test_grpcurl_streams_a_chat_through_reflection(chat):
    services = await _grpcurl(chat.address, "list")
    assert "koverage.chat.v1.ChatService" in services.split()

    output = await _grpcurl(
        "-d",
        '{"content": "hello from grpcurl"}',
        chat.address,
        "koverage.chat.v1.ChatService/StreamChat",
    )

    events = _json_stream(output)
    assert list(events[0]) == ["started"]
    assert list(events[-1]) == ["completed"]
    deltas = [e["delta"] for e in events[1:-1]]
    assert deltas and all(list(e) == ["delta"] for e in events[1:-1])
    completed = events[-1]["completed"]
    assert completed["status"] == "MESSAGE_STATUS_COMPLETE"
    assert completed["message_id"] == events[0]["started"]["message_id"]
    assert completed["model"] == "sim/steady"
