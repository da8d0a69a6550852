"""Shared fixtures for the deployment tests: rendered chart scenarios."""

import pathlib

import pytest
import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "koverage"
SCENARIO_FILES = sorted((CHART_DIR / "ci").glob("*.yaml"))
RELEASE = "demo"
NAMESPACE = "koverage"


def load_values(path: pathlib.Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict) -> dict[str, str]:
    """Renders the chart offline with Helm's own engine (helm-python-sdk)."""
    helm = pytest.importorskip("helm_python")
    helm.disable_logging()
    with helm.Chart.load(CHART_DIR) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(rendered: dict[str, str]) -> list[dict]:
    """Every Kubernetes object in a render (NOTES.txt left out)."""
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


@pytest.fixture(scope="session", params=SCENARIO_FILES, ids=lambda p: p.stem)
def scenario(request) -> tuple[dict, dict[str, str], list[dict]]:
    """(values, rendered templates, objects) for one ci/ scenario file."""
    values = load_values(request.param)
    rendered = render(values)
    return values, rendered, manifests(rendered)
