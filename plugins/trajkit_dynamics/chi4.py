"""Dynamic susceptibility χ4: sample-to-sample fluctuations of the self-overlap.

``χ4(tw, t) = N [⟨Q²⟩ − ⟨Q⟩²]`` where ``⟨·⟩`` averages over samples of ``Q(tw, tw+t)`` — the replicas at
fixed ``tw`` (population variance, ``ddof = 0``, exactly as written), or, as an option, replicas × time
origins in a stationary window at fixed lag. Errors: bootstrap over replicas (resample replicas with
replacement, recompute χ4; the standard error is the standard deviation of the bootstrap replicates).
The peak ``χ4* = max_t χ4(tw, t)`` and its lag ``τ4`` (refined by a parabola through the three points
around the maximum in ``ln t`` when the maximum is interior).

Plugin ``chi4`` (:class:`Chi4`, needs an ensemble of 2+ replicas). Parameters: those of ``overlaps``
(``waiting_times`` / ``n_waiting_times``, ``snap``, ``select``, ``epsilon`` / ``epsilon_factor``,
``allow_nan``), ``mode`` (``waiting``, or ``lag``: samples are replicas × time origins with step ≥
``origin_min_step``, pooled at each matched lag), ``n_boot`` (bootstrap replicates, default 200), ``seed``.

Result keys. ``waiting``: arrays ``chi4 [K, T]`` and ``chi4_sem [K, T]`` over ``(tw_step, step)``,
``self_overlap [K, T]`` (replica mean), ``chi4_peak [K]``, ``chi4_peak_sem [K]``, ``tau4 [K]``,
``tau4_sem [K]`` over ``tw_step``; scalars ``chi4_peak``, ``chi4_peak_sem``, ``tau4``, ``tau4_sem`` for the
last waiting time. ``lag``: ``chi4 [L]``, ``chi4_sem [L]``, ``n_samples [L]`` over ``lag`` and the peak
scalars. Always scalars ``n_selected``, ``replicas``, ``masked_steps``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from trajkit.analysis import Analysis, Param, Result
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
            scalars.update(chi4_peak=peak, tau4=tau, chi4_peak_sem=bootstrap_sem(bp[:, 0]),
                           tau4_sem=bootstrap_sem(bp[:, 1]))
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
        dims = ("tw_step", "step")
        arrays = {"chi4": (chi, dims), "chi4_sem": (bootstrap_sem(boots), dims),
                  "self_overlap": (np.nanmean(q, axis=0), dims),
                  "chi4_peak": (peak, ("tw_step",)), "chi4_peak_sem": (peak_sem, ("tw_step",)),
                  "tau4": (tau, ("tw_step",)), "tau4_sem": (tau_sem, ("tw_step",))}
        scalars.update(chi4_peak=float(peak[-1]), chi4_peak_sem=float(peak_sem[-1]), tau4=float(tau[-1]),
                       tau4_sem=float(tau_sem[-1]), tw_step=int(tt.tw_step[-1]))
        return Result(arrays=arrays, coords={"tw_step": tt.tw_step, "step": tt.steps}, scalars=scalars)

    def plot(self, result: Result, fig: Any) -> Any:
        ax = fig.subplots(1, 1)
        chi = result.arrays["chi4"]
        if "tw_step" in result.dims["chi4"]:
            step = result.coords["step"]
            for k, tw in enumerate(result.coords["tw_step"]):
                lag = step - tw
                ok = (lag > 0) & np.isfinite(chi[k])
                ax.errorbar(lag[ok], chi[k][ok], yerr=result.arrays["chi4_sem"][k][ok], label=f"tw={tw}",
                            capsize=0)
            ax.legend(fontsize="x-small")
        else:
            ok = np.isfinite(chi)
            ax.errorbar(result.coords["lag"][ok], chi[ok], yerr=result.arrays["chi4_sem"][ok])
        ax.set_xscale("log")
        ax.set_xlabel("t")
        ax.set_ylabel("χ4")
        return fig
