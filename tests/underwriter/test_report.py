"""The one-page report: PDF, HTML and JSON twin rendered from sample scorecards."""

import base64
import html
import json
import logging
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from services.underwriter.report import (
    ScorecardError,
    build_view,
    render_report,
    render_report_html,
    render_report_json,
)

try:
    from .scorecard_fixtures import (
        PII_CALIBRATION,
        SIX_MODELS,
        build_scorecard,
        with_model_renamed,
    )
except ImportError:  # collected without a package (rootdir-relative import)
    from scorecard_fixtures import (
        PII_CALIBRATION,
        SIX_MODELS,
        build_scorecard,
        with_model_renamed,
    )

_POPPLER = all(shutil.which(t) for t in ("pdfinfo", "pdftoppm", "pdftotext"))
DEFAULT_TWO = ("sim/careful", "sim/leaky-secrets")
needs_poppler = pytest.mark.skipif(
    not _POPPLER, reason="needs poppler-utils (apt-get install poppler-utils)"
)


@pytest.fixture(scope="module")
def one_model() -> dict:
    return build_scorecard(models=["sim/careful"], temperatures=[0.0])


@pytest.fixture(scope="module")
def six_by_three() -> dict:
    return build_scorecard(
        models=SIX_MODELS,
        temperatures=[0.0, 0.7, 1.0],
        simulated_models=["qwen/qwen3-8b"],
    )


@pytest.fixture(scope="module")
def real_only() -> dict:
    return build_scorecard(models=SIX_MODELS[:2], simulated=False, seed=11)


@needs_poppler
def test_one_model_report_is_one_nonblank_page(one_model, tmp_path):
    pdf = _write(tmp_path, render_report(one_model))

    assert _pages(pdf) == 1
    png = _png(pdf, tmp_path)
    assert _pixel_spread(png) > 40
    # Letter-spaced capitals come out of pdftotext with gaps; compare squeezed.
    text = _squeezed(_text(pdf))
    for needle in (
        "Insurability report",
        one_model["run_id"],
        "Best index",
        "Guardrail uplift",
        "Eval matrix",
        "Judge agreement",
        "Recommendation",
        "Threats to validity",
        "sim/careful",
    ):
        assert _squeezed(needle) in text, needle


@needs_poppler
def test_six_models_three_temperatures_still_fit_one_page(six_by_three, tmp_path):
    pdf = _write(tmp_path, render_report(six_by_three))

    assert _pages(pdf) == 1
    assert _pixel_spread(_png(pdf, tmp_path)) > 40
    text = _text(pdf)
    # 18 entries; the table shows the top ones and says how many it left out.
    view = build_view(six_by_three)
    assert len(view["rows"]) == 18
    assert "+12moreentries" in _squeezed(text)
    assert "6×4×2×3" in _squeezed(text)
    assert "144 cells" in text
    # The PII leak column and its note fit too, with every shown row's rates.
    assert "raw→corrected[95%ci]" in _squeezed(text)
    assert "piileak:shareofpii-extractionanswers" in _squeezed(text)
    for rank in range(1, 7):
        for expected in _pii_texts(_entry_for(six_by_three, view["rows"][rank - 1])):
            assert expected in _squeezed(text), (rank, expected)


@needs_poppler
def test_pii_leak_shows_raw_and_corrected_rate_beside_each_other(one_model, tmp_path):
    pdf = _write(tmp_path, render_report(one_model))

    assert _pages(pdf) == 1
    text = _squeezed(_text(pdf))
    (entry,) = one_model["entries"]
    expected = _pii_texts(entry)
    assert len(expected) == 4  # raw→corrected and CI, guardrail off and on
    for needle in expected:
        assert needle in text, needle
    assert "sens0.95/spec0.96onpii_presidio/synth_dataset_v2.json" in text
    assert "246withpii,1,254without" in text


@needs_poppler
def test_scorecard_without_pii_leak_renders_without_the_column(tmp_path):
    scorecard = build_scorecard(models=["sim/careful"], pii_leak=False)

    pdf = _write(tmp_path, render_report(scorecard))

    assert _pages(pdf) == 1
    assert "piileak" not in _squeezed(_text(pdf))
    twin = json.loads(render_report_json(scorecard))
    assert twin["pii_leak"] is None
    assert twin["pdf"]["pii_leak_note"] is None
    arm = twin["rows"][0]["arms"]["off"]
    assert "pii_leak" not in arm["axes"]["sensitive_data"]


@needs_poppler
def test_uncalibrated_pii_leak_shows_the_raw_rate_only(one_model, tmp_path):
    scorecard = json.loads(json.dumps(one_model))
    for arm in scorecard["entries"][0]["arms"].values():
        pii = arm["axes"]["sensitive_data"]["pii_leak"]
        pii.update(calibration=None, corrected_rate=None, corrected_ci=[None, None])

    pdf = _write(tmp_path, render_report(scorecard))

    text = _squeezed(_text(pdf))
    off = scorecard["entries"][0]["arms"]["off"]["axes"]["sensitive_data"]
    assert f"{100 * off['pii_leak']['rate']:.0f}%→n/a" in text
    assert "nolabelledcalibrationofthedetector:rawonly" in text
    assert "sens0." not in text


@needs_poppler
@pytest.mark.parametrize("models", [DEFAULT_TWO, SIX_MODELS[:4]])
def test_pii_leak_column_starts_at_a_layout_that_fits(models, tmp_path, caplog):
    scorecard = build_scorecard(models=models)
    caplog.set_level(logging.INFO, logger="services.underwriter.report._render")

    pdf = _write(tmp_path, render_report(scorecard))

    assert _pages(pdf) == 1
    assert not [r for r in caplog.records if "overflowed" in r.getMessage()]
    layout = json.loads(render_report_json(scorecard))["pdf"]["density"]["name"]
    assert f"layout{layout}" in _squeezed(_text(pdf))


def test_json_twin_carries_the_pii_leak_figures_the_pdf_shows(one_model):
    twin = json.loads(render_report_json(one_model))
    page_html = render_report_html(one_model)

    (entry,) = one_model["entries"]
    for name, arm in entry["arms"].items():
        source = arm["axes"]["sensitive_data"]["pii_leak"]
        shown = twin["rows"][0]["arms"][name]["axes"]["sensitive_data"]["pii_leak"]
        for key in ("rate", "ci", "n", "corrected_rate", "corrected_ci"):
            assert shown[key] == source[key], (name, key)
        assert shown["calibration"] == PII_CALIBRATION
    assert twin["pii_leak"]["calibration"] == PII_CALIBRATION
    assert twin["pii_leak"]["arms"] == twin["pii_leak"]["corrected_arms"] == 2
    note = twin["pdf"]["pii_leak_note"]
    assert "sens 0.95 / spec 0.96" in note
    assert html.escape(note) in page_html


@needs_poppler
def test_simulated_results_are_marked_in_header_charts_and_rows(one_model, tmp_path):
    pdf = _write(tmp_path, render_report(one_model))
    text = _text(pdf)

    # Header badge, KPI, table pill, recommendation and threats all say it.
    assert text.count("SIMULATED") >= 5
    assert "basedonsimulatedresults." in _squeezed(text)
    page_html = render_report_html(one_model)
    assert 'class="sim-badge"' in page_html
    assert 'class="row-sim"' in page_html
    assert "[SIM]" in _chart_text(page_html)
    assert "SIMULATED" in _chart_text(page_html)


@needs_poppler
def test_real_results_carry_no_simulated_mark(real_only, tmp_path):
    pdf = _write(tmp_path, render_report(real_only))
    text = _text(pdf)
    page_html = render_report_html(real_only)

    assert "SIMULATED" not in text
    assert 'class="sim-badge"' not in page_html
    assert "[SIM]" not in _chart_text(page_html)
    assert json.loads(render_report_json(real_only))["simulated"] is False


def test_mixed_run_marks_only_the_simulated_entries(six_by_three):
    twin = json.loads(render_report_json(six_by_three))

    flags = {(r["model"], r["simulated"]) for r in twin["rows"]}
    assert ("qwen/qwen3-8b", True) in flags
    assert ("openai/gpt-4.1-mini", False) in flags
    assert twin["simulated"] is True
    page_html = render_report_html(six_by_three)
    assert "3 of 18 entries" in page_html


def test_model_names_are_escaped_in_html(one_model):
    hostile = with_model_renamed(one_model, "sim/careful", "<script>alert(1)</script>")

    page_html = render_report_html(hostile)

    assert "<script>" not in page_html
    assert html.escape("<script>alert(1)</script>") in page_html


@needs_poppler
def test_hostile_model_name_renders_as_text_in_pdf(one_model, tmp_path):
    hostile = with_model_renamed(one_model, "sim/careful", "<b>x&y</b> $\\alpha$")

    pdf = _write(tmp_path, render_report(hostile))

    assert _pages(pdf) == 1
    assert "<b>x&y</b>" in _text(pdf)


@needs_poppler
def test_single_arm_run_renders_without_guardrail_ab(tmp_path):
    scorecard = build_scorecard(models=DEFAULT_TWO, arms=("off",))

    pdf = _write(tmp_path, render_report(scorecard))

    assert _pages(pdf) == 1
    text = _text(pdf)
    assert "noguardraila/b" in _squeezed(text)
    twin = json.loads(render_report_json(scorecard))
    assert twin["kpis"]["guardrail_uplift"] is None
    assert all(r["guardrail_ab"] is None for r in twin["rows"])


def test_soft_axes_and_uncertain_tiers_are_flagged(one_model):
    view = build_view(one_model)
    page_html = render_report_html(one_model)

    assert view["soft_axes"] == ["bias"]
    assert "soft: bias" in page_html
    assert "(soft)" in _chart_text(page_html)
    uncertain = [
        r for r in view["rows"] if any(a["tier_uncertain"] for a in r["arms"].values())
    ]
    assert uncertain, "fixture should hold an uncertain tier"
    assert "?" in _chart_text(page_html)
    assert 'class="flag"' in page_html


def test_json_twin_matches_what_the_pdf_shows(six_by_three):
    twin = json.loads(render_report_json(six_by_three))
    page_html = render_report_html(six_by_three)

    best = twin["kpis"]["best_index"]
    top = max(
        (arm["index"], entry["model"])
        for entry in six_by_three["entries"]
        for arm in entry["arms"].values()
    )
    assert (best["index"], best["model"]) == top
    assert f"{best['index']:.1f}" in page_html
    assert html.escape(twin["recommendation"]) in page_html
    assert twin["kpis"]["eval_matrix"]["cells"] == 6 * 4 * 2 * 3
    assert twin["kpis"]["eval_matrix"]["items"] == 144 * 50
    assert twin["pdf"]["rows_shown"] == [1, 2, 3, 4, 5, 6]
    assert twin["pdf"]["rows_more"] == 12
    assert [r["rank"] for r in twin["rows"]] == list(range(1, 19))
    indices = [r["best_index"] for r in twin["rows"]]
    assert indices == sorted(indices, reverse=True)


def test_guardrail_uplift_is_the_mean_index_change(six_by_three):
    twin = json.loads(render_report_json(six_by_three))

    changes = [
        e["arms"]["on"]["index"] - e["arms"]["off"]["index"]
        for e in six_by_three["entries"]
    ]
    uplift = twin["kpis"]["guardrail_uplift"]
    assert uplift["mean_index_uplift"] == pytest.approx(statistics.mean(changes))
    assert uplift["min_index_uplift"] == pytest.approx(min(changes))
    assert uplift["pairs"] == 18


@needs_poppler
def test_long_text_and_many_lists_are_capped_to_one_page(tmp_path):
    long_names = [f"vendor-{i}/{'very-long-model-name-' * 4}{i}" for i in range(6)]
    scorecard = build_scorecard(
        models=long_names,
        temperatures=[0.0, 0.5, 1.0],
        recommendation="Do not insure yet. " * 120,
        threats=[f"Threat number {i}: " + "detail " * 60 for i in range(25)],
    )
    scorecard["manifest"]["dataset_versions"] = {f"ds-{i}": "v1" for i in range(30)}

    pdf = _write(tmp_path, render_report(scorecard))

    assert _pages(pdf) == 1
    text = _text(pdf)
    assert "moreinthejsontwin" in _squeezed(text)
    twin = json.loads(render_report_json(scorecard))
    assert len(twin["threats_to_validity"]) == 25
    assert twin["recommendation"] == scorecard["recommendation"]


@needs_poppler
def test_scorecard_without_entries_still_renders(tmp_path):
    scorecard = build_scorecard(models=[])

    pdf = _write(tmp_path, render_report(scorecard))

    assert _pages(pdf) == 1
    assert "noentries" in _squeezed(_text(pdf))
    assert json.loads(render_report_json(scorecard))["kpis"]["best_index"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.update(schema_version=2), "schema_version"),
        (lambda s: s.pop("entries"), "entries"),
        (lambda s: s.update(entries="nope"), "entries"),
    ],
)
def test_malformed_scorecard_is_rejected_with_the_field(one_model, change, field):
    scorecard = json.loads(json.dumps(one_model))
    change(scorecard)

    with pytest.raises(ScorecardError) as info:
        render_report_json(scorecard)
    assert info.value.field == field


def test_non_dict_scorecard_is_rejected():
    with pytest.raises(ScorecardError):
        render_report_html(["not", "a", "scorecard"])


def _entry_for(scorecard: dict, row: dict) -> dict:
    return next(
        e
        for e in scorecard["entries"]
        if e["model"] == row["model"] and e["temperature"] == row["temperature"]
    )


def _pii_texts(entry: dict) -> list[str]:
    """An entry's PII leak figures as the PDF writes them: whole percent."""
    texts = []
    for arm in ("off", "on"):
        pii = entry["arms"][arm]["axes"]["sensitive_data"]["pii_leak"]
        low, high = pii["corrected_ci"]
        texts.append(f"{100 * pii['rate']:.0f}→{100 * pii['corrected_rate']:.0f}%")
        texts.append(f"[{100 * low:.0f}–{100 * high:.0f}]")
    return texts


def _write(tmp_path: Path, pdf: bytes) -> Path:
    assert pdf.startswith(b"%PDF-")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return path


def _pages(pdf: Path) -> int:
    out = subprocess.run(
        ["pdfinfo", str(pdf)], check=True, capture_output=True, text=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("Pages:"))
    return int(line.split()[1])


def _text(pdf: Path) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _squeezed(text: str) -> str:
    return "".join(text.split()).lower()


def _png(pdf: Path, tmp_path: Path) -> Path:
    stem = tmp_path / "page"
    subprocess.run(
        ["pdftoppm", "-png", "-r", "40", "-singlefile", str(pdf), str(stem)],
        check=True,
    )
    png = stem.with_suffix(".png")
    assert png.read_bytes().startswith(b"\x89PNG")
    return png


def _pixel_spread(png: Path) -> float:
    """Standard deviation of the grey levels of a PNG (0 for a blank page)."""
    with Image.open(png) as image:
        return ImageStat.Stat(image.convert("L")).stddev[0]


def _chart_text(page_html: str) -> str:
    """The text inside every chart SVG embedded in the report's HTML."""
    svgs = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page_html)
    assert svgs, "no chart in the report"
    return "\n".join(base64.b64decode(s).decode("utf-8") for s in svgs)
