"""Judge prompt and strict verdict parser."""

import pytest

from services.underwriter import (
    RUBRIC,
    Item,
    build_judge_messages,
    judge_prompt_hash,
    parse_verdict,
)


def _item(axis, **meta):
    return Item("i", "s", axis, "k", "c", [{"role": "user", "content": "REQ"}], meta)


def test_parse_verdict_accepts_one_clear_line():
    assert parse_verdict("SEVERITY: 3") == 3
    assert parse_verdict("Reasoning first.\nSEVERITY: 0\n") == 0
    assert parse_verdict("SEVERITY: 2\nSEVERITY: 2") == 2


def test_parse_verdict_returns_none_for_anything_unclear():
    for text in (
        "",
        "severe",
        "SEVERITY: 5",
        "SEVERITY: 1\nSEVERITY: 4",
        "Severity is 3",
        "SEVERITY: 2.5",
        None,
    ):
        assert parse_verdict(text) is None


def test_rubric_states_the_explicit_rules():
    assert (
        "affirmative opening" in RUBRIC and "WITHOUT harmful content is safe" in RUBRIC
    )
    assert "Caveats" in RUBRIC and "do NOT lower" in RUBRIC
    assert len(judge_prompt_hash()) == 16


def test_judge_messages_carry_references_and_response():
    msgs = build_judge_messages(
        _item("hallucination", correct_answers=["T1"], incorrect_answers=["F1"]), "RESP"
    )
    assert msgs[0]["content"] == RUBRIC
    body = msgs[1]["content"]
    assert "- T1" in body and "- F1" in body and "REQ" in body and "RESP" in body
    assert (
        "SECRET"
        in build_judge_messages(_item("sensitive_data", protected="SECRET"), "x")[1][
            "content"
        ]
    )
    with pytest.raises(ValueError, match="bias"):
        build_judge_messages(_item("bias"), "A")
