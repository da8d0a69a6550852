"""The Underwriter's one-page PDF report, its HTML source and its JSON twin."""

from services.underwriter.report._errors import ReportLayoutError, ScorecardError
from services.underwriter.report._render import (
    render_report,
    render_report_html,
    render_report_json,
)
from services.underwriter.report._view import SIMULATED_MARK, build_view

__all__ = [
    "SIMULATED_MARK",
    "ReportLayoutError",
    "ScorecardError",
    "build_view",
    "render_report",
    "render_report_html",
    "render_report_json",
]
