"""What the loss analyses (``loss``, ``critical_width``) read from an archive: a metric's curve over steps
and a run's width."""

from __future__ import annotations

from typing import Any

import numpy as np

from trajkit.errors import AnalysisError


def metric_curve(arch: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps float64 [T], values float64 [T])`` of ``metric``: a snapshot metric ``NAME`` or a per-step
    trace ``trace:NAME`` of one archive; a missing name is an error listing the ones there are."""
    if metric.startswith("trace:"):
        name = metric[len("trace:"):]
        trace = arch.trace
        if name not in trace:
            names = ", ".join(k for k in trace if k != "step") or "none"
            raise AnalysisError(f"{arch.path}: no trace {name!r} (traces: {names}); pass metric=NAME or "
                                "metric=trace:NAME")
        return np.asarray(trace["step"], float), np.asarray(trace[name], float)
    metrics = arch.metrics
    if metric not in metrics:
        raise AnalysisError(f"{arch.path}: no snapshot metric {metric!r} (metrics: {', '.join(metrics) or 'none'}); "
                            "pass metric=NAME or metric=trace:NAME")
    return arch.steps.astype(float), np.asarray(metrics[metric], float)


def width_value(value: Any, where: str) -> float:
    """A run's width as a float: ``value`` is a number or a list of equal numbers (per-layer widths)."""
    if isinstance(value, list | tuple):
        if not value or len(set(value)) != 1:
            raise AnalysisError(f"{where}: width {value!r} is not a single number; pass width_key naming one")
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AnalysisError(f"{where}: width {value!r} is not a number; pass width_key naming a numeric key") from None


def draw_inverse_learning_time(ax: Any, widths: np.ndarray, t_learn: np.ndarray, w_c: float, xs: np.ndarray,
                               fmt: str, **kw: Any) -> Any:
    """Plot ``1/t_learn`` against ``widths`` with marker ``fmt`` and, when ``w_c`` is finite and two points
    are, the line ``slope·(w − w_c)`` from the least-squares slope and a dotted ``w = w_c``; returns the line."""
    with np.errstate(divide="ignore", invalid="ignore"):
        y = 1.0 / t_learn
    line = ax.plot(widths, y, fmt, **kw)[0]
    ok = np.isfinite(y)
    if np.isfinite(w_c) and ok.sum() >= 2:
        slope = np.polyfit(widths[ok], y[ok], 1)[0]
        ax.plot(xs[xs >= w_c], slope * (xs[xs >= w_c] - w_c), "-", color=line.get_color(), lw=0.8)
        ax.axvline(w_c, color=line.get_color(), lw=0.5, ls=":")
    return line
