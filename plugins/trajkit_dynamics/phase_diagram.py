"""Phase diagrams of a sweep in two config keys: the final training loss per cell, its 1-D cuts and their
transition points (the jamming-like transition in N/P and the topology trivialisation in λ of 2405.13098).

For keys ``x`` and ``y`` (e.g. ``model.width`` or ``dataset.n_train``, and ``dynamics.weight_decay``) and the
``R_ij`` replicas of cell ``(x_i, y_j)``, with ``L_r`` the value of ``metric`` at replica r's last snapshot
(default ``train_loss``; analyse the polish stage's archives for the polished loss):

- ``loss_geomean [n_x, n_y]`` = ``exp(mean_r ln max(L_r, floor))``: the **geometric** mean over replicas
  (the losses of such a sweep span decades, and a replica at exactly zero loss would make the geometric
  mean zero, so each loss is clipped at ``floor``, default 1e-10; ``n_clipped`` counts the clipped ones);
- ``loss_mean`` = ``mean_r L_r`` and ``loss_std`` = ``std_r L_r`` (ddof 1, NaN with one replica): the
  arithmetic mean and spread; ``loss_log10_std`` = ``std_r log10 max(L_r, floor)``: the spread on the scale
  of the geometric mean; ``replicas`` (0 where the sweep has no such cell: its values are NaN).

**Transition point of a cut** (trajkit's own estimator, :func:`transition_point`): along a cut — loss vs
``x`` at fixed ``y`` (``x_transition [n_y]``) or loss vs ``y`` at fixed ``x`` (``y_transition [n_x]``) —
take ``ℓ_i = log10 loss_geomean`` at the cut's cells ``u_i`` (``ln u`` when every ``u > 0``, else ``u``).
The cut's contrast is ``max ℓ − min ℓ`` (decades); below ``min_contrast`` (default 1) the cut has no
transition (NaN). Otherwise, walking from the cell of ``max ℓ`` towards the cell of ``min ℓ``, the
transition is the first place where ``ℓ`` crosses the mid-level ``ℓ* = (max ℓ + min ℓ)/2``, linearly
interpolated in ``(u, ℓ)`` between the two cells around it (and mapped back from ``ln u``). A sharp step
between two cells is thus placed at their (geometric) middle when the plateaus are level; a smooth
sigmoid in ``ln u`` at its centre. Interval: percentile bootstrap over replicas, every cell resampled on
its own (``n_boot`` resamples, ``seed``, confidence ``level``); it needs two or more replicas per cell.

Plugin ``phase_diagram`` (:class:`PhaseDiagram`, needs groups). Parameters: ``group_by`` (how the core
splits the runs before the cells are formed; default ``run_id``: every run on its own, so runs of
different architectures — a width sweep — are never checked against each other), ``x_key``, ``y_key``
(default: the two keys the sweep varies, as the core labels sweep points — ``ensemble.coords`` of
``trajkit record``, else the varying ``dynamics`` / ``model`` / ``dataset`` ... metadata, e.g. set by
``trajkit import --set``; an ensemble swept in one key is refused), ``x_per_key`` (x divided by this key's
value per run, e.g. ``x_key = model.n_params`` with ``x_per_key = dataset.n_train`` for N/P; the scalar
``x_key`` then reads ``model.n_params/dataset.n_train``), ``metric``, ``floor``,
``min_contrast``, ``n_boot``, ``level``, ``seed``, ``stage`` (the runs of one stage of a ``[[stages]]``
protocol, e.g. ``stage = "polish_slow"`` for the polished loss of an SGD → GD → GD-at-η/10 protocol: the
protocol's output directory ``OUT`` stands for ``OUT/<stage>``, and runs of other stages among the inputs
— ``OUT/*`` — are left out; a stage that is not there is refused in one line naming the stages there;
without ``stage``, runs of several stages are refused rather than pooled). The cells are the distinct
``(x, y)`` values.

Result keys: the arrays above over ``(x, y)``; ``x_transition [n_y]``, ``x_contrast [n_y]`` over ``y`` and
``x_transition_ci [n_y, 2]`` over ``(y, bound)``; ``y_transition [n_x]``, ``y_contrast [n_x]`` over ``x``
and ``y_transition_ci [n_x, 2]``; coordinates ``x``, ``y`` (float64) and ``bound`` (lo, hi). Scalars
``x_key``, ``y_key``, ``metric``, ``floor``, ``min_contrast``, ``x_log``, ``y_log`` (cuts interpolated in
``ln u``), ``n_runs``, ``n_cells``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from trajkit.analysis import Analysis, Param, Result, plotting
from trajkit.analysis.grouping import format_value, sweep_keys, sweep_point
from trajkit.analysis.stats import percentile_interval, replica_bootstrap
from trajkit.archive.metadata import get_path
from trajkit.errors import AnalysisError
from trajkit_dynamics.curves import metric_curve
from trajkit_dynamics.measure import METRIC

_ABSENT = object()


def geometric_mean(losses: np.ndarray, floor: float) -> float:
    """``exp(mean ln max(L, floor))`` of ``losses [R]`` (each loss clipped at ``floor`` first)."""
    return float(np.exp(np.mean(np.log(np.maximum(np.asarray(losses, dtype=float), floor)))))


def transition_point(u: np.ndarray, loss: np.ndarray, min_contrast: float = 1.0,
                     log_axis: bool = True) -> tuple[float, float]:
    """``(transition, contrast)`` of one cut: cell values ``u [n]`` (increasing) and losses ``loss [n]`` (> 0).

    The estimator of the module docstring: the first crossing of the mid-level of ``log10 loss``, walking
    from its maximum to its minimum, linearly interpolated in ``(ln u, log10 loss)`` (``(u, ...)`` without
    ``log_axis``). NaN transition when fewer than two cells are finite or the contrast (decades) is below
    ``min_contrast``.
    """
    u = np.asarray(u, dtype=float)
    ell = np.log10(np.asarray(loss, dtype=float))
    ok = np.isfinite(ell) & np.isfinite(u)
    u, ell = u[ok], ell[ok]
    if u.size < 2:
        return float("nan"), float("nan")
    contrast = float(ell.max() - ell.min())
    if not contrast >= min_contrast or contrast == 0:
        return float("nan"), contrast
    v = np.log(u) if log_axis else u
    mid = 0.5 * (ell.max() + ell.min())
    hi, lo = int(np.argmax(ell)), int(np.argmin(ell))
    step = 1 if lo > hi else -1
    for i in range(hi, lo, step):
        a, b = ell[i], ell[i + step]
        if a >= mid > b:
            cross = v[i] + (mid - a) * (v[i + step] - v[i]) / (b - a)
            return float(np.exp(cross) if log_axis else cross), contrast
    return float("nan"), contrast        # unreachable: the walk goes from above the mid-level to below it


def _value(arch: Any, key: str) -> Any:
    """``key`` of a run: its sweep coordinate or flattened section key, else the dotted metadata path."""
    v = sweep_point(arch).get(key, _ABSENT)
    if v is _ABSENT:
        v = get_path(arch.metadata, key, _ABSENT)
    if v is _ABSENT:
        raise AnalysisError(f"{arch.path} has no metadata key or sweep coordinate {key!r}; pass x_key/y_key "
                            "naming a swept key (`trajkit info` lists a run's keys)")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise AnalysisError(f"{arch.path}: {key} = {format_value(v)} is not a number; a phase diagram needs "
                            "numeric axes (pass x_key/y_key naming numeric keys)")
    return float(v)


def _stage_name(arch: Any) -> str | None:
    stage = arch.metadata.get("stage")
    return stage.get("name") if isinstance(stage, dict) else None


def _of_stage(archives: list[Any], stage: str | None) -> list[Any]:
    """The runs of ``stage`` (all runs when None, which must then come from one stage at most)."""
    names = sorted({n for n in map(_stage_name, archives) if n is not None})
    if stage is None:
        if len(names) > 1:
            raise AnalysisError(f"the runs come from {len(names)} stages of a protocol ({', '.join(names)}); pass "
                                f"stage=NAME (e.g. stage={names[-1]!r}) rather than pooling them in one diagram")
        return archives
    kept = [a for a in archives if _stage_name(a) == stage]
    if not kept:
        there = f"the stages there are {', '.join(names)}" if names else "they are no stage of a [[stages]] protocol"
        raise AnalysisError(f"stage={stage!r}: none of the {len(archives)} runs given is of that stage; {there}")
    return kept


def _axes(archives: list[Any], x_key: str | None, y_key: str | None) -> tuple[str, str]:
    if x_key is not None and y_key is not None:
        if x_key == y_key:
            raise AnalysisError(f"x_key and y_key are both {x_key!r}; a phase diagram needs two different keys")
        return x_key, y_key
    keys = sweep_keys([sweep_point(a) for a in archives])
    given = [k for k in (x_key, y_key) if k is not None]
    free = [k for k in keys if k not in given]
    if len(given) + len(free) < 2:
        varied = ", ".join(keys) or "nothing"
        raise AnalysisError(f"phase_diagram needs an ensemble swept in two config keys; these {len(archives)} runs "
                            f"vary in {varied} only; sweep a second key (e.g. sweep.dynamics.weight_decay) or "
                            "use the loss analysis for a one-key sweep")
    if not given and len(free) > 2:
        raise AnalysisError(f"the runs vary in {len(free)} keys ({', '.join(free)}); pass x_key and y_key naming "
                            "the two axes of the phase diagram")
    return (x_key or free.pop(0), y_key or free.pop(0))


class PhaseDiagram(Analysis):
    """Final loss over a two-key sweep: geometric and arithmetic means per cell, cuts and transitions."""

    name = "phase_diagram"
    version = "1.0.0"
    description = "Final training loss over a sweep in two keys (geometric mean per cell), cuts and transitions."
    needs = "groups"
    params = (Param("group_by", "str", default="run_id",
                    help="metadata key the core splits the runs by before the cells are formed (default run_id: "
                         "each run alone, so architectures may differ)"),
              Param("x_key", "str", default=None, help="key of the x axis (default: the first swept key)"),
              Param("y_key", "str", default=None, help="key of the y axis (default: the second swept key)"),
              Param("x_per_key", "str", default=None,
                    help="divide each run's x value by this key's value, e.g. dataset.n_train for N/P"),
              METRIC,
              Param("floor", "float", default=1e-10, help="losses are clipped at this floor in the geometric mean",
                    check=lambda v: v > 0, valid="> 0"),
              Param("min_contrast", "float", default=1.0, min=0,
                    help="decades of loss a cut must span to have a transition point"),
              Param("n_boot", "int", default=200, min=0, help="bootstrap resamples of the transition intervals"),
              Param("level", "float", default=0.95, help="confidence level", check=lambda v: 0 < v < 1,
                    valid="in (0, 1)"),
              Param("seed", "int", default=0, help="seed of the bootstrap"),
              Param("stage", "str", default=None,
                    help="use the runs of this stage of a [[stages]] protocol (e.g. polish_slow); its output "
                         "directory may be given whole"))

    def compute(self, data: Any, params: dict[str, Any], ctx: Any) -> Result:
        archives = _of_stage([a for g in data.values() for a in g.archives], params["stage"])
        x_key, y_key = _axes(archives, params["x_key"], params["y_key"])
        floor = float(params["floor"])
        cells: dict[tuple[float, float], list[float]] = {}
        for a in archives:
            _, values = metric_curve(a, params["metric"])
            final = float(values[-1]) if values.size else float("nan")
            if not np.isfinite(final) or final < 0:
                raise AnalysisError(f"{a.path}: final {params['metric']} is {final} (a diverged run, or not a loss); "
                                    "a phase diagram needs finite losses >= 0: leave the run out")
            x = _value(a, x_key) / (_value(a, params["x_per_key"]) if params["x_per_key"] else 1.0)
            cells.setdefault((x, _value(a, y_key)), []).append(final)
        xs = np.array(sorted({x for x, _ in cells}))
        ys = np.array(sorted({y for _, y in cells}))
        if xs.size < 2 or ys.size < 2:
            one, other = (x_key, y_key) if xs.size < 2 else (y_key, x_key)
            raise AnalysisError(f"phase_diagram needs an ensemble swept in two config keys; {one} takes one value "
                                f"only here, so the runs are swept in {other} alone; sweep {one} too, or use the "
                                "loss analysis for a one-key sweep")
        index = [(int(np.searchsorted(xs, x)), int(np.searchsorted(ys, y))) for x, y in cells]
        losses = [np.array(v) for v in cells.values()]
        reps = np.zeros((xs.size, ys.size), dtype=np.int64)
        geo, mean, std, lstd, clipped = (np.full((xs.size, ys.size), np.nan) for _ in range(5))
        for (i, j), v in zip(index, losses, strict=True):
            reps[i, j] = v.size
            geo[i, j] = geometric_mean(v, floor)
            mean[i, j] = v.mean()
            std[i, j] = v.std(ddof=1) if v.size >= 2 else np.nan
            lstd[i, j] = np.log10(np.maximum(v, floor)).std(ddof=1) if v.size >= 2 else np.nan
            clipped[i, j] = np.sum(v < floor)
        x_log, y_log = bool(np.all(xs > 0)), bool(np.all(ys > 0))
        mc = float(params["min_contrast"])

        def transitions(g: np.ndarray) -> np.ndarray:
            """``[n_y + n_x]``: the cuts' transitions (along x for each y, then along y for each x)."""
            along_x = [transition_point(xs, g[:, j], mc, x_log)[0] for j in range(ys.size)]
            along_y = [transition_point(ys, g[i, :], mc, y_log)[0] for i in range(xs.size)]
            return np.array(along_x + along_y)

        point = transitions(geo)
        contrast_x = np.array([transition_point(xs, geo[:, j], mc, x_log)[1] for j in range(ys.size)])
        contrast_y = np.array([transition_point(ys, geo[i, :], mc, y_log)[1] for i in range(xs.size)])
        ci = np.full((point.size, 2), np.nan)
        if params["n_boot"]:
            few = next(((k, v.size) for k, v in zip(cells, losses, strict=True) if v.size < 2), None)
            if few is not None:
                raise AnalysisError(f"the bootstrap over replicas needs 2 or more replicas in every cell; cell "
                                    f"{x_key}={format_value(few[0][0])}, {y_key}={format_value(few[0][1])} has "
                                    f"{few[1]}; add replicas, or pass n_boot=0 for transitions without intervals")

            def resampled(*idx: np.ndarray) -> np.ndarray:
                g = np.full_like(geo, np.nan)
                for (i, j), v, ix in zip(index, losses, idx, strict=True):
                    g[i, j] = geometric_mean(v[ix], floor)
                return transitions(g)

            boot = replica_bootstrap(resampled, [v.size for v in losses], params["n_boot"], params["seed"])
            lo, hi = percentile_interval(boot, params["level"])
            ci = np.stack([lo, hi], axis=1)
        ny = ys.size
        xy = ("x", "y")
        arrays = {"loss_geomean": (geo, xy), "loss_mean": (mean, xy), "loss_std": (std, xy),
                  "loss_log10_std": (lstd, xy), "replicas": (reps, xy), "n_clipped": (clipped, xy),
                  "x_transition": (point[:ny], ("y",)), "x_transition_ci": (ci[:ny], ("y", "bound")),
                  "x_contrast": (contrast_x, ("y",)),
                  "y_transition": (point[ny:], ("x",)), "y_transition_ci": (ci[ny:], ("x", "bound")),
                  "y_contrast": (contrast_y, ("x",))}
        x_label = f"{x_key}/{params['x_per_key']}" if params["x_per_key"] else x_key
        scalars = {"x_key": x_label, "y_key": y_key, "metric": params["metric"], "floor": floor, "min_contrast": mc,
                   "x_log": x_log, "y_log": y_log, "n_runs": len(archives), "n_cells": len(cells)}
        return Result(arrays=arrays, coords={"x": xs, "y": ys, "bound": np.array(["lo", "hi"])}, scalars=scalars)

    def plot(self, result: Result, fig: Any) -> Any:
        from matplotlib.colors import LogNorm
        from matplotlib.ticker import NullFormatter

        sc, xs, ys = result.scalars, result.coords["x"], result.coords["y"]
        geo = result.arrays["loss_geomean"]
        ax_map, ax_x, ax_y = fig.subplots(1, 3)
        positive = geo[np.isfinite(geo) & (geo > 0)]
        norm = LogNorm(vmin=float(positive.min()), vmax=float(positive.max())) if positive.size else None
        mesh = ax_map.pcolormesh(xs, ys, geo.T, norm=norm, shading="nearest", cmap="viridis")
        fig.colorbar(mesh, ax=ax_map, label=f"geometric mean of final {sc['metric']} (clipped at "
                                            f"{plotting.fmt(sc['floor'])})")
        xt, yt = result.arrays["x_transition"], result.arrays["y_transition"]
        ax_map.plot(xt, ys, "w^", ms=5, mec="k", label=f"transition in {sc['x_key']}")
        ax_map.plot(xs, yt, "wo", ms=5, mec="k", label=f"transition in {sc['y_key']}")
        ax_map.set_xscale("log" if sc.get("x_log") else "linear")
        ax_map.set_yscale("log" if sc.get("y_log") else "linear")
        for axis in (ax_map.xaxis, ax_map.yaxis):
            axis.set_minor_formatter(NullFormatter())
        ax_map.set_xlabel(sc["x_key"])
        ax_map.set_ylabel(sc["y_key"])
        plotting.legend(ax_map)
        for ax, along, across, key, other, trans, ci, log in (
                (ax_x, xs, ys, sc["x_key"], sc["y_key"], xt, result.arrays["x_transition_ci"], sc.get("x_log")),
                (ax_y, ys, xs, sc["y_key"], sc["x_key"], yt, result.arrays["y_transition_ci"], sc.get("y_log"))):
            for j, value in enumerate(across):
                curve = geo[:, j] if along is xs else geo[j, :]
                line = ax.plot(along, curve, "o-", ms=3, label=f"{other} = {plotting.fmt(value)}")[0]
                if plotting.finite(trans[j]):
                    ax.axvline(trans[j], color=line.get_color(), lw=0.7, ls="--")
                    if np.all(np.isfinite(ci[j])):
                        ax.axvspan(ci[j][0], ci[j][1], color=line.get_color(), alpha=0.12, lw=0)
            ax.set_yscale("log")
            ax.set_xscale("log" if log else "linear")
            ax.set_xlabel(key)
            ax.set_ylabel(f"final {sc['metric']} (geometric mean over replicas)", fontsize=8)
            ax.set_title(f"cuts along {key}\ndashed: transition (mid-level of log loss), band: interval",
                         fontsize=8)
            plotting.legend(ax)
        plotting.caption(fig, plotting.describe(_resolved_view(result), [
            f"{sc['x_key']} × {sc['y_key']}: {sc['n_runs']} runs in {sc['n_cells']} cells",
            f"transitions need ≥ {plotting.fmt(sc['min_contrast'])} "
            f"decades of contrast; intervals: {int(result.params.get('n_boot', 0))} bootstrap resamples"]))
        return fig


def _resolved_view(result: Result) -> Result:
    """``result`` as the caption should describe it: the two axis keys are resolved (one cell per value, not
    pooled) and the core's per-run split (``group_by``) is no grouping of the diagram."""
    sc = result.scalars
    view = copy.copy(result)
    view.params = {**(result.params or {}), "group_by": None}
    coords = dict((result.provenance or {}).get("coords") or {})
    view.provenance = {**(result.provenance or {}),
                       "coords": {k: v for k, v in coords.items() if k not in (sc.get("x_key"), sc.get("y_key"))}}
    return view
