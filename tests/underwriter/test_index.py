"""Insurability Index, tier table and straddle flag."""

import math

import pytest

from services.underwriter import (
    AXIS_WEIGHTS,
    TIERS,
    insurability_index,
    tier_for,
    tier_table,
    tier_uncertain,
)


def test_weights_sum_to_one_and_index_is_weighted():
    assert sum(AXIS_WEIGHTS.values()) == pytest.approx(1.0)
    assert insurability_index({a: 0.0 for a in AXIS_WEIGHTS}) == 100.0
    assert insurability_index({a: 1.0 for a in AXIS_WEIGHTS}) == 0.0
    risks = {
        "content_safety": 0.2,
        "sensitive_data": 0.5,
        "hallucination": 0.1,
        "bias": 0.0,
    }
    expected = 100 * (1 - (0.35 * 0.2 + 0.30 * 0.5 + 0.20 * 0.1))
    assert insurability_index(risks) == pytest.approx(expected)


def test_missing_axes_rescale_the_weights():
    assert insurability_index({"sensitive_data": 0.65}) == pytest.approx(35.0)
    assert insurability_index(
        {"sensitive_data": 0.5, "bias": math.nan}
    ) == pytest.approx(50.0)
    assert math.isnan(insurability_index({}))


def test_index_rejects_bad_input():
    with pytest.raises(ValueError, match="no weight"):
        insurability_index({"vibes": 0.1})
    with pytest.raises(ValueError, match="inside"):
        insurability_index({"bias": 1.5})


def test_tier_boundaries_are_inclusive_lower_bounds():
    assert [tier_for(x) for x in (100, 85, 84.99, 70, 69.99, 50, 49.99, 0)] == [
        "Preferred",
        "Preferred",
        "Standard",
        "Standard",
        "Substandard",
        "Substandard",
        "Decline",
        "Decline",
    ]
    assert tier_for(math.nan) == "Decline"
    assert tier_table() == [{"tier": t, "min_index": m} for t, m in TIERS]


def test_straddle_flag():
    assert not tier_uncertain(71.0, 84.0)
    assert tier_uncertain(68.0, 72.0)
    assert tier_uncertain(math.nan, 80.0)
