"""Times the Underwriter report render (PDF, HTML, JSON twin): median of 5.

Run: .venv/bin/python benchmarks/bench_report.py
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "underwriter"))

from scorecard_fixtures import SIX_MODELS, build_scorecard

from services.underwriter.report import (
    render_report,
    render_report_html,
    render_report_json,
)

_RUNS = 5


def main() -> None:
    cases = {
        "1 model x 1 temperature": build_scorecard(
            models=["sim/careful"], temperatures=[0.0]
        ),
        "6 models x 3 temperatures": build_scorecard(
            models=SIX_MODELS, temperatures=[0.0, 0.7, 1.0]
        ),
    }
    render_report(cases["1 model x 1 temperature"])  # warm imports and fonts
    print(f"{'scorecard':28} {'render':18} {'median_s':>9} {'min_s':>7} {'size':>9}")
    for name, scorecard in cases.items():
        for label, render in (
            ("render_report", render_report),
            ("render_report_html", render_report_html),
            ("render_report_json", render_report_json),
        ):
            times, out = [], b""
            for _ in range(_RUNS):
                start = time.perf_counter()
                out = render(scorecard)
                times.append(time.perf_counter() - start)
            print(
                f"{name:28} {label:18} {statistics.median(times):9.3f} "
                f"{min(times):7.3f} {len(out):9,}"
            )


if __name__ == "__main__":
    main()
