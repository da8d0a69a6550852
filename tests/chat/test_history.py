"""The history rule: what a turn sends, decided from stored messages alone."""

import datetime
from decimal import Decimal

import pytest

from koverage.errors import InvalidArgumentError
from services.chat import estimate_tokens, plan_prompt
from services.chat._store import MessageRecord

_NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def message(role: str, content: str, status: str = "complete") -> MessageRecord:
    return MessageRecord(
        id="m",
        conversation_id="c",
        role=role,
        content=content,
        status=status,
        model="",
        input_tokens=0,
        output_tokens=0,
        cost_usd=Decimal(0),
        failure_reason="",
        create_time=_NOW,
        provider="",
        finish_reason="",
        usage_estimated=False,
        time_to_first_token_ms=None,
        history_messages_dropped=0,
        trace_id="",
    )


def plan(history, new="now?", window=1000, max_output_tokens=None, system=""):
    return plan_prompt(
        system_prompt=system,
        history=history,
        new_content=new,
        model="m",
        context_window_tokens=window,
        max_output_tokens=max_output_tokens,
    )


def test_tokens_are_estimated_as_quarter_characters_plus_framing():
    assert estimate_tokens("") == 4
    assert estimate_tokens("abcd") == 5
    assert estimate_tokens("abcde") == 6


def test_empty_history_sends_system_prompt_and_message():
    result = plan([], system="Be brief.")
    assert result.messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "now?"},
    )
    assert result.history_messages_dropped == 0
    assert result.estimated_prompt_tokens == estimate_tokens("Be brief.") + 5


def test_refused_failed_and_empty_cancelled_turns_are_left_out_not_dropped():
    history = [
        message("user", "a"),
        message("assistant", "A"),
        message("user", "b"),
        message("assistant", "", "refused"),
        message("user", "c"),
        message("assistant", "part", "failed"),
        message("user", "d"),
        message("assistant", "", "cancelled"),
        message("user", "e"),
        message("assistant", "E-part", "cancelled"),
    ]
    result = plan(history)
    assert [m["content"] for m in result.messages] == ["a", "A", "e", "E-part", "now?"]
    assert result.history_messages_dropped == 0


def test_oldest_turns_are_dropped_first_and_whole():
    history = []
    for i in range(4):
        history += [message("user", "u" * 36), message("assistant", "a" * 36)]
    # Each message is 9 + 4 = 13 tokens, a turn 26; the new message 5.
    # Window 100, reserve 50 -> budget 50: 5 + 26 fits, one more turn does not.
    result = plan(history, window=100)
    assert result.history_messages_dropped == 6
    assert len(result.messages) == 3
    # Budget 200 - 100 = 100: three turns (5 + 78 = 83) fit, a fourth (109) not.
    assert (
        plan(history, window=200, max_output_tokens=100).history_messages_dropped == 2
    )
    assert plan(history, window=200, max_output_tokens=91).history_messages_dropped == 0


def test_a_message_that_cannot_fit_is_an_invalid_argument():
    with pytest.raises(InvalidArgumentError, match="context window of 100"):
        plan([], new="x" * 400, window=100)
    with pytest.raises(InvalidArgumentError, match="leaves no room"):
        plan([], window=100, max_output_tokens=100)


def test_characters_outside_ascii_count_one_token_each():
    assert estimate_tokens("日本語") == 3 + 4
    assert estimate_tokens("café") == 1 + 1 + 4  # "caf" is 1, "é" is 1
    assert estimate_tokens("ab 😀") == 1 + 1 + 4


def test_cjk_history_is_trimmed_by_its_conservative_estimate():
    # Each message is 60 characters: 60 + 4 = 64 tokens ("答" * 59 + "2" is
    # 59 + 1 + 4), a turn 128. Counted 4 characters a token it would be
    # 15 + 4 = 19, and all three turns (5 + 3 * 38 = 119) would be kept.
    history = []
    for i in range(3):
        history += [
            message("user", "问" * 60),
            message("assistant", "答" * 59 + str(i)),
        ]
    # Budget 400 - 200 = 200: "now?" (5) and the newest turn (128) fit.
    result = plan(history, new="now?", window=400, max_output_tokens=200)
    assert result.history_messages_dropped == 4
    assert [m["content"][-1] for m in result.messages] == ["问", "2", "?"]
    assert result.estimated_prompt_tokens == 5 + 64 + 64
