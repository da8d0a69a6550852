"""Shared fixtures for the Underwriter tests: a small exam and its simulator."""

import pytest

from koverage.settings import Settings
from services.underwriter import build_exam, default_datasets_dir
from services.underwriter.simulated import Simulator


@pytest.fixture(scope="session")
def small_exam():
    """Four suites, 6 draws each (seed 3)."""
    return build_exam(default_datasets_dir(Settings()), items_per_suite=6, seed=3)


@pytest.fixture
def simulator(small_exam):
    return Simulator(small_exam.items)
