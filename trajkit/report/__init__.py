"""``trajkit report``: one static page per ensemble — runs, loss curves, every analysis that applies.

>>> summary = trajkit.report.build_report(["sweep/"], "sweep-report")          # doctest: +SKIP
>>> summary.computed, summary.reused, summary.index                            # doctest: +SKIP
>>> for s in trajkit.report.watch_report(["sweep/"], "sweep-report", 30): ...  # doctest: +SKIP

Modules: :mod:`~trajkit.report.inputs` (what is read), :mod:`~trajkit.report.plan` (which analyses, with
which parameters, and their cache keys), :mod:`~trajkit.report.cache` (the report directory and its
manifest), :mod:`~trajkit.report.curves` (the loss curves figure), :mod:`~trajkit.report.page` (the HTML),
:mod:`~trajkit.report.build` (the order of work) and :mod:`~trajkit.report.browser` (opening a report in
headless Chromium, for tests and screenshots).
"""

from trajkit.report.build import ReportSummary, build_report, watch_report
from trajkit.report.cache import ReportError

__all__ = ["ReportError", "ReportSummary", "build_report", "watch_report"]
