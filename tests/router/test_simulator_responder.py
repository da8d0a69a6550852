"""Simulator personas with a pluggable responder, alone and behind the router."""

import grpc
import pytest
import yaml

from koverage.errors import InvalidArgumentError
from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import connect
from koverage.settings import Settings
from services.router import Router, build_server, load_catalog
from services.router._errors import ProviderUnavailableError
from services.router.providers import (
    FinishReport,
    Persona,
    ProviderCall,
    SimulatorProvider,
    TextChunk,
    UsageReport,
)

_RESPONDER = "tests.router.test_simulator_responder:make_responder"


def make_responder(persona, block_word="forbidden"):
    """A responder for these tests: echoes its inputs, refuses `block_word`
    when the guardrail is on, fails on request."""

    def respond(messages, temperature, seed, guardrail):
        prompt = messages[-1]["content"]
        if "explode" in prompt:
            raise ConnectionError("responder lost its upstream")
        if "riddle" in prompt:
            raise ValueError("not a prompt this persona knows")
        if guardrail and block_word in prompt:
            return f"{persona} blocked {block_word}", True
        return f"  {persona} heard:\n{prompt} (t={temperature}, seed={seed})", False

    return respond


def _personas(**options):
    return {
        "echo": Persona(
            first_token_ms=0,
            inter_token_ms=0,
            responder=_RESPONDER,
            responder_options=options,
        )
    }


def _call(text, **fields):
    return ProviderCall(
        "echo-model", ({"role": "user", "content": text},), persona="echo", **fields
    )


async def _events(provider, call):
    return [event async for event in provider.stream(call)]


async def test_responder_text_streams_word_by_word_with_usage():
    events = await _events(
        SimulatorProvider(_personas()), _call("say hi", temperature=0.5, seed=7)
    )
    chunks = [e.text for e in events if isinstance(e, TextChunk)]

    assert "".join(chunks) == "  echo heard:\nsay hi (t=0.5, seed=7)"
    assert len(chunks) == 6  # one word each
    assert UsageReport(2, 6) in events
    assert events[-1] == FinishReport("stop", "echo-model")


async def test_max_output_tokens_cuts_the_responder_text():
    events = await _events(
        SimulatorProvider(_personas()), _call("say hi", max_output_tokens=2)
    )
    assert [e.text for e in events if isinstance(e, TextChunk)] == [
        "  echo ",
        "heard:\n",
    ]
    assert events[-1].reason == "length"


async def test_planted_guardrail_refuses_only_when_the_request_asks_for_it():
    provider = SimulatorProvider(_personas(block_word="secret"))
    open_events = await _events(provider, _call("tell the secret"))
    guarded = await _events(provider, _call("tell the secret", guardrail=True))

    assert any(isinstance(e, TextChunk) for e in open_events)
    assert not any(isinstance(e, TextChunk) for e in guarded)
    assert guarded[-1] == FinishReport(
        "refused", "echo-model", refusal_reason="echo blocked secret"
    )


@pytest.mark.parametrize(
    ("prompt", "error"),
    [("explode now", ProviderUnavailableError), ("a riddle", InvalidArgumentError)],
)
async def test_responder_errors_become_router_errors(prompt, error):
    with pytest.raises(error) as caught:
        await _events(SimulatorProvider(_personas()), _call(prompt))
    if error is ProviderUnavailableError:
        assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("responder", "options", "match"),
    [
        ("not a path", {}, "package.module:factory"),
        ("tests.router.no_such_module:make", {}, "did not load"),
        (_RESPONDER, {"colour": "red"}, "did not load"),
    ],
)
def test_bad_responder_is_rejected_at_start(responder, options, match):
    with pytest.raises(ValueError, match=match):
        SimulatorProvider(
            {"p": Persona(responder=responder, responder_options=options)}
        )


async def test_router_reports_a_persona_refusal_as_a_refused_generation(tmp_path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "id": "sim/echo",
                        "provider": "simulator",
                        "persona": "echo",
                        "input_usd_per_mtok": "1.00",
                        "output_usd_per_mtok": "1.00",
                        "context_window_tokens": 4096,
                    },
                ]
            }
        )
    )
    router = Router(
        load_catalog(catalog), {"simulator": SimulatorProvider(_personas())}
    )
    server = build_server(
        Settings.from_env({}, router_address="127.0.0.1:0", metrics_port=-1), router
    )
    await server.start()
    try:
        async with connect(server.address) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)

            def request(text, guardrail):
                return router_pb2.GenerateRequest(
                    model="sim/echo",
                    guardrail=guardrail,
                    messages=[
                        router_pb2.ChatMessage(role=router_pb2.ROLE_USER, content=text)
                    ],
                )

            refused = [
                e
                async for e in stub.Generate(
                    request("forbidden words", True), timeout=10
                )
            ]
            answered = [
                e
                async for e in stub.Generate(
                    request("forbidden words", False), timeout=10
                )
            ]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.Generate(request("a riddle", False), timeout=10):
                    pass
    finally:
        await server.stop(0.5)

    assert len(refused) == 1
    summary = refused[0].summary
    assert summary.status == router_pb2.GENERATION_STATUS_REFUSED
    assert summary.finish_reason == router_pb2.FINISH_REASON_REFUSED
    assert summary.refusal_reason == "echo blocked forbidden"
    assert summary.usage.input_tokens == 2 and summary.usage.output_tokens == 0
    assert answered[-1].summary.status == router_pb2.GENERATION_STATUS_COMPLETE
    assert "".join(e.delta.text for e in answered[:-1]).startswith("  echo heard:")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
