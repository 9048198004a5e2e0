"""Regenerate docs/figures/report_demo.png: the `trajkit report` of the README demo's ensemble, as
headless Chromium shows it (the top of the page: header, run table, loss curves, first analysis).

    python docs/figures/make_report_screenshot.py [--work DIR]

Records the demo ensemble (trajkit.demo.DEMO_CONFIG: 3 temperatures × 4 replicas, 1,000 steps), builds
its report with the default choice of analyses, opens it from file:// in Chromium (apt packages chromium
and chromium-driver, selenium) and writes the screenshot as a 256-colour PNG (< 300 KB). ``--work`` keeps
the ensemble and the report there (default: a temporary directory, removed afterwards).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from trajkit.demo import DEMO_CONFIG
from trajkit.experiments import run_experiment
from trajkit.report import build_report
from trajkit.report.browser import missing, open_in_chromium

OUT = Path(__file__).resolve().parent / "report_demo.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=None, help="keep the ensemble and the report here")
    args = ap.parse_args()
    if missing():
        raise SystemExit(missing())
    work = Path(args.work or tempfile.mkdtemp(prefix="trajkit-report-shot-"))
    try:
        ensemble, report = work / "ensemble", work / "report"
        if not (ensemble / "ensemble.json").is_file():
            run_experiment(DEMO_CONFIG, ensemble, quiet=True, threads=1)
        summary = build_report([ensemble], report)
        print(summary.line())
        raw = work / "screenshot.png"
        check = open_in_chromium(report / "index.html", screenshot=raw, width=1280, height=1500)
        if check.console_errors or check.broken_images:
            raise SystemExit(f"the page did not render cleanly: {check.console_errors or check.broken_images}")
        from PIL import Image

        Image.open(raw).convert("RGB").quantize(colors=256).save(OUT, optimize=True)
        print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
