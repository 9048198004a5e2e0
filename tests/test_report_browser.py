"""The report of the (scaled-down) demo ensemble in a real headless Chromium, loaded from ``file://``.

Chromium and chromium-driver are the distribution's packages (``.ci/run`` installs them); selenium gets
their paths, so nothing is downloaded. The page must load with no console error, every image must load
(``naturalWidth > 0``), every analysis asked for must have its section (a failing one as its failure box)
and a screenshot is written.
"""

from __future__ import annotations

import pytest

from trajkit.report import build_report
from trajkit.report.browser import missing, open_in_chromium

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")

ANALYSES = ["relaxation", "chi4", "loss", "minima"]      # minima needs 3+ runs per sweep point: a failure box


@pytest.mark.slow
def test_report_renders_in_headless_chromium_from_file_url(small_demo_ensemble, tmp_path):
    out = tmp_path / "report"
    summary = build_report([small_demo_ensemble], out, analyses=",".join(ANALYSES))
    assert summary.failed == ["minima"]
    shot = tmp_path / "report.png"
    check = open_in_chromium(out / "index.html", screenshot=shot)
    assert check.url.startswith("file://") and check.title == "trajkit report"
    assert check.console_errors == []
    srcs = [src for src, _ in check.images]
    assert srcs == ["figures/loss_curves.png", *(f"analyses/{n}/{n}.png" for n in ANALYSES if n != "minima")]
    assert check.broken_images == [] and all(width > 0 for _, width in check.images)
    assert check.sections == [f"analysis-{n}" for n in ANALYSES]
    assert len(check.failures) == 1 and check.failures[0].startswith("minima failed: ")
    assert "clustering needs at least 3 runs" in check.failures[0]
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_a_missing_figure_is_a_broken_image_the_check_sees(small_demo_ensemble, tmp_path):
    """The check can fail: a report whose figure file is deleted shows one broken image."""
    out = tmp_path / "report"
    build_report([small_demo_ensemble], out, analyses="relaxation")
    (out / "analyses" / "relaxation" / "relaxation.png").unlink()
    check = open_in_chromium(out / "index.html")
    assert check.broken_images == ["analyses/relaxation/relaxation.png"]
