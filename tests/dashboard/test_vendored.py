"""The vendored front-end files are the ones VENDORED.md records."""

import hashlib
import json
import re

from services.worker.dashboard._server import _STATIC_DIR

_RECORD = re.compile(r"([\w.-]+\.(?:js|css)) ([0-9a-f]{64})\b")


def test_vendored_files_match_their_recorded_sha256():
    text = (_STATIC_DIR / "VENDORED.md").read_text()
    section = text[text.index("SHA-256:") :]
    recorded = dict(_RECORD.findall(section))
    listed = set(re.findall(r"^\| ([\w.-]+\.(?:js|css)) \|", text, re.MULTILINE))
    assert listed == {"uPlot.iife.min.js", "uPlot.min.css"}
    assert set(recorded) == listed  # every vendored file has its digest
    for name, digest in recorded.items():
        actual = hashlib.sha256((_STATIC_DIR / name).read_bytes()).hexdigest()
        assert actual == digest, f"{name} differs from VENDORED.md: re-vendor it"


def test_vendored_version_is_the_one_package_json_pins():
    text = (_STATIC_DIR / "VENDORED.md").read_text()
    versions = set(re.findall(r"\| uplot \(npm\) \| ([\d.]+) \|", text))
    package = json.loads((_STATIC_DIR.parent / "package.json").read_text())
    lock = json.loads((_STATIC_DIR.parent / "package-lock.json").read_text())
    assert versions == {package["devDependencies"]["uplot"]}
    assert versions == {lock["packages"]["node_modules/uplot"]["version"]}
