"""The loss curves of every run of a report: the training loss of each step (``trace/loss``) and the test
loss at each committed snapshot (``metrics/test_loss``), one colour per sweep point, replicas alike.

>>> fig = loss_curves(inputs.rows, inputs.opened); fig.savefig("loss_curves.png")     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trajkit.analysis.plotting import KEY_SYMBOLS, fmt, legend
from trajkit.archive import Archive
from trajkit.cachedir import use_matplotlib_cache


def point_label(coords: dict[str, Any]) -> str:
    """``"T = 0.001"`` of a run's ensemble coordinates (``"runs"`` without any)."""
    return ", ".join(f"{KEY_SYMBOLS.get(k, k)} = {fmt(v, 4)}" for k, v in coords.items()) or "runs"


def curves_fingerprint(opened: Sequence[Archive | None]) -> list[list[Any]]:
    """``[[run_id, trace steps, committed snapshots], ...]``: what the loss curves depend on."""
    return [[a.run_id, a.trace_length, a.n_snapshots] for a in opened if a is not None]


def _draw(ax: Any, x: np.ndarray, y: np.ndarray, **kw: Any) -> bool:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    if not ok.any():
        return False
    ax.plot(x[ok], y[ok], **kw)
    return True


def loss_curves(rows: Sequence[dict[str, Any]], opened: Sequence[Archive | None]) -> Any:
    """A matplotlib Figure: training loss per step and test loss per snapshot of each opened run (log axes)."""
    use_matplotlib_cache()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    train, test = fig.subplots(1, 2)
    labels = list(dict.fromkeys(point_label(r["coords"]) for r, a in zip(rows, opened, strict=True) if a is not None))
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    shown: set[tuple[str, int]] = set()
    for row, arch in zip(rows, opened, strict=True):
        if arch is None:
            continue
        lab = point_label(row["coords"])
        for panel, (ax, x, y) in enumerate(((train, arch.trace.get("step"), arch.trace.get("loss")),
                                            (test, arch.steps, arch.metrics.get("test_loss")))):
            if x is None or y is None:
                continue
            first = (lab, panel) not in shown
            if _draw(ax, x, y, color=colours[lab], lw=0.8, alpha=0.8, label=lab if first else None):
                shown.add((lab, panel))
    for ax, title in ((train, "training loss (every step)"), (test, "test loss (snapshots)")):
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize="medium")
        if ax.lines and all(np.nanmin(line.get_ydata()) > 0 for line in ax.lines):
            ax.set_yscale("log")
        if not ax.lines:
            ax.text(0.5, 0.5, "nothing recorded yet", ha="center", va="center", transform=ax.transAxes)
        legend(ax)
    return fig
