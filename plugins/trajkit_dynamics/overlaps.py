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
(snapshot steps) or ``n_waiting_times`` (n log-spaced snapshots; default 8), ``snap`` (exact | nearest),
``select`` (parameter subset), ``epsilon`` (absolute ε) or ``epsilon_factor`` F (ε = std(w(tw))/F, default 10), ``mode``
(``waiting``: t_w-resolved, default; ``lag``: origin-averaged over origins with step ≥
``origin_min_step``), ``hist_lag`` (lag of the displacement histogram, default the middle later snapshot
after the first waiting time), ``hist_bins``, ``allow_nan``, ``epsilon_from`` (``waiting_time``: ε from each
waiting time, default; ``last``: from the last snapshot; ``step``: from ``epsilon_step``) and
``normalize`` (``none``; ``noise_D``: also ``msd_over_noise_D = Δ(tw, tw+t)/D(tw)``, each replica's MSD over
its gradient-noise strength ``D(tw)`` from ``snapshots/metrics/noise_D``, the rescaling of 1803.06969).

Result keys. ``waiting`` mode: arrays ``overlap, overlap_normalized, msd, self_overlap, d4,
participation, alpha2`` ``[K, T]`` over ``(tw_step, step)`` (replica means; NaN where step < tw_step),
each with ``<name>_sem`` (standard error over replicas); ``epsilon [R, K]`` (the cutoffs used).
``lag`` mode: the same names ``[L]`` over ``lag``, plus ``n_pairs [L]``. Always: ``disp_hist [B]``
(density of log10|Δw|) with bin edges ``disp_bins [B+1]``; ``replica_overlap [T]`` over ``step`` when
there are two or more replicas. Scalars: ``n_selected``, ``replicas``, ``disp_tw_step``, ``disp_lag``,
``masked_steps`` (snapshots masked by ``allow_nan``). With ``normalize = "noise_D"``: ``msd_over_noise_D``
and its ``_sem`` like ``msd``, and ``noise_D [R, K]`` (the D(tw) used). For Langevin runs (metadata
``dynamics.kind = "langevin"`` with ``temperature``, ``lr`` and ``n_train``) in ``waiting`` mode:
``self_overlap_free [K, T]``, the free-diffusion reference ``mean_r erf(ε_rk/sqrt(4Dt))`` with
``D = Tη/P`` (scalar ``free_diffusion_D``; :mod:`trajkit_dynamics.free_diffusion`), drawn dashed beside Q.

Sums measured online (``online/``, :mod:`trajkit.online`; read when the snapshots do not hold the measured
steps): the same keys, on the grid of measured steps; ``disp_hist``, ``disp_bins`` and ``replica_overlap``
need the parameter vectors and are NaN there, ``disp_lag`` None. In ``lag`` mode the origins are the
recorded waiting times (at or after ``origin_min_step``) and the lags the recorded ones, exactly;
``disp_tw_step`` is None there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trajkit.analysis import Analysis, Param, Result, plotting
from trajkit.analysis.stats import replica_mean_sem
from trajkit.errors import AnalysisError
from trajkit_dynamics.free_diffusion import FREE_LABEL, ensemble_diffusion, free_self_overlap_grid
from trajkit_dynamics.measure import (
    COMMON_PARAMS,
    MSD_OVER_NOISE_D,
    MSD_OVER_NOISE_D_LABEL,
    NORMALIZE,
    ORIGIN_MIN_STEP,
    measure_two_time,
    replica_gram,
    selected_columns,
)
from trajkit_dynamics.two_time import TWO_TIME_NAMES
from trajkit_dynamics.two_time import two_time_from_sums as two_time_from_sums  # re-exported


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


def log10_displacements(arch: Any, tw_row: int, b_row: int, cols: Any) -> np.ndarray:
    """``log10 |w_i(b) − w_i(tw)|`` over the columns ``cols`` of one archive, zeros left out: float64 ``[n]``."""
    d = np.abs(np.asarray(arch.params[b_row, cols], np.float64) - np.asarray(arch.params[tw_row, cols], np.float64))
    return np.log10(d[d > 0])


def displacement_extent(arch: Any, tw_row: int, b_row: int, cols: Any) -> tuple[float, float] | None:
    """``(min, max)`` of :func:`log10_displacements`, None when every displacement is 0 (a task per replica)."""
    v = log10_displacements(arch, tw_row, b_row, cols)
    return (float(v.min()), float(v.max())) if v.size else None


def displacement_counts(arch: Any, tw_row: int, b_row: int, cols: Any, bins: int,
                        log10_range: tuple[float, float]) -> np.ndarray:
    """Counts ``[bins]`` of :func:`log10_displacements` in ``bins`` equal bins over ``log10_range``."""
    return np.histogram(log10_displacements(arch, tw_row, b_row, cols), bins=bins, range=log10_range)[0]


def displacement_histogram(archives: list[Any], tw_row: int, b_row: int, cols: Any, ctx: Any,
                           bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Density of ``log10 |w_i(b) − w_i(tw)|`` pooled over parameters and replicas (zeros are left out).

    Returns ``(density [bins], edges [bins + 1])`` over the pooled range; the density integrates to 1 over
    ``log10 |Δw|``. Two ``ctx.map`` passes of one task per replica (extents, then counts on the common
    bins), so no displacement leaves its worker; equal to ``np.histogram(pooled, bins, density=True)``.
    """
    kw = {"tw_row": tw_row, "b_row": b_row, "cols": cols}
    extents = [e for e in ctx.map(displacement_extent, archives, desc="displacements", **kw) if e is not None]
    if not extents:
        return np.zeros(bins), np.linspace(-1.0, 1.0, bins + 1)
    lo, hi = min(e[0] for e in extents), max(e[1] for e in extents)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts = sum(ctx.map(displacement_counts, archives, desc="displacements", bins=bins, log10_range=(lo, hi), **kw))
    edges = np.histogram_bin_edges(np.zeros(0), bins=bins, range=(lo, hi))
    return counts / np.diff(edges) / counts.sum(), edges


def online_placeholders(tt: Any, replicas: int, bins: int) -> dict[str, Any]:
    """The arrays that need the parameter vectors themselves, NaN for sums measured online: ``disp_hist``,
    ``disp_bins`` and, for 2+ replicas, ``replica_overlap`` (same keys and shapes as from snapshots)."""
    out: dict[str, Any] = {"disp_hist": (np.full(bins, np.nan), ("disp_bin",)),
                           "disp_bins": (np.full(bins + 1, np.nan), ("disp_edge",))}
    if replicas >= 2:
        out["replica_overlap"] = (np.full(tt.steps.size, np.nan), ("step",))
    return out


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
              Param("hist_bins", "int", default=60, min=2, help="bins of the displacement histogram"),
              NORMALIZE)

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
        for name in (*TWO_TIME_NAMES, MSD_OVER_NOISE_D):
            if name in tt.values:
                mean, sem = replica_mean_sem(tt.values[name])
                arrays[name] = (mean, dims)
                arrays[f"{name}_sem"] = (sem, dims)
        # the paper conventions (normalize, the free-diffusion reference): separate from the measurement above
        if tt.noise_d.size and tt.mode == "waiting":
            arrays["noise_D"] = (tt.noise_d, ("replica", "tw_step"))
        diffusion = ensemble_diffusion(getattr(data, "archives", [data]))
        if diffusion is not None and tt.mode == "waiting" and "self_overlap" in tt.values:
            arrays["self_overlap_free"] = (free_self_overlap_grid(tt.tw_step, tt.steps, tt.epsilon, diffusion), dims)
        archives = list(getattr(data, "archives", [data]))
        steps = tt.steps
        if tt.source == "online":
            arrays.update(online_placeholders(tt, len(archives), params["hist_bins"]))
            scalars = {"n_selected": tt.n, "replicas": tt.replicas,
                       "disp_tw_step": int(tt.tw_step[0]) if tt.mode == "waiting" else None,
                       "disp_lag": None, "masked_steps": tt.masked_steps}
            return Result(arrays=arrays, coords=coords, scalars=scalars)
        cols = selected_columns(data, params["select"])
        tw_row = int(tt.tw_rows[0]) if tt.mode == "waiting" else 0
        later = np.arange(tw_row + 1, steps.size)
        if later.size == 0:
            raise AnalysisError(f"no snapshot after the first waiting time (step {int(steps[tw_row])})")
        if params["hist_lag"] is None:
            b_row = int(later[later.size // 2])
        else:
            target = steps[tw_row] + params["hist_lag"]
            b_row = int(later[np.argmin(np.abs(steps[later] - target))])
        hist, edges = displacement_histogram(archives, tw_row, b_row, cols, ctx, bins=params["hist_bins"])
        arrays["disp_hist"] = (hist, ("disp_bin",))
        arrays["disp_bins"] = (edges, ("disp_edge",))
        if len(archives) >= 2:
            arrays["replica_overlap"] = (replica_overlap(replica_gram(data, cols, ctx)), ("step",))
        scalars = {"n_selected": tt.n, "replicas": tt.replicas, "disp_tw_step": int(steps[tw_row]),
                   "disp_lag": int(steps[b_row] - steps[tw_row]), "masked_steps": tt.masked_steps}
        if "self_overlap_free" in arrays:
            scalars["free_diffusion_D"] = diffusion
        return Result(arrays=arrays, coords=coords, scalars=scalars)

    def plot(self, result: Result, fig: Any) -> Any:
        axes = fig.subplots(2, 3).ravel()
        waiting = "tw_step" in result.dims.get("msd", ())
        first = MSD_OVER_NOISE_D if MSD_OVER_NOISE_D in result.arrays else "msd"      # normalize=noise_D
        free = result.arrays.get("self_overlap_free")                                 # Langevin runs
        for ax, name, logy in zip(axes[:4], (first, "self_overlap", "overlap_normalized", "alpha2"),
                                  (True, False, False, False), strict=True):
            values, sem = result.arrays.get(name), result.arrays.get(f"{name}_sem")
            if values is None:
                ax.set_visible(False)
                continue
            if waiting:
                step = result.coords["step"]
                for k, tw in enumerate(result.coords["tw_step"]):
                    lag = (step - tw).astype(float)
                    after = lag > 0
                    line = plotting.band(ax, lag[after], values[k][after], None if sem is None else sem[k][after],
                                         label=plotting.tw_label(tw))
                    if name == "self_overlap" and free is not None:
                        ax.plot(lag[after], free[k][after], ls="--", lw=0.8, color=line.get_color(),
                                label=FREE_LABEL if k == 0 else None)
            else:
                plotting.band(ax, result.coords["lag"].astype(float), values, sem)
            ax.set_xscale("log")
            if logy:
                ax.set_yscale("log")
            ax.set_xlabel(plotting.LAG if waiting else plotting.LAG_ORIGINS)
            ax.set_ylabel(plotting.LABELS.get(name, MSD_OVER_NOISE_D_LABEL), fontsize=8)
            plotting.legend(ax)
        sc = result.scalars
        ax = axes[4]
        edges, density = result.arrays.get("disp_bins"), result.arrays.get("disp_hist")
        if edges is not None and density is not None:
            ax.stairs(density, edges, fill=True, alpha=0.6,
                      label=f"$t_w$ = {sc.get('disp_tw_step')}, $t$ = {sc.get('disp_lag')}")
            ax.set_xlabel(r"$\log_{10}|\delta w_i|$")
            ax.set_ylabel(r"density $P(\log_{10}|\delta w_i|)$")
            ax.set_title("displacements, pooled over parameters and replicas", fontsize=8)
            plotting.legend(ax)
        else:
            ax.set_visible(False)
        ax = axes[5]
        q = result.arrays.get("replica_overlap")
        if q is not None:
            step = result.coords["step"].astype(float)
            ax.plot(step, q, label=r"mean over pairs $a < b$")
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlabel("step $t$")
            ax.set_ylabel(plotting.LABELS["replica_overlap"], fontsize=8)
            ax.set_title("overlap between replicas", fontsize=8)
            plotting.legend(ax)
        else:
            ax.set_visible(False)
        plotting.caption(fig, plotting.describe(result, ["bands: ± s.e. over replicas"]))
        return fig
