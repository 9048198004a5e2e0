"""Dynamic susceptibility χ4: sample-to-sample fluctuations of the self-overlap.

``χ4(tw, t) = N [⟨Q²⟩ − ⟨Q⟩²]`` where ``⟨·⟩`` averages over samples of ``Q(tw, tw+t)`` — the replicas at
fixed ``tw`` (population variance, ``ddof = 0``, exactly as written), or, as an option, replicas × time
origins in a stationary window at fixed lag. Errors: bootstrap over replicas (resample replicas with
replacement, recompute χ4; the standard error is the standard deviation of the bootstrap replicates).
The peak ``χ4* = max_t χ4(tw, t)`` and its lag ``τ4`` (refined by a parabola through the three points
around the maximum in ``ln t`` when the maximum is interior). ``τ4`` is *resolved* (:func:`peak_resolved`,
trajkit's own rule) only when the maximum is neither the first nor the last finite point and the curve
falls below ``TAU4_DROP·χ4*`` (one half) at some later lag: a maximum on a plateau, or one still rising
at the end of the run, is flagged (``tau4_resolved`` false) and ``τ4`` is NaN — never a number; ``χ4*``
is then the largest value seen (a lower bound of the peak).

Plugin ``chi4`` (:class:`Chi4`, needs an ensemble of 2+ replicas). Parameters: those of ``overlaps``
(``waiting_times`` / ``n_waiting_times``, ``snap``, ``select``, ``epsilon`` / ``epsilon_factor``,
``allow_nan``), ``mode`` (``waiting``, or ``lag``: samples are replicas × time origins with step ≥
``origin_min_step``, pooled at each matched lag), ``n_boot`` (bootstrap replicates, default 200), ``seed``.

Result keys. ``waiting``: arrays ``chi4 [K, T]`` and ``chi4_sem [K, T]`` over ``(tw_step, step)``,
``self_overlap [K, T]`` (replica mean), ``chi4_peak [K]``, ``chi4_peak_sem [K]``, ``tau4 [K]``,
``tau4_sem [K]``, ``tau4_resolved [K]`` (bool) over ``tw_step``; scalars ``chi4_peak``, ``chi4_peak_sem``,
``tau4``, ``tau4_sem``, ``tau4_resolved`` for the last waiting time. ``lag``: ``chi4 [L]``, ``chi4_sem [L]``,
``n_samples [L]`` over ``lag`` and the peak scalars. Always scalars ``n_selected``, ``replicas``, ``masked_steps``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from trajkit.analysis import Analysis, Param, Result, plotting
from trajkit.analysis.stats import bootstrap_sem, replica_bootstrap
from trajkit.errors import AnalysisError
from trajkit_dynamics.measure import COMMON_PARAMS, ORIGIN_MIN_STEP, measure_two_time


def chi4(q: np.ndarray, n: int) -> np.ndarray:
    """``N·var(Q)`` over axis 0 (samples): ``q [S, ...]`` → ``[...]``; NaN where any sample is NaN."""
    q = np.asarray(q, dtype=float)
    return float(n) * np.var(q, axis=0)


def chi4_bootstrap(q: np.ndarray, n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of χ4: resample axis 0 of ``q [R, ...]`` → ``[n_boot, ...]``."""
    q = np.asarray(q, dtype=float)
    return replica_bootstrap(lambda i: chi4(q[i], n), q.shape[0], n_boot, rng)


def chi4_peak(lags: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """``(χ4*, τ4)`` of one curve ``values [T]`` at ``lags [T]`` (lags > 0 and finite values only)."""
    lags = np.asarray(lags, dtype=float)
    values = np.asarray(values, dtype=float)
    ok = (lags > 0) & np.isfinite(values)
    lags, values = lags[ok], values[ok]
    if values.size == 0:
        return float("nan"), float("nan")
    j = int(np.argmax(values))
    if 0 < j < values.size - 1:
        x = np.log(lags[j - 1:j + 2])
        y = values[j - 1:j + 2]
        a, b, c = np.polyfit(x, y, 2)
        if a < 0:
            xm = -b / (2 * a)
            if x[0] <= xm <= x[2]:
                return float(max(values[j], c - b * b / (4 * a))), float(np.exp(xm))
    return float(values[j]), float(lags[j])


#: τ4 is resolved only if χ4 falls below this fraction of its peak at a later lag (see the module docstring).
TAU4_DROP = 0.5


def peak_resolved(lags: np.ndarray, values: np.ndarray, drop: float = TAU4_DROP) -> bool:
    """Whether the maximum of ``values [T]`` at ``lags [T]`` is a resolved peak: interior (not the first or
    last finite point with ``lag > 0``), positive, and followed by a value below ``drop·max``."""
    lags = np.asarray(lags, dtype=float)
    values = np.asarray(values, dtype=float)
    ok = (lags > 0) & np.isfinite(values)
    v = values[ok]
    if v.size < 3:
        return False
    j = int(np.argmax(v))
    return bool(0 < j < v.size - 1 and v[j] > 0 and np.min(v[j + 1:]) < drop * v[j])


def _peaks(lags_per_k: list[np.ndarray], chi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = np.array([chi4_peak(lag, c) for lag, c in zip(lags_per_k, chi, strict=True)])
    return out[:, 0], out[:, 1]


def pooled_chi4(q_pairs: list[np.ndarray], lag_index: np.ndarray, n_lags: int, n: int,
                replicas: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """χ4 per lag over samples pooled from replicas × origins: ``q_pairs`` is one ``[P]`` array per
    replica (the chosen ``replicas`` indices, repeats allowed). Returns ``(chi4 [L], n_samples [L])``."""
    idx = np.arange(len(q_pairs)) if replicas is None else replicas
    q = np.concatenate([q_pairs[i] for i in idx])
    lag = np.tile(lag_index, idx.size)
    ok = np.isfinite(q)
    q, lag = q[ok], lag[ok]
    cnt = np.bincount(lag, minlength=n_lags).astype(float)
    s1 = np.bincount(lag, q, minlength=n_lags)
    s2 = np.bincount(lag, q * q, minlength=n_lags)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / cnt
        var = np.maximum(s2 / cnt - mean**2, 0.0)
    var[cnt < 2] = np.nan
    return n * var, cnt


class Chi4(Analysis):
    """Dynamic susceptibility χ4 over replicas (see the module docstring for formulas and keys)."""

    name = "chi4"
    version = "1.0.0"
    description = "Four-point susceptibility chi4(tw, t) = N[<Q^2> - <Q>^2] over replicas, peak and tau4."
    needs = "ensemble"
    params = (*COMMON_PARAMS,
              Param("mode", "str", default="waiting", choices=("waiting", "lag"),
                    help="waiting: per waiting time over replicas; lag: replicas x origins at each lag"),
              ORIGIN_MIN_STEP,
              Param("n_boot", "int", default=200, min=2, help="bootstrap replicates over replicas"),
              Param("seed", "int", default=0, help="seed of the bootstrap"))

    def compute(self, data: Any, params: dict[str, Any], ctx: Any) -> Result:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return self._compute(data, params, ctx)

    def _compute(self, data: Any, params: dict[str, Any], ctx: Any) -> Result:
        r = len(getattr(data, "archives", [data]))
        if r < 2:
            raise AnalysisError(f"chi4 needs at least 2 replicas (got {r}): chi4 is a variance over replicas; "
                                "record more replicas (run.replicas) and pass the ensemble directory")
        tt = measure_two_time(data, params, ctx, mode=params["mode"], sums=("theta",),
                              origin_min_step=params["origin_min_step"])
        n_boot, seed = params["n_boot"], params["seed"]
        scalars: dict[str, Any] = {"n_selected": tt.n, "replicas": r, "masked_steps": tt.masked_steps}
        if tt.mode == "lag":
            chi, cnt = pooled_chi4(tt.pair_q, tt.pair_lag_index, tt.lags.size, tt.n)
            boots = replica_bootstrap(lambda i: pooled_chi4(tt.pair_q, tt.pair_lag_index, tt.lags.size, tt.n, i)[0],
                                      r, n_boot, seed)                                          # [B, L]
            peak, tau = chi4_peak(tt.lags, chi)
            bp = np.array([chi4_peak(tt.lags, b) for b in boots])
            resolved = peak_resolved(tt.lags, chi)
            nan = float("nan")
            scalars.update(chi4_peak=peak, tau4=tau if resolved else nan, chi4_peak_sem=bootstrap_sem(bp[:, 0]),
                           tau4_sem=bootstrap_sem(bp[:, 1]) if resolved else nan, tau4_resolved=resolved)
            arrays = {"chi4": (chi, ("lag",)), "chi4_sem": (bootstrap_sem(boots), ("lag",)),
                      "n_samples": (cnt, ("lag",))}
            return Result(arrays=arrays, coords={"lag": tt.lags}, scalars=scalars)
        q = tt.values["self_overlap"]
        chi = chi4(q, tt.n)
        boots = chi4_bootstrap(q, tt.n, n_boot, np.random.default_rng(seed))             # [B, K, T]
        lags = [tt.steps - tw for tw in tt.tw_step]
        peak, tau = _peaks(lags, chi)
        bpeaks = np.stack([np.stack(_peaks(lags, b)) for b in boots])   # [B, 2, K]
        peak_sem, tau_sem = bootstrap_sem(bpeaks[:, 0]), bootstrap_sem(bpeaks[:, 1])
        resolved = np.array([peak_resolved(lag, c) for lag, c in zip(lags, chi, strict=True)], dtype=bool)
        tau, tau_sem = np.where(resolved, tau, np.nan), np.where(resolved, tau_sem, np.nan)
        dims = ("tw_step", "step")
        arrays = {"chi4": (chi, dims), "chi4_sem": (bootstrap_sem(boots), dims),
                  "self_overlap": (np.nanmean(q, axis=0), dims),
                  "chi4_peak": (peak, ("tw_step",)), "chi4_peak_sem": (peak_sem, ("tw_step",)),
                  "tau4": (tau, ("tw_step",)), "tau4_sem": (tau_sem, ("tw_step",)),
                  "tau4_resolved": (resolved, ("tw_step",))}
        scalars.update(chi4_peak=float(peak[-1]), chi4_peak_sem=float(peak_sem[-1]), tau4=float(tau[-1]),
                       tau4_sem=float(tau_sem[-1]), tau4_resolved=bool(resolved[-1]), tw_step=int(tt.tw_step[-1]))
        return Result(arrays=arrays, coords={"tw_step": tt.tw_step, "step": tt.steps}, scalars=scalars)

    def plot(self, result: Result, fig: Any) -> Any:
        ax = fig.subplots(1, 1)
        chi, sem = result.arrays["chi4"], result.arrays.get("chi4_sem")
        found, unresolved = [], []
        if "tw_step" in result.dims["chi4"]:
            step = result.coords["step"]
            tws = result.coords["tw_step"]
            resolved = result.arrays.get("tau4_resolved", np.ones(tws.size, dtype=bool))
            for k, tw in enumerate(tws):
                lag = (step - tw).astype(float)
                after = lag > 0
                line = plotting.band(ax, lag[after], chi[k][after], None if sem is None else sem[k][after],
                                     label=plotting.tw_label(tw))
                peak = (result.arrays["chi4_peak"][k], result.arrays["tau4"][k], result.arrays["tau4_sem"][k])
                if resolved[k] and plotting.finite(peak[1]):
                    found.append(_mark_peak(ax, line, *peak, f" ($t_w$ = {int(tw)})"))
                else:
                    unresolved.append(str(int(tw)))
            ax.set_xlabel(plotting.LAG)
            ax.set_ylabel(plotting.LABELS["chi4"])
        else:
            lag = result.coords["lag"].astype(float)
            line = plotting.band(ax, lag, chi, sem, label="replicas × origins")
            sc = result.scalars
            if sc.get("tau4_resolved", True) and plotting.finite(sc.get("tau4")):
                found.append(_mark_peak(ax, line, sc.get("chi4_peak"), sc.get("tau4"), sc.get("tau4_sem"), ""))
            else:
                unresolved.append("all lags")
            ax.set_xlabel(plotting.LAG_ORIGINS)
            ax.set_ylabel(plotting.LABELS["chi4"].replace("{\\rm replicas}", "{\\rm replicas,\\ origins}"))
        ax.set_xscale("log")
        lines = found[-2:]
        if unresolved:
            which = "" if unresolved == ["all lags"] else f" at $t_w$ = {', '.join(unresolved)}"
            lines.append(f"$\\tau_4$ unresolved{which}: no peak ($\\chi_4$ on a plateau or still rising at the "
                         "end of the run)")
        ax.set_title("\n".join(lines), fontsize=8)
        plotting.legend(ax)
        plotting.caption(fig, plotting.describe(result, [f"bands: ± bootstrap s.e. ({result.params.get('n_boot')} "
                                                         "resamples of the replicas)"]))
        return fig


def _mark_peak(ax: Any, line: Any, peak: Any, tau: Any, tau_sem: Any, where: str) -> str:
    """Mark a resolved peak ``(τ4, χ4*)`` on ``ax`` and return its title line."""
    ax.plot([tau], [peak], "v", color=line.get_color(), ms=6)
    err = f" ± {plotting.fmt(tau_sem, 2)}" if plotting.finite(tau_sem) else ""
    return f"$\\chi_4^*$ = {plotting.fmt(peak)} at $\\tau_4$ = {plotting.fmt(tau)}{err} steps{where}"
