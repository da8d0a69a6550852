"""`koverage chat`: stream one answer through the chat service."""

import asyncio
import sys

import grpc

from koverage.chat.v1 import chat_pb2, chat_pb2_grpc
from koverage.cli._state import read_state
from koverage.serving import connect
from koverage.settings import Settings

_DEMO_PROMPT = "Hello, Koverage! What do you watch for in an LLM feature?"
_TIMEOUT_S = 60.0


def register(commands) -> None:
    parser = commands.add_parser("chat", help="send one message and stream the answer")
    parser.add_argument("message", help="the user message")
    parser.add_argument(
        "--conversation", default="", help="conversation id to continue"
    )
    parser.add_argument("--model", default="", help="catalog model id")
    parser.add_argument(
        "--guardrail", action="store_true", help="screen with the guardrail"
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    settings = Settings.from_env()
    state = read_state(settings) or {}
    address = state.get("services", {}).get("chat", settings.chat_address)
    api_key = settings.client_api_key or state.get("api_key", "")
    request = chat_pb2.StreamChatRequest(
        conversation_id=args.conversation,
        content=args.message,
        model=args.model,
        guardrail=args.guardrail,
    )
    return asyncio.run(_stream(address, api_key, request))


def stream_demo(address: str, api_key: str) -> int:
    """Streams the demo prompt's answer to stdout; returns an exit code."""
    print(f"demo> {_DEMO_PROMPT}", flush=True)
    request = chat_pb2.StreamChatRequest(content=_DEMO_PROMPT)
    return asyncio.run(_stream(address, api_key, request))


async def _stream(address: str, api_key: str, request) -> int:
    async with connect(address, api_key=api_key) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        try:
            async for event in stub.StreamChat(request, timeout=_TIMEOUT_S):
                kind = event.WhichOneof("event")
                if kind == "delta":
                    print(event.delta.text, end="", flush=True)
                elif kind == "completed":
                    done = event.completed
                    status = (
                        chat_pb2.MessageStatus.Name(done.status)
                        .removeprefix("MESSAGE_STATUS_")
                        .lower()
                    )
                    print(
                        f"\n[{status}] model={done.model} provider={done.provider} "
                        f"tokens={done.input_tokens}+{done.output_tokens} "
                        f"cost=${done.cost_usd} "
                        f"ttft={done.time_to_first_token.ToMilliseconds()}ms "
                        f"conversation={event_conversation(request, done)} "
                        f"trace={done.trace_id}",
                        flush=True,
                    )
                elif kind == "started":
                    request.conversation_id = event.started.conversation_id
        except grpc.aio.AioRpcError as exc:
            print(f"\nchat failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


def event_conversation(request, done) -> str:
    return request.conversation_id
