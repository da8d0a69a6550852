"""The report's four charts, drawn with matplotlib and returned as SVG data URIs.

Figures are built with `matplotlib.figure.Figure` on the Agg canvas, never
through pyplot, so no global figure state is kept between reports. Text stays
text in the SVG (`svg.fonttype: none`), which keeps the PDF searchable and
small.
"""

import base64
import io
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from services.underwriter.report._view import Density, shorten_middle

_INK = "#1f2a3a"
_MUTED = "#6b7688"
_GRID = "#e3e7ee"
_SOFT = "#b45309"
_SOFT_BAND = "#fff4e0"
_OFF = "#8792a2"
_ON = "#0f766e"
_GOOD = "#15803d"
_COST = "#c2410c"
_PALETTE = ("#1d4ed8", "#c2410c", "#0f766e", "#7c3aed", "#b91c1c", "#a16207")
_SIM_TAG = " [SIM]"
_LABEL_OFFSETS = ((5, 4), (-5, 4), (5, -9), (-5, -9))

# rcParams are process-wide; the lock keeps two renders from mixing theirs.
_RC_LOCK = threading.Lock()


def risk_by_axis_chart(
    rows: list[dict],
    arm: str,
    axes: list[str],
    soft_axes: list[str],
    density: Density,
    size_in: tuple[float, float],
) -> str | None:
    """Dot-and-whisker chart of each axis's risk (with CI) for the top entries.

    Returns None when no shown entry has risks for `arm`.
    """
    shown = [r for r in rows if arm in r["arms"]][: density.risk_entries]
    if not shown or not axes:
        return None
    with _style(density) as fig_of:
        fig = fig_of(size_in)
        ax = fig.add_subplot()
        k = len(shown)
        step = 0.72 / max(k, 1)
        for pos, axis in enumerate(axes):
            if axis in soft_axes:
                ax.axhspan(pos - 0.45, pos + 0.45, color=_SOFT_BAND, zorder=0)
        for j, row in enumerate(shown):
            color = _PALETTE[j % len(_PALETTE)]
            offset = (j - (k - 1) / 2) * step
            for pos, axis in enumerate(axes):
                values = row["arms"][arm]["axes"].get(axis)
                if not values or values["risk"] is None:
                    continue
                y = pos - offset
                x = 100 * values["risk"]
                err = _err(values["ci"], values["risk"], scale=100)
                ax.errorbar(
                    x,
                    y,
                    xerr=err,
                    fmt="o",
                    ms=3.2,
                    color=color,
                    ecolor=color,
                    elinewidth=0.9,
                    capsize=1.6,
                    capthick=0.7,
                    zorder=3,
                )
                if values["corrected_risk"] is not None:
                    ax.plot(
                        100 * values["corrected_risk"],
                        y,
                        marker="|",
                        ms=5,
                        mew=1.1,
                        color=_INK,
                        zorder=4,
                    )
            ax.plot([], [], "o", ms=3.2, color=color, label=_label(row, density))

        ax.set_yticks(
            range(len(axes)),
            labels=[_axis_label(a, a in soft_axes) for a in axes],
        )
        for tick, axis in zip(ax.get_yticklabels(), axes, strict=True):
            if axis in soft_axes:
                tick.set_color(_SOFT)
                tick.set_fontweight("bold")
        ax.set_ylim(len(axes) - 0.5, -0.5)
        ax.set_xlim(left=0)
        ax.set_xlabel("risk, % of items failed (bars: CI; | judge-corrected)")
        ax.grid(axis="x", color=_GRID, lw=0.5)
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=2,
            fontsize=density.chart_font_pt - 0.6,
            handletextpad=0.2,
            columnspacing=0.9,
            borderaxespad=0,
        )
        if any(r["simulated"] for r in shown):
            _watermark(ax)
        return _data_uri(fig)


def index_chart(
    rows: list[dict],
    tiers: list[dict],
    density: Density,
    size_in: tuple[float, float],
) -> str | None:
    """Dumbbell chart of the index with the guardrail off and on, per entry.

    Tier thresholds are dashed lines; each row's tiers sit at the right, with
    '?' (and the soft colour) where the tier is uncertain.
    """
    shown = [r for r in rows if r["best_index"] is not None][: density.table_rows]
    if not shown:
        return None
    with _style(density) as fig_of:
        fig = fig_of(size_in)
        ax = fig.add_subplot()
        lows = []
        for y, row in enumerate(shown):
            off, on = row["arms"].get("off"), row["arms"].get("on")
            if off and on and off["index"] is not None and on["index"] is not None:
                ax.plot(
                    [off["index"], on["index"]],
                    [y - 0.12, y + 0.12],
                    color="#c9d1dd",
                    lw=1.6,
                    zorder=1,
                    solid_capstyle="round",
                )
            for arm, style in (("off", _OFF), ("on", _ON)):
                values = row["arms"].get(arm)
                if not values or values["index"] is None:
                    continue
                err = _err(values["index_ci"], values["index"])
                lows.append(values["index"] - err[0][0])
                # Off sits a little above on, so their CIs do not overlap.
                nudge = (0.12 if arm == "on" else -0.12) if len(row["arms"]) > 1 else 0
                ax.errorbar(
                    values["index"],
                    y + nudge,
                    xerr=err,
                    fmt="o",
                    ms=4,
                    mfc="white" if arm == "off" else style,
                    mec=style,
                    mew=1.1,
                    ecolor=style,
                    elinewidth=0.9,
                    capsize=1.8,
                    zorder=3,
                )
            ax.text(
                1.015,
                y,
                _tier_text(row),
                transform=ax.get_yaxis_transform(),
                va="center",
                ha="left",
                fontsize=density.chart_font_pt - 0.4,
                color=_SOFT if _tier_uncertain(row) else _INK,
                fontweight="bold",
            )

        low = max(0.0, math.floor((min(lows) - 4) / 10) * 10) if lows else 0.0
        for tier in tiers:
            if low < tier["min_index"] < 100:
                ax.axvline(
                    tier["min_index"], color=_MUTED, lw=0.6, ls=(0, (3, 2)), zorder=0
                )
                ax.text(
                    tier["min_index"] + 0.4,
                    0.995,
                    _tier_abbrev(tier["tier"]),
                    transform=ax.get_xaxis_transform(),
                    ha="left",
                    va="top",
                    fontsize=density.chart_font_pt - 1.0,
                    color=_MUTED,
                )
        ax.set_xlim(low, 100)
        ax.set_ylim(max(len(shown), 3) - 0.5, -0.7)
        ax.set_yticks(range(len(shown)), labels=[_label(r, density) for r in shown])
        ax.grid(axis="x", color=_GRID, lw=0.5)
        ax.set_xlabel("index 0-100 (bars: CI) · right: tier off\u2192on, ? = uncertain")
        arms_drawn = {arm for r in shown for arm in r["arms"]}
        handles = []
        if "off" in arms_drawn:
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="",
                    marker="o",
                    ms=4,
                    mfc="white",
                    mec=_OFF,
                    label="guardrail off",
                )
            )
        if "on" in arms_drawn:
            handles.append(
                Line2D([], [], ls="", marker="o", ms=4, color=_ON, label="guardrail on")
            )
        ax.legend(
            handles=handles,
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0),
            ncol=2,
            fontsize=density.chart_font_pt - 0.6,
            handletextpad=0.1,
            columnspacing=0.8,
            borderaxespad=0.2,
        )
        if any(r["simulated"] for r in shown):
            _watermark(ax)
        return _data_uri(fig)


def guardrail_chart(
    rows: list[dict], density: Density, size_in: tuple[float, float]
) -> str | None:
    """Risk reduction beside the over-refusal it costs, per entry, in one unit.

    Both bars are percentage points on one axis, so the trade is read at a
    glance; McNemar's p for the risk change sits at the end of its bar.
    Returns None when no entry ran both arms.
    """
    shown = [r for r in rows if r["guardrail_ab"]][: density.table_rows]
    if not shown:
        return None
    with _style(density) as fig_of:
        fig = fig_of(size_in)
        ax = fig.add_subplot()
        ends = [0.0]
        for y, row in enumerate(shown):
            ab = row["guardrail_ab"]
            ends.append(_bar(ax, y - 0.19, ab["risk_reduction"], ab["ci"], _GOOD))
            ends.append(
                _bar(
                    ax,
                    y + 0.19,
                    ab["over_refusal_cost"],
                    ab["over_refusal_cost_ci"],
                    _COST,
                )
            )
            if ab["mcnemar_p"] is not None and ab["risk_reduction"] is not None:
                hi = ab["ci"][1] if ab["ci"] else ab["risk_reduction"]
                ax.annotate(
                    _p_text(ab["mcnemar_p"]),
                    (100 * max(hi, 0.0), y - 0.19),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=density.chart_font_pt - 0.9,
                    color=_MUTED,
                )
        ax.set_yticks(range(len(shown)), labels=[_label(r, density) for r in shown])
        # At least four slots, so one entry does not become one fat bar.
        ax.set_ylim(max(len(shown), 4) - 0.5, -0.5)
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, 0.0), max(ends) * 1.32 + 0.5)
        ax.axvline(0, color=_MUTED, lw=0.6)
        ax.grid(axis="x", color=_GRID, lw=0.5)
        ax.set_xlabel("percentage points (bars: CI; p: McNemar, risk change)")
        handles = [
            Line2D(
                [],
                [],
                ls="",
                marker="s",
                ms=5,
                color=_GOOD,
                label="risk cut (axis mean)",
            ),
            Line2D(
                [], [], ls="", marker="s", ms=5, color=_COST, label="over-refusal cost"
            ),
        ]
        ax.legend(
            handles=handles,
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0),
            ncol=2,
            fontsize=density.chart_font_pt - 0.6,
            handletextpad=0.1,
            columnspacing=1.0,
            borderaxespad=0.2,
        )
        if any(r["simulated"] for r in shown):
            _watermark(ax)
        return _data_uri(fig)


def cost_latency_chart(
    rows: list[dict], density: Density, size_in: tuple[float, float]
) -> str | None:
    """Scatter of cost against latency p50; colour is the index, size the risk.

    One point per entry and arm (circle: guardrail off, square: on). The best
    `density.scatter_labels` entries carry their rank from the table.

    Known limitation: rank labels are placed at fixed offsets that alternate
    by rank, not by a collision search, so two entries with near-equal cost
    and latency can print overlapping labels. A label-repulsion pass (or
    listing clustered ranks in one label) would fix it.
    """
    points = []
    for row in rows:
        for arm, values in row["arms"].items():
            if values["latency_p50_ms"] is None or values["cost_usd_value"] is None:
                continue
            points.append((row, arm, values))
    if not points:
        return None
    with _style(density) as fig_of:
        fig = fig_of(size_in)
        ax = fig.add_subplot()
        indices = [v["index"] for _, _, v in points if v["index"] is not None]
        vmin = min(indices, default=0.0) - 2
        vmax = max(indices, default=100.0) + 2
        cmap = matplotlib.colormaps["RdYlGn"]
        mappable = None
        for marker, arm in (("o", "off"), ("s", "on")):
            chosen = [p for p in points if p[1] == arm]
            if not chosen:
                continue
            mappable = ax.scatter(
                [v["latency_p50_ms"] for _, _, v in chosen],
                [v["cost_usd_value"] for _, _, v in chosen],
                c=[_or(v["index"], vmin) for _, _, v in chosen],
                s=[14 + 260 * _or(v["mean_risk"], 0.0) for _, _, v in chosen],
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                marker=marker,
                edgecolors=_INK,
                linewidths=0.4,
                alpha=0.9,
                zorder=3,
            )

        labelled = {r["rank"] for r in rows[: density.scatter_labels]}
        for row, arm, values in points:
            if row["rank"] in labelled and arm == row["best_arm"]:
                # Alternate sides so neighbouring labels rarely collide.
                offset = _LABEL_OFFSETS[(row["rank"] - 1) % len(_LABEL_OFFSETS)]
                ax.annotate(
                    f"#{row['rank']}" + ("*" if row["simulated"] else ""),
                    (values["latency_p50_ms"], values["cost_usd_value"]),
                    xytext=offset,
                    textcoords="offset points",
                    ha="left" if offset[0] > 0 else "right",
                    fontsize=density.chart_font_pt - 0.5,
                    color=_INK,
                    fontweight="bold",
                    zorder=5,
                )
        _maybe_log(ax, "x", [v["latency_p50_ms"] for _, _, v in points])
        _maybe_log(ax, "y", [v["cost_usd_value"] for _, _, v in points])
        ax.margins(0.12)
        ax.set_xlabel("latency p50, ms")
        ax.set_ylabel("run cost, USD")
        ax.grid(color=_GRID, lw=0.5)
        if mappable is not None:
            bar = fig.colorbar(mappable, ax=ax, pad=0.02, fraction=0.06, aspect=18)
            bar.set_label("index", fontsize=density.chart_font_pt - 0.5)
            bar.ax.tick_params(labelsize=density.chart_font_pt - 0.8, length=2)
            bar.outline.set_linewidth(0.4)
        arms_drawn = {arm for _, arm, _ in points}
        handles = [
            Line2D([], [], ls="", marker=marker, ms=4, mfc="white", mec=_INK, label=arm)
            for marker, arm in (("o", "off"), ("s", "on"))
            if arm in arms_drawn
        ]
        handles.append(Line2D([], [], ls="", label="size = mean risk"))
        if any(r["simulated"] for r, _, _ in points):
            handles.append(Line2D([], [], ls="", label="* SIMULATED"))
        ax.legend(
            handles=handles,
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0),
            ncol=len(handles),
            fontsize=density.chart_font_pt - 0.6,
            handletextpad=0.1,
            columnspacing=0.8,
            borderaxespad=0.2,
        )
        if any(r["simulated"] for r, _, _ in points):
            _watermark(ax)
        return _data_uri(fig)


@contextmanager
def _style(density: Density) -> Iterator:
    rc = {
        "font.family": "DejaVu Sans",
        "font.size": density.chart_font_pt,
        "axes.labelsize": density.chart_font_pt,
        "xtick.labelsize": density.chart_font_pt - 0.4,
        "ytick.labelsize": density.chart_font_pt - 0.4,
        "axes.edgecolor": "#9aa3b2",
        "axes.linewidth": 0.6,
        "axes.labelcolor": _INK,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "text.color": _INK,
        "xtick.color": _MUTED,
        "ytick.color": _INK,
        "xtick.major.size": 2.0,
        "ytick.major.size": 0.0,
        "xtick.major.width": 0.5,
        "legend.frameon": False,
        "svg.fonttype": "none",
        "svg.hashsalt": "koverage-underwriter-report",
        "text.parse_math": False,
    }
    with _RC_LOCK, matplotlib.rc_context(rc):
        figures = []

        def fig_of(size_in: tuple[float, float]) -> Figure:
            fig = Figure(figsize=size_in, layout="constrained")
            FigureCanvasAgg(fig)
            fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.04)
            figures.append(fig)
            return fig

        try:
            yield fig_of
        finally:
            for fig in figures:
                fig.clear()


def _data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None}, transparent=True)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return "data:image/svg+xml;base64," + encoded


def _label(row: dict, density: Density) -> str:
    tag = _SIM_TAG if row["simulated"] else ""
    room = max(8, density.max_label_chars - len(tag))
    return shorten_middle(row["short_label"], room) + tag


def _axis_label(axis: str, soft: bool) -> str:
    name = axis.replace("_", " ")
    return f"{name}\n(soft)" if soft else name


def _err(ci: list[float] | None, value: float, scale: float = 1.0) -> list[list[float]]:
    # Error bars are distances from the point; a CI that excludes the point
    # (possible with corrected estimates) is clipped rather than drawn inverted.
    if ci is None:
        return [[0.0], [0.0]]
    return [[max(0.0, (value - ci[0]) * scale)], [max(0.0, (ci[1] - value) * scale)]]


def _bar(
    ax, y: float, value: float | None, ci: list[float] | None, color: str
) -> float:
    """Draw one thin bar (in pp) with its CI; return its right end in pp."""
    if value is None:
        return 0.0
    ax.barh(y, 100 * value, height=0.34, color=color, alpha=0.88, zorder=2)
    if ci is None:
        return 100 * value
    ax.errorbar(
        100 * value,
        y,
        xerr=_err(ci, value, scale=100),
        fmt="none",
        ecolor=_INK,
        elinewidth=0.8,
        capsize=1.6,
        capthick=0.6,
        zorder=3,
    )
    return 100 * max(value, ci[1])


def _p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _tier_text(row: dict) -> str:
    parts = []
    for arm in ("off", "on"):
        values = row["arms"].get(arm)
        if values:
            parts.append(
                _tier_abbrev(values["tier"]) + ("?" if values["tier_uncertain"] else "")
            )
    return "\u2192".join(parts)


def _tier_abbrev(tier: str) -> str:
    # "Preferred" -> "Pref.": the column beside the chart has room for ~12 chars.
    return tier if len(tier) <= 5 else tier[:4] + "."


def _tier_uncertain(row: dict) -> bool:
    return any(a["tier_uncertain"] for a in row["arms"].values())


def _watermark(ax) -> None:
    ax.text(
        0.5,
        0.5,
        "SIMULATED",
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=20,
        color="#b91c1c",
        alpha=0.09,
        rotation=18,
        fontweight="bold",
        zorder=0,
    )


def _maybe_log(ax, which: str, values: list[float]) -> None:
    positive = [v for v in values if v > 0]
    if len(positive) == len(values) and positive and max(positive) / min(positive) > 30:
        (ax.set_xscale if which == "x" else ax.set_yscale)("log")


def _or(value, default):
    return default if value is None else value
