"""The catalog data file and exact cost arithmetic."""

from decimal import Decimal

import pytest

from services.router import load_catalog
from services.router._errors import ModelNotFoundError


def test_shipped_catalog_loads_with_valid_fallbacks():
    catalog = load_catalog()
    for entry in catalog:
        for fallback in entry.fallback_models:
            assert fallback in catalog
    assert catalog.get("modal/qwen3-8b").fallback_models == ("qwen/qwen3-8b",)
    assert catalog.get("sim/steady").simulated


def test_token_cost_is_exact_decimal():
    entry = load_catalog().get("openai/gpt-4.1")
    # 1234 * 2.00 / 1e6 + 567 * 8.00 / 1e6 = 0.002468 + 0.004536
    assert entry.cost_usd(1234, 567, 1.0) == Decimal("0.007004")
    # Float arithmetic would give 0.007004000000000001 here.
    assert str(entry.cost_usd(1234, 567, 1.0)) == "0.007004000"


def test_gpu_seconds_cost_ignores_tokens():
    entry = load_catalog().get("modal/qwen3-8b")
    assert entry.cost_usd(10_000, 10_000, 2.5) == Decimal("0.001355000")


def test_unknown_model_lists_known_ones():
    with pytest.raises(ModelNotFoundError, match="ListModels"):
        load_catalog().get("nope/nothing")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"id": "a", "provider": "carrier-pigeon", "context_window_tokens": 1},
            "provider",
        ),
        (
            {
                "id": "a",
                "provider": "openrouter",
                "context_window_tokens": 1,
                "input_usd_per_mtok": 1.5,
            },
            "quoted decimal",
        ),
        (
            {"id": "a", "provider": "openrouter", "context_window_tokens": 0},
            "context_window",
        ),
        ({"id": "a", "provider": "simulator", "context_window_tokens": 5}, "persona"),
        (
            {
                "id": "a",
                "provider": "openrouter",
                "context_window_tokens": 5,
                "fallback_models": ["b"],
            },
            "unknown",
        ),
        (
            {
                "id": "a",
                "provider": "openrouter",
                "context_window_tokens": 5,
                "base_url": "http://127.0.0.1:1/v1",
            },
            "only provider openai_compatible",
        ),
        (
            {
                "id": "a",
                "provider": "openai_compatible",
                "context_window_tokens": 5,
                "api_key_env": "SOME_KEY",
            },
            "api_key_env without a base_url",
        ),
    ],
)
def test_malformed_catalog_is_rejected_with_the_field_named(tmp_path, row, message):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"models": [row]}))
    with pytest.raises(ValueError, match=message):
        load_catalog(path)
