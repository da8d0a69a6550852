"""Turns a scorecard dict into the report's view: KPIs, ranked rows and flags.

The view is plain data (dicts, lists, strings, numbers), so the HTML/PDF
template and the JSON twin are rendered from the very same values.
"""

import logging
import math
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation

from services.underwriter.report._errors import ScorecardError

SCHEMA_VERSION = 1
AXES = ("hallucination", "bias", "content_safety", "sensitive_data")
ARMS = ("off", "on")
SIMULATED_MARK = "SIMULATED"

_REQUIRED_KEYS = ("schema_version", "run_id", "manifest", "entries")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Density:
    """How much the one page shows, and how small it writes it.

    The levels run from roomy to tight; the renderer steps down a level when a
    page overflows.
    """

    name: str
    base_font_pt: float
    """Body text size in the HTML."""
    chart_font_pt: float
    """Text size inside the charts."""
    table_rows: int
    """Entries listed in the table and in the per-entry charts."""
    risk_entries: int
    """Entries drawn in the risk-by-axis chart (each axis gets one marker each)."""
    scatter_labels: int
    """Points labelled by name in the cost x latency chart."""
    max_threats: int
    """Threats-to-validity lines printed before a '+k more' line."""
    max_threat_chars: int
    """Longest threat line printed, in characters."""
    max_recommendation_chars: int
    """Longest recommendation printed, in characters."""
    max_label_chars: int
    """Longest model label, in characters (middle-truncated)."""
    manifest_items: int
    """Items printed per manifest list (models, judges, datasets)."""


DENSITIES = (
    Density("roomy", 8.0, 7.0, 6, 4, 6, 4, 240, 900, 34, 6),
    Density("compact", 7.2, 6.4, 6, 4, 5, 3, 200, 600, 28, 4),
    Density("dense", 6.6, 6.0, 6, 3, 4, 3, 160, 420, 24, 3),
    Density("tightest", 6.0, 5.6, 5, 3, 3, 2, 120, 280, 20, 2),
)


def density_for(view: dict) -> int:
    """Return the index in `DENSITIES` to start rendering `view` at."""
    entries = len(view["rows"])
    text = len(view["recommendation"]) + sum(
        len(t) for t in view["threats_to_validity"]
    )
    if view["pii_leak"] is not None:
        # The PII leak column takes a line per guardrail arm in each row, and
        # its note two lines under the table.
        arms = max((len(r["arms"]) for r in view["rows"]), default=1)
        entries = entries * max(1, arms) + 2
    if entries <= 4 and text <= 900:
        return 0
    if entries <= 8 and text <= 1400:
        return 1
    return 2


def build_view(scorecard: dict) -> dict:
    """Validate `scorecard` and derive everything the report shows.

    Args:
        scorecard: A scorecard dict, schema_version 1.

    Returns:
        The view: run facts, manifest, KPIs, ranked rows (all entries, best
        index first, each arm's PII leak rate raw and corrected where the
        scorecard has one), what those PII rates rest on (`pii_leak`, None
        when no arm measured one), axis agreement, recommendation and threats.

    Raises:
        ScorecardError: The scorecard is not a dict, lacks a required key or
            has another schema version.
    """
    _validate(scorecard)
    manifest = scorecard.get("manifest") or {}
    rows = [_row(entry) for entry in scorecard.get("entries") or []]
    rows.sort(key=lambda r: (-_or(r["best_index"], -math.inf), r["label"]))
    short_names = _short_names({r["model"] for r in rows})
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
        row["short_label"] = (
            f"#{rank} {short_names[row['model']]} T={row['temperature']:g}"
        )

    agreement = _agreement(scorecard.get("agreement") or {}, rows)
    simulated = bool(manifest.get("simulated")) or any(r["simulated"] for r in rows)
    view = {
        "format": "koverage.underwriter.report/v1",
        "schema_version": scorecard["schema_version"],
        "run_id": str(scorecard["run_id"]),
        "created_at": str(scorecard.get("created_at") or ""),
        "simulated": simulated,
        "simulated_mark": SIMULATED_MARK,
        "manifest": _manifest(manifest),
        "tiers": _tiers(scorecard.get("tiers") or []),
        "rows": rows,
        "agreement": agreement,
        "soft_axes": [a["axis"] for a in agreement if a["soft"]],
        "pii_leak": _pii_summary(rows),
        "judge_parse_failure_rate": {
            str(k): float(v)
            for k, v in (scorecard.get("judge_parse_failure_rate") or {}).items()
        },
        "recommendation": str(scorecard.get("recommendation") or ""),
        "threats_to_validity": [
            str(t) for t in scorecard.get("threats_to_validity") or []
        ],
    }
    view["kpis"] = _kpis(view, manifest)
    return view


def density_dict(density: Density) -> dict:
    """Return `density` as a plain dict (for templates and the JSON twin)."""
    return asdict(density)


def shorten(text: str, limit: int) -> str:
    """Cut `text` to `limit` characters, ending with an ellipsis if cut."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: max(1, limit - 1)].rstrip()
    # Prefer to end on a word when that loses little.
    space = cut.rfind(" ")
    if space > limit * 0.7:
        cut = cut[:space].rstrip(" ,;:")
    return cut + "…"


def shorten_middle(text: str, limit: int) -> str:
    """Cut the middle of `text` so its both ends (provider, size) survive."""
    text = str(text)
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    tail = limit - 1 - head
    return text[:head] + "…" + text[-tail:]


def _short_names(models: set[str]) -> dict[str, str]:
    """Drop the provider prefix ("openai/") where the rest stays unique."""
    tails = {}
    for model in models:
        tails.setdefault(model.rsplit("/", 1)[-1], []).append(model)
    return {
        model: tail if len(owners) == 1 and tail else model
        for tail, owners in tails.items()
        for model in owners
    }


def _validate(scorecard: dict) -> None:
    if not isinstance(scorecard, dict):
        raise ScorecardError(
            f"scorecard must be a dict, got {type(scorecard).__name__}; "
            "pass the decoded scorecard JSON",
            field="scorecard",
        )
    missing = [k for k in _REQUIRED_KEYS if k not in scorecard]
    if missing:
        raise ScorecardError(
            f"scorecard lacks required keys {missing}; "
            f"a schema_version {SCHEMA_VERSION} scorecard has {list(_REQUIRED_KEYS)}",
            field=missing[0],
        )
    if scorecard["schema_version"] != SCHEMA_VERSION:
        raise ScorecardError(
            f"scorecard schema_version is {scorecard['schema_version']!r}; "
            f"this report renders only version {SCHEMA_VERSION}",
            field="schema_version",
        )
    if not isinstance(scorecard["entries"], list):
        raise ScorecardError(
            "scorecard entries must be a list of per-model entries",
            field="entries",
        )


def _manifest(manifest: dict) -> dict:
    return {
        "models": [str(m) for m in manifest.get("models") or []],
        "judges": [str(j) for j in manifest.get("judges") or []],
        "suites": [str(s) for s in manifest.get("suites") or []],
        "items_per_suite": manifest.get("items_per_suite"),
        "seed": manifest.get("seed"),
        "temperatures": [float(t) for t in manifest.get("temperatures") or []],
        "guardrail_arms": [str(a) for a in manifest.get("guardrail_arms") or []],
        "dataset_versions": [
            [str(k), str(v)]
            for k, v in (manifest.get("dataset_versions") or {}).items()
        ],
        "simulated": bool(manifest.get("simulated")),
    }


def _tiers(tiers: list) -> list[dict]:
    cleaned = [
        {"tier": str(t["tier"]), "min_index": float(t["min_index"])} for t in tiers
    ]
    return sorted(cleaned, key=lambda t: -t["min_index"])


def _row(entry: dict) -> dict:
    temperature = float(entry.get("temperature", 0.0))
    model = str(entry.get("model", "?"))
    arms = {
        arm: _arm(entry["arms"][arm])
        for arm in ARMS
        if arm in (entry.get("arms") or {})
    }
    indices = [a["index"] for a in arms.values() if a["index"] is not None]
    best_arm = None
    if indices:
        best_arm = max(
            (arm for arm in arms if arms[arm]["index"] is not None),
            key=lambda arm: arms[arm]["index"],
        )
    uplift = None
    if (
        "off" in arms
        and "on" in arms
        and arms["off"]["index"] is not None
        and arms["on"]["index"] is not None
    ):
        uplift = arms["on"]["index"] - arms["off"]["index"]
    ab = entry.get("guardrail_ab")
    return {
        "rank": 0,
        "short_label": model,
        "model": model,
        "temperature": temperature,
        "label": f"{model} (T={temperature:g})",
        "simulated": bool(entry.get("simulated")),
        "arms": arms,
        "best_arm": best_arm,
        "best_index": max(indices) if indices else None,
        "index_uplift": uplift,
        "guardrail_ab": _guardrail_ab(ab) if ab else None,
    }


def _arm(arm: dict) -> dict:
    axes = {}
    for axis, values in (arm.get("axes") or {}).items():
        axes[str(axis)] = {
            "risk": _num(values.get("risk")),
            "ci": _pair(values.get("ci")),
            "n": values.get("n"),
            "corrected_risk": _num(values.get("corrected_risk")),
            "soft": bool(values.get("soft")),
        }
        if isinstance(values.get("pii_leak"), dict):
            axes[str(axis)]["pii_leak"] = _pii_leak(values["pii_leak"])
    risks = [a["risk"] for a in axes.values() if a["risk"] is not None]
    over = arm.get("over_refusal") or {}
    cost_text = str(arm.get("cost_usd", ""))
    return {
        "index": _num(arm.get("index")),
        "index_ci": _pair(arm.get("index_ci")),
        "tier": str(arm.get("tier", "")),
        "tier_uncertain": bool(arm.get("tier_uncertain")),
        "axes": axes,
        "mean_risk": sum(risks) / len(risks) if risks else None,
        "over_refusal": {
            "rate": _num(over.get("rate")),
            "ci": _pair(over.get("ci")),
            "n": over.get("n"),
        },
        "cost_usd": cost_text,
        "cost_usd_value": _decimal(cost_text),
        "latency_p50_ms": _num(arm.get("latency_p50_ms")),
        "calls": arm.get("calls"),
        "errors": arm.get("errors"),
    }


def _pii_leak(block: dict) -> dict:
    """The sensitive-data axis's raw and Rogan-Gladen corrected PII leak rate."""
    calibration = block.get("calibration")
    return {
        "rate": _num(block.get("rate")),
        "ci": _pair(block.get("ci")),
        "n": block.get("n"),
        "corrected_rate": _num(block.get("corrected_rate")),
        "corrected_ci": _pair(block.get("corrected_ci")),
        "decision": str(block.get("decision") or ""),
        "estimator": str(block.get("estimator") or ""),
        "calibration": (
            {
                "sensitivity": _num(calibration.get("sensitivity")),
                "specificity": _num(calibration.get("specificity")),
                "n_positive": calibration.get("n_positive"),
                "n_negative": calibration.get("n_negative"),
                "source": str(calibration.get("source") or ""),
            }
            if isinstance(calibration, dict)
            else None
        ),
    }


def _pii_summary(rows: list[dict]) -> dict | None:
    """What the PII leak rates rest on, or None when no arm measured one.

    An arm counts when its sensitive-data axis has a `pii_leak` block with a
    raw rate (an arm without PII-extraction items has none).
    """
    blocks = [
        pii
        for row in rows
        for arm in row["arms"].values()
        if (pii := arm["axes"].get("sensitive_data", {}).get("pii_leak"))
        and pii["rate"] is not None
    ]
    if not blocks:
        return None
    calibrations = [b["calibration"] for b in blocks if b["calibration"]]
    return {
        "arms": len(blocks),
        "corrected_arms": sum(b["corrected_rate"] is not None for b in blocks),
        "decision": blocks[0]["decision"],
        "estimator": blocks[0]["estimator"],
        "calibration": calibrations[0] if calibrations else None,
        "calibrations_agree": all(c == calibrations[0] for c in calibrations),
    }


def _guardrail_ab(ab: dict) -> dict:
    return {
        "risk_reduction": _num(ab.get("risk_reduction")),
        "ci": _pair(ab.get("ci")),
        "mcnemar_p": _num(ab.get("mcnemar_p")),
        "over_refusal_cost": _num(ab.get("over_refusal_cost")),
        "over_refusal_cost_ci": _pair(ab.get("over_refusal_cost_ci")),
    }


def _agreement(agreement: dict, rows: list[dict]) -> list[dict]:
    # An axis is soft if the agreement table says so or any entry flags it.
    soft_in_entries = {
        axis
        for row in rows
        for arm in row["arms"].values()
        for axis, values in arm["axes"].items()
        if values["soft"]
    }
    names = list(AXES) + sorted((set(agreement) | soft_in_entries) - set(AXES))
    out = []
    for axis in names:
        values = agreement.get(axis) or {}
        if not values and axis not in soft_in_entries:
            continue
        out.append(
            {
                "axis": axis,
                "raw": _num(values.get("raw")),
                "prevalence": _num(values.get("prevalence")),
                "kappa_quadratic": _num(values.get("kappa_quadratic")),
                "kappa_ci": _pair(values.get("kappa_ci")),
                "alpha": _num(values.get("alpha")),
                "alpha_ci": _pair(values.get("alpha_ci")),
                "n": values.get("n"),
                "soft": bool(values.get("soft")) or axis in soft_in_entries,
            }
        )
    return out


def _kpis(view: dict, manifest: dict) -> dict:
    rows = view["rows"]
    best = None
    if rows and rows[0]["best_index"] is not None:
        row = rows[0]
        arm = row["arms"][row["best_arm"]]
        best = {
            "index": arm["index"],
            "index_ci": arm["index_ci"],
            "tier": arm["tier"],
            "tier_uncertain": arm["tier_uncertain"],
            "model": row["model"],
            "temperature": row["temperature"],
            "arm": row["best_arm"],
            "simulated": row["simulated"],
        }

    uplifts = [r["index_uplift"] for r in rows if r["index_uplift"] is not None]
    reductions = [
        r["guardrail_ab"]["risk_reduction"]
        for r in rows
        if r["guardrail_ab"] and r["guardrail_ab"]["risk_reduction"] is not None
    ]
    costs = [
        r["guardrail_ab"]["over_refusal_cost"]
        for r in rows
        if r["guardrail_ab"] and r["guardrail_ab"]["over_refusal_cost"] is not None
    ]
    uplift = None
    if uplifts or reductions:
        uplift = {
            "mean_index_uplift": _mean(uplifts),
            "min_index_uplift": min(uplifts) if uplifts else None,
            "max_index_uplift": max(uplifts) if uplifts else None,
            "mean_risk_reduction": _mean(reductions),
            "mean_over_refusal_cost": _mean(costs),
            "pairs": len(uplifts),
        }

    # The planned matrix, from the manifest; fall back to what the entries hold.
    m = view["manifest"]
    n_models = len(m["models"]) or len({r["model"] for r in rows})
    n_temps = len(m["temperatures"]) or len({r["temperature"] for r in rows})
    n_arms = len(m["guardrail_arms"]) or len({a for r in rows for a in r["arms"]})
    n_suites = len(m["suites"])
    cells = n_models * n_suites * n_arms * n_temps
    items = cells * m["items_per_suite"] if m["items_per_suite"] else None
    matrix = {
        "models": n_models,
        "suites": n_suites,
        "arms": n_arms,
        "temperatures": n_temps,
        "cells": cells,
        "items": items,
    }

    kappas = [
        (a["kappa_quadratic"], a["axis"])
        for a in view["agreement"]
        if a["kappa_quadratic"] is not None
    ]
    agreement = None
    if kappas:
        low = min(kappas)
        agreement = {
            "mean_kappa_quadratic": _mean([k for k, _ in kappas]),
            "min_kappa_quadratic": low[0],
            "min_axis": low[1],
            "soft_axes": list(view["soft_axes"]),
            "judges": list(m["judges"]),
        }
    return {
        "best_index": best,
        "guardrail_uplift": uplift,
        "eval_matrix": matrix,
        "judge_agreement": agreement,
    }


def _num(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        logger.warning("scorecard value %r is not a number; shown as n/a", value)
        return None
    return number if math.isfinite(number) else None


def _pair(value) -> list[float] | None:
    if not value or len(value) != 2:
        return None
    lo, hi = _num(value[0]), _num(value[1])
    if lo is None or hi is None:
        return None
    return [min(lo, hi), max(lo, hi)]


def _decimal(text: str) -> float | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return float(value) if value.is_finite() else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _or(value, default):
    return default if value is None else value
