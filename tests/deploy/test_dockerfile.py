"""The service image definition is multi-stage and runs as non-root.

No Docker engine runs on the development machines, so the Dockerfile is
checked by parsing it; building it is left to CI with a Docker engine.
"""

import fnmatch
import pathlib
import re
import tomllib

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (_ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def test_image_is_multi_stage_with_a_named_build_stage():
    stages = _stages()

    assert len(stages) >= 2
    assert re.search(r"\bAS build\b", stages[0][0][1])
    copies = [rest for kw, rest in stages[-1] if kw == "COPY"]
    assert any(rest.startswith("--from=build ") for rest in copies)


def test_runtime_stage_ends_as_a_numeric_non_root_user():
    runtime = _stages()[-1]
    users = [rest for kw, rest in runtime if kw == "USER"]

    assert users, "the runtime stage never switches user"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0
    # Matches the chart's runAsUser, so runAsNonRoot can be verified.
    values = (_ROOT / "helm" / "koverage" / "values.yaml").read_text()
    assert f"runAsUser: {user}" in values
    after_user = runtime[[kw for kw, _ in runtime].index("USER") :]
    assert not [rest for kw, rest in after_user if kw == "RUN"], "RUN after USER"


def test_runtime_stage_has_no_compiler():
    runtime = " ".join(rest for kw, rest in _stages()[-1] if kw == "RUN")

    assert "build-essential" not in runtime and "gcc" not in runtime


def test_every_copied_source_exists_and_is_not_ignored():
    ignored = {
        line.strip()
        for line in (_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for keyword, rest in _instructions():
        if keyword != "COPY" or rest.startswith("--from="):
            continue
        *sources, _destination = rest.split()
        for source in sources:
            assert source not in ignored, source
            assert (_ROOT / source).exists(), (
                f"COPY {source}: missing from the repository"
            )


@pytest.mark.parametrize("name", ["router", "chat", "ingest", "worker", "underwriter"])
def test_image_installs_the_services_package(name):
    # `pip install .` packages services* (pyproject), which the chart runs
    # as `python -m services.<name>`.
    pyproject = (_ROOT / "pyproject.toml").read_text()
    assert '"services*"' in pyproject
    copies = [rest for kw, rest in _instructions() if kw == "COPY"]
    assert any(rest.startswith("services ") for rest in copies)


def test_package_data_ships_every_dashboard_asset_and_its_license():
    # `pip install .` in the image copies only files matching package-data;
    # uPlot's MIT licence must travel with uPlot's code.
    pyproject = tomllib.loads((_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["*"]
    static = _ROOT / "services" / "worker" / "dashboard" / "static"
    # VENDORED.md is the repository's note on where the assets came from.
    files = sorted(
        p.name for p in static.iterdir() if p.is_file() and p.suffix != ".md"
    )

    assert "uPlot.LICENSE" in files
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert unshipped == []
