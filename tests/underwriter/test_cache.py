"""The call cache's key: every field that decides an answer changes it."""

import inspect

import pytest

from services.underwriter import call_key

_BASE = {
    "role": "answer",
    "model": "openai/gpt-4.1",
    "endpoint": "router",
    "messages": [{"role": "user", "content": "hello"}],
    "temperature": 0.0,
    "seed": 1,
    "guardrail_arm": "off",
    "judge_prompt_hash": "",
    "subject": "",
}


_CHANGES = [
    ("role", "verdict"),
    ("model", "anthropic/claude-sonnet-4"),
    ("endpoint", "modal"),
    ("messages", [{"role": "user", "content": "hello!"}]),
    ("messages", [{"role": "system", "content": "hello"}]),
    ("temperature", 0.3),
    ("seed", 2),
    ("guardrail_arm", "on"),
    ("judge_prompt_hash", "0123456789abcdef"),
    ("subject", "openai/gpt-4.1@0.0"),
]


@pytest.mark.parametrize(("field", "other"), _CHANGES)
def test_each_call_key_field_changes_the_key(field, other):
    assert call_key(**{**_BASE, field: other}) != call_key(**_BASE)


def test_call_key_is_stable_for_equal_calls():
    # An int and a float temperature are the same parameter.
    same = {**_BASE, "temperature": 0, "messages": [dict(m) for m in _BASE["messages"]]}
    assert call_key(**same) == call_key(**_BASE)


def test_every_call_key_field_is_covered_above():
    assert set(inspect.signature(call_key).parameters) == set(_BASE)
    assert {field for field, _ in _CHANGES} == set(_BASE)
