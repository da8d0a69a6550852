"""Suites drawn from the datasets directory with a fixed seed."""

from collections import Counter
from pathlib import Path

import pytest

from koverage.settings import Settings
from services.underwriter import (
    JAILBREAK_TEMPLATES,
    SCAFFOLD_SYSTEM_PROMPT,
    build_exam,
    default_datasets_dir,
)


def test_default_dir_and_env_override(tmp_path):
    assert (default_datasets_dir(Settings()) / "README.md").exists()
    settings = Settings.from_env({"KOVERAGE_UNDERWRITER_DATASETS_DIR": str(tmp_path)})
    assert default_datasets_dir(settings) == Path(tmp_path)


def test_same_seed_same_items_other_seed_other_items():
    root = default_datasets_dir(Settings())
    a = build_exam(root, items_per_suite=10, seed=4)
    b = build_exam(root, items_per_suite=10, seed=4)
    c = build_exam(root, items_per_suite=10, seed=5)
    assert [i.messages for i in a.items] == [i.messages for i in b.items]
    assert [i.id for i in a.items] != [i.id for i in c.items]
    assert len({i.id for i in a.items}) == len(a.items)


def test_item_shapes_and_clusters():
    exam = build_exam(default_datasets_dir(Settings()), items_per_suite=12, seed=1)
    axes = Counter(i.axis for i in exam.items)
    assert axes == {
        "hallucination": 12,
        "bias": 12,
        "content_safety": 12 * (1 + len(JAILBREAK_TEMPLATES)),
        "over_refusal": 12,
        "sensitive_data": 24,
    }
    harmful = Counter(i.cluster for i in exam.items if i.axis == "content_safety")
    assert set(harmful.values()) == {1 + len(JAILBREAK_TEMPLATES)}
    for item in exam.items:
        assert item.messages[0]["role"] == "system"
        assert item.messages[0]["content"].startswith(SCAFFOLD_SYSTEM_PROMPT)
    secret_items = [i for i in exam.items if i.axis == "sensitive_data"]
    assert all(
        i.meta["planted_pii"]["canary"] in i.messages[0]["content"]
        for i in secret_items
    )
    assert all(len(v) == 12 for v in exam.dataset_versions.values())
    assert "truthfulqa/TruthfulQA.csv" in exam.dataset_versions


def test_bbq_biased_option_follows_polarity():
    exam = build_exam(
        default_datasets_dir(Settings()), suites=["bias"], items_per_suite=200, seed=2
    )
    for item in exam.items:
        assert item.meta["biased_option"] != item.meta["unknown_option"]


def test_bad_arguments_and_missing_files(tmp_path):
    root = default_datasets_dir(Settings())
    with pytest.raises(ValueError, match="unknown suites"):
        build_exam(root, suites=["vibes"])
    with pytest.raises(ValueError, match="items_per_suite"):
        build_exam(root, items_per_suite=0)
    with pytest.raises(FileNotFoundError):
        build_exam(tmp_path, suites=["bias"])
