"""The critical width of a (depth, width) sweep: loss tails, learning times and ``w_c(ℓ)`` per depth.

For each network depth ``d`` and width ``w`` the curve is the replica mean ``L(t)`` of ``metric``
(default ``train_loss``, e.g. the NLL per time step of ``bach_chorales``). With the pure
functions of :mod:`trajkit_dynamics.loss`:

- tail: ``L(t) ≈ L∞ + A t^−β`` (:func:`~trajkit_dynamics.loss.fit_power_law`; ``L∞ > 0`` when the net is
  too small to fit the data);
- learning times ``t_learn(ℓ) = min{t : L(t) ≤ ℓ}`` for each threshold ℓ
  (:func:`~trajkit_dynamics.loss.learning_times`);
- per depth and threshold, ``t_learn = A/(w − w_c)``: ``1/t_learn`` linear in ``w`` over the widths that
  reach ℓ, root ``w_c(ℓ)`` with a Student-t / delta-method interval
  (:func:`~trajkit_dynamics.loss.fit_critical_width`; an interval needs 3 widths);
- per depth, ``w_c(ℓ)`` linear in ℓ extrapolated to ``w_c(0)``
  (:func:`~trajkit_dynamics.loss.extrapolate_to_zero`).

Bad input: a depth with a single width cannot give ``w_c`` — an error that says so; thresholds that no
run reaches are listed in ``unreached_thresholds`` and never fitted (an error when none is reached).

Plugin ``critical_width`` (:class:`CriticalWidth`, needs groups): ``group_by`` (default ``config.model``,
the whole ``[model]`` section of the resolved config that ``trajkit record`` stores) splits the runs into
configurations whose runs are replicas; ``depth_key`` (default ``config.model.depth``) and ``width_key``
(default ``config.model.width``) place each configuration in the grid. Parameters ``metric``,
``thresholds``, ``window``, ``level``.

Result keys, over ``(depth, width, threshold)`` (widths are the union over depths; NaN where a depth
lacks a width): ``loss_inf``, ``beta``, ``amplitude``, ``final_loss`` ``[D, W]``, ``loss_inf_ci``,
``beta_ci`` ``[D, W, 2]``, ``t_learn``, ``reached`` ``[D, W, C]``, ``w_c``, ``w_c_points`` ``[D, C]``,
``w_c_ci`` ``[D, C, 2]``, ``w_c0`` ``[D]``, ``w_c0_ci`` ``[D, 2]``, ``loss [D, W, T]`` (when all curves
share their steps); scalars ``metric``, ``unreached_thresholds`` (list), ``replicas`` (per group, min),
``fit_window`` (first and last step the power-law fits used).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from trajkit.analysis import Analysis, Param, Result, plotting
from trajkit.archive.metadata import get_path
from trajkit.errors import AnalysisError
from trajkit_dynamics.curves import draw_inverse_learning_time, metric_curve, width_value
from trajkit_dynamics.loss import (
    extrapolate_to_zero,
    fit_critical_width,
    fit_power_law,
    fit_span,
    learning_times,
)
from trajkit_dynamics.measure import METRIC, RANGE_VALID, is_range


def single_width_message(depth: Any, width: Any, group_by: str, width_key: str) -> str:
    """The one-line refusal for a depth swept over a single width."""
    return (f"{group_by} = {depth} has a single width ({width_key} = {width}): no w_c fit is possible, "
            f"t_learn ∝ 1/(w − w_c) needs several widths (3 for an interval); sweep {width_key} over more values")


class CriticalWidth(Analysis):
    """Loss tails, learning times and the critical width w_c(ℓ) per depth (see the module docstring)."""

    name = "critical_width"
    version = "1.0.0"
    description = "Per depth: power-law loss tails, t_learn(l) over widths, w_c(l) from t_learn = A/(w - w_c), w_c(0)."
    needs = "groups"
    params = (Param("group_by", "str", default="config.model",
                    help="metadata key splitting the runs into configurations (replicas share it)"),
              Param("depth_key", "str", default="config.model.depth", help="metadata key of the depth"),
              Param("width_key", "str", default="config.model.width", help="metadata key of the width (x axis)"),
              METRIC,
              Param("thresholds", "floats", default=[1.0, 0.5, 0.2], help="loss thresholds ℓ of t_learn",
                    check=lambda v: all(x > 0 for x in (v if isinstance(v, list) else [v])), valid="each > 0"),
              Param("window", "floats", default=None, help="[lo, hi] steps of the power-law fit",
                    check=is_range, valid=RANGE_VALID),
              Param("level", "float", default=0.95, help="confidence level", check=lambda v: 0 < v < 1,
                    valid="in (0, 1)"))

    def compute(self, data: Any, params: dict[str, Any], ctx: Any) -> Result:
        thresholds = np.atleast_1d(np.asarray(params["thresholds"], dtype=float))
        level, metric, wkey = params["level"], params["metric"], params["width_key"]
        window = tuple(params["window"]) if params["window"] else None
        per_depth: dict[Any, dict[float, tuple[np.ndarray, np.ndarray]]] = {}
        run_minimum = np.inf
        replicas = []
        dkey = params["depth_key"]
        for ens in data.values():
            first = ens.archives[0]
            where = str(first.path)
            depth, width = get_path(first.metadata, dkey, None), get_path(first.metadata, wkey, None)
            if depth is None or width is None:
                raise AnalysisError(f"{where}: no metadata key {dkey if depth is None else wkey!r}; pass depth_key "
                                    "and width_key naming the depth and width")
            width = width_value(width, where)
            if width in per_depth.setdefault(depth, {}):
                raise AnalysisError(f"{where}: two configurations share {dkey} = {depth}, {wkey} = {width:g} "
                                    f"(group_by = {params['group_by']!r}); analyse them separately")
            runs = [metric_curve(a, metric) for a in ens.archives]
            t = runs[0][0]
            if any(not np.array_equal(r[0], t) for r in runs):
                raise AnalysisError(f"{dkey} = {depth}, {wkey} = {width:g}: runs differ in the steps of {metric!r}")
            curves = np.stack([r[1] for r in runs])
            run_minimum = min(run_minimum, float(np.nanmin(curves)))
            replicas.append(len(runs))
            per_depth[depth][width] = (t, np.nanmean(curves, axis=0))
        per_depth = dict(sorted(per_depth.items()))
        for depth, by_width in per_depth.items():
            if len(by_width) < 2:
                raise AnalysisError(single_width_message(depth, f"{next(iter(by_width)):g}", dkey, wkey))
        unreached = [float(x) for x in thresholds if not run_minimum <= x]
        if len(unreached) == thresholds.size:
            raise AnalysisError(f"no run reaches any threshold {', '.join(f'{x:g}' for x in unreached)} of {metric} "
                                f"(lowest value {run_minimum:.4g}); pass thresholds above it")
        if unreached:
            warnings.warn(f"critical_width: thresholds {unreached} are reached by no run; they are not fitted",
                          stacklevel=2)
        depths = list(per_depth)
        widths = np.array(sorted({w for d in depths for w in per_depth[d]}))
        D, W, C = len(depths), widths.size, thresholds.size
        grid = {k: np.full((D, W), np.nan) for k in ("loss_inf", "beta", "amplitude", "final_loss")}
        cis = {k: np.full((D, W, 2), np.nan) for k in ("loss_inf_ci", "beta_ci")}
        t_learn, reached = np.full((D, W, C), np.nan), np.zeros((D, W, C), dtype=bool)
        w_c, w_c_ci, w_c_pts = np.full((D, C), np.nan), np.full((D, C, 2), np.nan), np.zeros((D, C), dtype=int)
        w_c0, w_c0_ci = np.full(D, np.nan), np.full((D, 2), np.nan)
        steps0 = next(iter(per_depth[depths[0]].values()))[0]
        shared = all(np.array_equal(t, steps0) for d in depths for t, _ in per_depth[d].values())
        loss = np.full((D, W, steps0.size), np.nan) if shared else None
        spans = []
        for i, d in enumerate(depths):
            for w, (t, mean) in per_depth[d].items():
                j = int(np.searchsorted(widths, w))
                fit = fit_power_law(t, mean, window, level)
                spans.append(fit_span(t, mean, window))
                for k in grid:
                    grid[k][i, j] = fit[k] if k != "final_loss" else mean[np.isfinite(mean)][-1]
                for k in cis:
                    cis[k][i, j] = fit[k]
                t_learn[i, j], reached[i, j] = learning_times(t, mean, thresholds)
                if loss is not None:
                    loss[i, j] = mean
            for c, ell in enumerate(thresholds):
                if ell in unreached:
                    continue
                f = fit_critical_width(widths, t_learn[i, :, c], level)
                w_c[i, c], w_c_ci[i, c], w_c_pts[i, c] = f["w_c"], f["w_c_ci"], f["n_points"]
            w_c0[i], w_c0_ci[i] = extrapolate_to_zero(thresholds, w_c[i], level)
        arrays: dict[str, Any] = {k: (v, ("depth", "width")) for k, v in grid.items()}
        arrays.update({k: (v, ("depth", "width", "bound")) for k, v in cis.items()})
        arrays.update(t_learn=(t_learn, ("depth", "width", "threshold")),
                      reached=(reached, ("depth", "width", "threshold")),
                      w_c=(w_c, ("depth", "threshold")), w_c_ci=(w_c_ci, ("depth", "threshold", "bound")),
                      w_c_points=(w_c_pts, ("depth", "threshold")), w_c0=(w_c0, ("depth",)),
                      w_c0_ci=(w_c0_ci, ("depth", "bound")))
        coords: dict[str, Any] = {"depth": np.asarray([str(d) for d in depths]), "width": widths,
                                  "threshold": thresholds, "bound": np.array(["lo", "hi"])}
        if loss is not None:
            arrays["loss"] = (loss, ("depth", "width", "step"))
            coords["step"] = steps0
        span = np.array([x for x in spans if np.all(np.isfinite(x))]).reshape(-1, 2)
        scalars = {"metric": metric, "unreached_thresholds": unreached, "replicas": int(min(replicas)),
                   "depth_key": dkey, "width_key": wkey,
                   "fit_window": [float(span[:, 0].min()), float(span[:, 1].max())] if span.size else [None, None]}
        return Result(arrays=arrays, coords=coords, scalars=scalars)

    def plot(self, result: Result, fig: Any) -> Any:
        ax1, ax2 = fig.subplots(1, 2)
        plot_loss_tails(result, ax1)
        plot_inverse_learning_time(result, ax2)
        sc = result.scalars
        unreached = ", ".join(f"{x:g}" for x in sc.get("unreached_thresholds") or [])
        plotting.caption(fig, plotting.describe(result, [
            f"{result.coords['depth'].size} depths × {result.coords['width'].size} widths, "
            f"≥ {sc.get('replicas')} replicas per configuration",
            f"intervals: Student t / delta method at level {plotting.fmt(result.params.get('level'))}",
            *([f"thresholds never reached (not fitted): {unreached}"] if unreached else [])]))
        return fig


def plot_loss_tails(result: Result, ax: Any) -> Any:
    """``L(t)`` of every (depth, width) on log-log axes, with the fitted ``L∞ + A t^−β`` dashed."""
    from matplotlib import colormaps

    if "loss" not in result.arrays:
        ax.text(0.5, 0.5, "curves do not share their steps", ha="center", transform=ax.transAxes)
        ax.set_xlabel("step $t$")
        ax.set_ylabel(f"$L(t)$ = {result.scalars.get('metric', 'loss')}")
        return ax
    step, loss = result.coords["step"].astype(float), result.arrays["loss"]
    widths = result.coords["width"]
    cmap = colormaps["viridis"]
    styles = ["-", "--", ":", "-."]
    ok = step > 0
    lo, hi = result.scalars.get("fit_window") or [None, None]
    x = np.geomspace(float(lo), float(hi), 60) if plotting.finite(lo) and plotting.finite(hi) else None
    for i, d in enumerate(result.coords["depth"]):
        for j, w in enumerate(widths):
            if np.isfinite(loss[i, j]).any():
                colour = cmap(j / max(len(widths) - 1, 1))
                ax.loglog(step[ok], loss[i, j][ok], styles[i % 4], color=colour, lw=1.2, label=f"d={d}, w={w:g}")
                pars = [result.arrays[k][i, j] for k in ("loss_inf", "amplitude", "beta")]
                if x is not None and all(plotting.finite(v) for v in pars):
                    ax.loglog(x, pars[0] + pars[1] * x ** -pars[2], color="k", lw=0.5, ls=(0, (2, 2)))
    ax.set_xlabel("step $t$")
    ax.set_ylabel(f"$L(t)$ = {result.scalars.get('metric', 'loss')} (replica mean)")
    ax.set_title(f"line styles: depth; colour: width; thin black: $L_\\infty + A\\,t^{{-\\beta}}$ fitted on "
                 f"{plotting.fmt(lo)} ≤ t ≤ {plotting.fmt(hi)}", fontsize=7)
    ax.legend(fontsize=5, ncol=2)
    return ax


def plot_inverse_learning_time(result: Result, ax: Any) -> Any:
    """``1/t_learn`` against width per depth and threshold, the fitted lines and their roots ``w_c``."""
    widths, tl = result.coords["width"], result.arrays["t_learn"]
    markers = "osd^v<>"
    xs = np.linspace(0, widths.max() * 1.05, 50)
    for i, d in enumerate(result.coords["depth"]):
        for c, ell in enumerate(result.coords["threshold"]):
            draw_inverse_learning_time(ax, widths, tl[i, :, c], result.arrays["w_c"][i, c], xs, markers[c % 7],
                                       ms=4, label=f"d={d}, ℓ={ell:g}")
    ax.set_xlabel(f"width $w$ ({result.scalars.get('width_key', 'width')})")
    ax.set_ylabel(r"$1/t_{\rm learn}(\ell)$ [1/steps], $t_{\rm learn} = \min\{t: L(t) \leq \ell\}$")
    ax.set_ylim(bottom=0)
    notes = [f"d={d}: $w_c(0)$ = {plotting.fmt_ci(result.arrays['w_c0'][i], result.arrays['w_c0_ci'][i])}"
             for i, d in enumerate(result.coords["depth"])]
    ax.set_title(plotting.join_lines(["lines: $t_{\\rm learn} = A/(w - w_c)$, dotted: $w_c(\\ell)$", *notes], 60),
                 fontsize=7)
    ax.legend(fontsize=5, ncol=2)
    return ax
