"""Two-time overlaps, displacement moments, self-overlap and the displacement distribution.

For snapshots ``a = w(tw)`` and ``b = w(tw+t)`` of the N selected parameters, the pair kernels give
``dot = Σ a·b``, ``norm_a = Σ a²``, ``norm_b = Σ b²``, ``sq = Σ (b−a)²``, ``quart = Σ (b−a)⁴`` and
``theta = Σ Θ(ε − |b−a|)``. From them (:func:`two_time_from_sums`):

==========================  =====================================================================
``overlap``                 ``C(tw, tw+t) = dot / N``
``overlap_normalized``      ``dot / sqrt(norm_a · norm_b)``
``msd``                     ``Δ(tw, tw+t) = sq / N``
``self_overlap``            ``Q(tw, tw+t) = theta / N``
``d4``                      ``D4 = quart / N``
``participation``           ``Y = quart / sq²``  (``≈ 3/N`` for Gaussian displacements)
``alpha2``                  ``α2 = ⟨Δw⁴⟩ / (3⟨Δw²⟩²) − 1 = N·quart / (3 sq²) − 1``
==========================  =====================================================================

``Y`` and ``α2`` are NaN where ``sq = 0`` (no motion). The inter-replica overlap is
``q_ab(t) = w^a(t)·w^b(t) / (|w^a(t)| |w^b(t)|)`` (:func:`replica_overlap`), the displacement
distribution the histogram of ``log10 |w_i(tw+t) − w_i(tw)|`` pooled over parameters and replicas
(:func:`displacement_histogram`).

Plugin ``overlaps`` (:class:`Overlaps`, needs an ensemble of 1+ replicas). Parameters: ``waiting_times``
(steps, or n for n log-spaced snapshots; default 8), ``snap`` (exact | nearest), ``select`` (parameter
subset), ``epsilon`` (absolute ε) or ``epsilon_factor`` F (ε = std(w(tw))/F, default 10), ``mode``
(``waiting``: t_w-resolved, default; ``lag``: origin-averaged over origins with step ≥
``origin_min_step``), ``hist_lag`` (lag of the displacement histogram, default the middle later snapshot
after the first waiting time), ``hist_bins``, ``allow_nan``.

Result keys. ``waiting`` mode: arrays ``overlap, overlap_normalized, msd, self_overlap, d4,
participation, alpha2`` ``[K, T]`` over ``(tw_step, step)`` (replica means; NaN where step < tw_step),
each with ``<name>_sem`` (standard error over replicas); ``epsilon [R, K]`` (the cutoffs used).
``lag`` mode: the same names ``[L]`` over ``lag``, plus ``n_pairs [L]``. Always: ``disp_hist [B]``
(density of log10|Δw|) with bin edges ``disp_bins [B+1]``; ``replica_overlap [T]`` over ``step`` when
there are two or more replicas. Scalars: ``n_selected``, ``replicas``, ``disp_tw_step``, ``disp_lag``,
``masked_steps`` (snapshots masked by ``allow_nan``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trajkit.analysis import Analysis, Param, Result
from trajkit.errors import AnalysisError
from trajkit_dynamics.measure import COMMON_PARAMS, ORIGIN_MIN_STEP, measure_two_time, replica_gram, selected_columns

#: Arrays computed from the pair sums, in the order the plugin reports them.
TWO_TIME_NAMES = ("overlap", "overlap_normalized", "msd", "self_overlap", "d4", "participation", "alpha2")


def two_time_from_sums(sums: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The two-time observables from pair sums over ``n`` parameters (any common shape, e.g. ``[P]``).

    Each output appears when its inputs are present: ``dot`` → overlap (with ``norm_a, norm_b`` also the
    normalised overlap), ``sq`` → msd, ``theta`` → self_overlap, ``sq`` and ``quart`` → d4,
    participation, alpha2.
    """
    out: dict[str, np.ndarray] = {}
    n = float(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        if "dot" in sums:
            dot = np.asarray(sums["dot"], dtype=float)
            out["overlap"] = dot / n
            if "norm_a" in sums and "norm_b" in sums:
                out["overlap_normalized"] = dot / np.sqrt(np.asarray(sums["norm_a"], float)
                                                          * np.asarray(sums["norm_b"], float))
        if "theta" in sums:
            out["self_overlap"] = np.asarray(sums["theta"], dtype=float) / n
        if "sq" in sums:
            sq = np.asarray(sums["sq"], dtype=float)
            out["msd"] = sq / n
        if "sq" in sums and "quart" in sums:
            quart = np.asarray(sums["quart"], dtype=float)
            out["d4"] = quart / n
            moving = sq > 0
            safe = np.where(moving, sq, 1.0)
            out["participation"] = np.where(moving, quart / safe**2, np.nan)
            out["alpha2"] = np.where(moving, n * quart / (3.0 * safe**2) - 1.0, np.nan)
    return out


def epsilon_from_std(rows: np.ndarray, factor: float) -> np.ndarray:
    """Cutoff ``ε = std(w) / F`` over the parameters of each row: ``rows [..., N]`` → ``[...]``."""
    return np.std(np.asarray(rows, dtype=float), axis=-1) / float(factor)


def replica_overlap(gram: np.ndarray) -> np.ndarray:
    """Mean pairwise normalised inter-replica overlap from per-snapshot replica Gram matrices.

    ``gram [T, R, R]`` holds ``w^a(t)·w^b(t)``; returns ``mean_{a<b} q_ab(t)`` as ``[T]`` (NaN if R < 2).
    """
    g = np.asarray(gram, dtype=float)
    r = g.shape[-1]
    if r < 2:
        return np.full(g.shape[0], np.nan)
    diag = np.sqrt(np.einsum("tii->ti", g))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = g / (diag[:, :, None] * diag[:, None, :])
    iu = np.triu_indices(r, 1)
    return q[:, iu[0], iu[1]].mean(axis=1)


def displacement_histogram(displacements: Sequence[np.ndarray] | np.ndarray, bins: int = 60,
                           log10_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Density of ``log10 |Δw|`` pooled over all given displacement arrays (zeros are left out).

    Returns ``(density [bins], edges [bins + 1])``; the density integrates to 1 over ``log10 |Δw|``.
    """
    parts = [np.abs(np.asarray(d, dtype=float)).ravel() for d in
             (displacements if isinstance(displacements, list | tuple) else [displacements])]
    vals = np.concatenate(parts)
    vals = np.log10(vals[vals > 0])
    if vals.size == 0:
        edges = np.linspace(-1.0, 1.0, bins + 1)
        return np.zeros(bins), edges
    if log10_range is None:
        lo, hi = float(vals.min()), float(vals.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        log10_range = (lo, hi)
    density, edges = np.histogram(vals, bins=bins, range=log10_range, density=True)
    return density, edges


def replica_mean_sem(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over replicas (axis 0, NaN-aware): ``[R, ...]`` → two ``[...]`` arrays.

    The standard error is ``std(ddof=1)/sqrt(R)``; NaN where fewer than two replicas have a value.
    """
    v = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(v, axis=0)
            count = np.sum(np.isfinite(v), axis=0)
            sem = np.where(count >= 2, np.nanstd(v, axis=0, ddof=1) / np.sqrt(np.maximum(count, 1)), np.nan)
    return mean, sem


class Overlaps(Analysis):
    """Two-time overlaps and displacement statistics (see the module docstring for formulas and keys)."""

    name = "overlaps"
    version = "1.0.0"
    description = "Two-time overlap, MSD, self-overlap Q, D4, participation, alpha2, displacement histogram."
    needs = "ensemble"

    params = (*COMMON_PARAMS,
              Param("mode", "str", default="waiting", choices=("waiting", "lag"),
                    help="waiting: t_w-resolved [K, T]; lag: averaged over time origins [L]"),
              ORIGIN_MIN_STEP,
              Param("hist_lag", "int", default=None, min=1,
                    help="lag (steps) of the displacement histogram after the first waiting time"),
              Param("hist_bins", "int", default=60, min=2, help="bins of the displacement histogram"))

    def compute(self, data: Any, params: dict[str, Any], ctx: Any) -> Result:
        tt = measure_two_time(data, params, ctx, mode=params["mode"], origin_min_step=params["origin_min_step"])
        arrays: dict[str, Any] = {}
        coords: dict[str, Any] = {"step": tt.steps}
        if tt.mode == "waiting":
            dims: tuple[str, ...] = ("tw_step", "step")
            coords["tw_step"] = tt.tw_step
            arrays["epsilon"] = (tt.epsilon, ("replica", "tw_step"))
        else:
            dims = ("lag",)
            coords["lag"] = tt.lags
            arrays["n_pairs"] = (tt.n_pairs, ("lag",))
        for name in TWO_TIME_NAMES:
            if name in tt.values:
                mean, sem = replica_mean_sem(tt.values[name])
                arrays[name] = (mean, dims)
                arrays[f"{name}_sem"] = (sem, dims)
        archives = list(getattr(data, "archives", [data]))
        cols = selected_columns(data, params["select"])
        steps = tt.steps
        tw_row = int(tt.tw_rows[0]) if tt.mode == "waiting" else 0
        later = np.arange(tw_row + 1, steps.size)
        if later.size == 0:
            raise AnalysisError(f"no snapshot after the first waiting time (step {int(steps[tw_row])})")
        if params["hist_lag"] is None:
            b_row = int(later[later.size // 2])
        else:
            target = steps[tw_row] + params["hist_lag"]
            b_row = int(later[np.argmin(np.abs(steps[later] - target))])
        disp = [np.asarray(a.params[b_row, cols], np.float64) - np.asarray(a.params[tw_row, cols], np.float64)
                for a in archives]
        hist, edges = displacement_histogram(disp, bins=params["hist_bins"])
        arrays["disp_hist"] = (hist, ("disp_bin",))
        arrays["disp_bins"] = (edges, ("disp_edge",))
        if len(archives) >= 2:
            arrays["replica_overlap"] = (replica_overlap(replica_gram(data, cols, ctx)), ("step",))
        scalars = {"n_selected": tt.n, "replicas": tt.replicas, "disp_tw_step": int(steps[tw_row]),
                   "disp_lag": int(steps[b_row] - steps[tw_row]), "masked_steps": tt.masked_steps}
        return Result(arrays=arrays, coords=coords, scalars=scalars)

    def plot(self, result: Result, fig: Any) -> Any:
        axes = fig.subplots(2, 2)
        waiting = "tw_step" in result.dims.get("msd", ())
        for ax, name, logy in zip(axes.flat, ("msd", "self_overlap", "overlap_normalized", "alpha2"),
                                  (True, False, False, False), strict=True):
            values = result.arrays.get(name)
            if values is None:
                ax.set_visible(False)
                continue
            if waiting:
                step = result.coords["step"]
                for k, tw in enumerate(result.coords["tw_step"]):
                    lag = step - tw
                    ok = (lag > 0) & np.isfinite(values[k])
                    ax.plot(lag[ok], values[k][ok], label=f"tw={tw}")
            else:
                ok = np.isfinite(values)
                ax.plot(result.coords["lag"][ok], values[ok])
            ax.set_xscale("log")
            if logy:
                ax.set_yscale("log")
            ax.set_xlabel("t = step − tw" if waiting else "lag")
            ax.set_ylabel(name)
        if waiting:
            axes.flat[0].legend(fontsize="x-small")
        return fig
