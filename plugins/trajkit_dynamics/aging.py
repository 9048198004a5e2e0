"""The aging exponent μ from two-time curves measured at several waiting times.

Three independent estimates from curves ``y_k(t) = F(tw_k, tw_k + t)`` (``F`` = ``msd``, ``self_overlap``
or ``overlap_normalized``):

(a) **collapse** (:func:`fit_mu_collapse`): the μ that minimises the spread of the curves plotted against
    ``x = t / tw^μ``. Each curve is interpolated (linearly in ``ln x``) onto a common grid of ``ln x``;
    the spread is ``S(μ) = Σ_j Σ_k (y_kj − ȳ_j)² / Σ_j Σ_k (y_kj − ȳ)²`` over the grid points ``j``
    covered by at least two curves (``ȳ_j`` the mean at point j, ``ȳ`` the mean of all covered values) —
    the fraction of the curves' variance that the scaling variable does not explain, so a μ cannot win by
    pushing the overlap onto a flat stretch. For ``msd`` the curves are compared as ``ln msd``. The
    collapse in ``t/tw^μ`` holds for ``t ≪ tw`` when μ ≠ 1: restrict it with ``max_ratio`` (t/tw).
(b) **h-form** (:func:`fit_mu_h`): the same minimisation with the scaling variable
    ``ln[h(tw+t)/h(tw)] = s(tw+t) − s(tw)``, ``h(u) = exp(u^(1−μ)/(1−μ))`` (μ → 1: ``h(u) = u``), which
    is exact at every ``t`` for a stationary process run in effective time ``s(t) = t^(1−μ)/(1−μ)``.
(c) **relaxation time** (:func:`fit_mu_tau`): the slope of ``ln τ(tw)`` vs ``ln tw``, where ``τ(tw)`` is
    when the curve, restricted to the same ``max_ratio`` window as (a), crosses a level — ``c·y(tw,tw)``
    for overlaps (τ_c of OBSERVABLES.md), and for the MSD
    (trajkit's own choice) the geometric middle of the range all curves share.

At μ = 0 every scaling variable is the lag ``t`` itself: a stationary process collapses at μ = 0 and has
``τ`` independent of ``tw``. **Regime rule** (:func:`classify_regime`, trajkit's own): *stationary* when
the collapse estimate and, if resolved, the τ estimate are both consistent with μ = 0 — the estimate or
its confidence interval lies within ``tol`` (default 0.1) of 0; otherwise the collapse estimate decides:
*simple* (μ = 1 within ``tol`` or inside its interval), *sub* (μ < 1), *super* (μ > 1). A stationary
run reports no μ (NaN): an exponent of a process that does not age is not a measurement.

**Collapse quality** (:func:`collapse_quality`, trajkit's own): ``S(μ_collapse)`` of (a) — the fraction
of the variance of the rescaled curves, on the ``ln x`` points covered by two or more of them, that the
scaling variable leaves unexplained (0: perfect collapse). Above ``COLLAPSE_MAX_SPREAD`` (0.05) the
curves do not collapse onto one master curve: the regime is ``"unresolved (poor collapse)"`` and
``mu_collapse`` / ``mu_collapse_ci`` are NaN (the minimiser stays in ``mu_collapse_raw``). Noise-free
effective-time processes give S ~ 1e-4; a waiting time whose curve has a different shape gives S ≳ 0.1.

Intervals: percentile bootstrap over replicas (resample replicas with replacement, refit all three).

Plugin ``aging`` (:class:`Aging`, needs an ensemble; 2+ replicas unless ``n_boot = 0``). Parameters: those
of ``overlaps`` (``waiting_times`` / ``n_waiting_times``, ``snap``, ``select``, ``epsilon`` / ``epsilon_factor``,
``epsilon_from`` / ``epsilon_step``, ``allow_nan``), ``observable`` (``msd``, ``self_overlap``,
``overlap_normalized``), ``normalize`` (``none`` | ``noise_D``), ``max_ratio`` (fit
window of (a) and (c): ``t ≤ max_ratio·tw``; none = all lags), ``min_lag``, ``threshold`` (c of (c) for
overlaps, default 1/e), ``n_boot`` (default 200), ``level`` (0.95), ``stationary_tol`` (0.1), ``seed``.

With ``normalize = "noise_D"`` (``observable = msd`` only) the curves are ``Δ(tw, tw+t)/D(tw)``, each
replica's MSD over its own gradient-noise strength ``D(tw)`` read from ``snapshots/metrics/noise_D`` (the
collapse of 1803.06969; an archive without it is refused with how to record it).

On a sweep (the core's ``group_by``, :mod:`trajkit.analysis.grouping`: ``auto`` one result per sweep point,
or metadata keys such as ``model.depth``) every group gets its own μ, intervals and regime: the scalars
become per-group lists and ``mu [G, 3]`` / ``mu_ci [G, 3, 2]`` the table of μ per group.

Result keys. Arrays ``<curve> [K, T]`` and ``<curve>_sem`` over ``(tw_step, step)`` (``curve`` =
``observable``, or ``msd_over_noise_D``), ``tau [K]`` (crossing lags of the mean curves, NaN unresolved),
``mu [3]`` over ``estimate`` (collapse, h_form, tau) and ``mu_ci [3, 2]`` over ``(estimate, bound)``,
``noise_D [R, K]`` (with ``normalize = "noise_D"``); scalars ``mu_collapse``,
``mu_collapse_ci``, ``mu_h``, ``mu_h_ci``, ``mu_tau``, ``mu_tau_ci`` (NaN when stationary), the raw fits
``mu_collapse_raw``, ``mu_h_raw``, ``mu_tau_raw``, ``collapse_quality`` (S at ``mu_collapse_raw``) and
``collapse_threshold``, ``regime``, ``observable``, ``curve``, ``replicas``, ``max_ratio``, ``min_lag``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from trajkit.analysis import Analysis, Param, Result, plotting
from trajkit.analysis.stats import percentile_interval, replica_bootstrap
from trajkit.errors import AnalysisError
from trajkit_dynamics.measure import (
    COMMON_PARAMS,
    MSD_OVER_NOISE_D,
    MSD_OVER_NOISE_D_LABEL,
    NORMALIZE,
    measure_two_time,
)

#: Search range of μ and the coarse scan step before the bounded refinement.
MU_BOUNDS = (-0.5, 2.5)
_SCAN_STEP = 0.05
_GRID_POINTS = 1024
_MIN_COVERED = 16
#: Largest collapse spread S(μ) at which the collapse counts as a collapse (see the module docstring).
COLLAPSE_MAX_SPREAD = 0.05
#: The regime of a collapse whose spread exceeds :data:`COLLAPSE_MAX_SPREAD`.
POOR_COLLAPSE = "unresolved (poor collapse)"


def curves_in_window(tw_steps: np.ndarray, steps: np.ndarray, values: np.ndarray, *,
                     max_ratio: float | None = None, min_lag: float = 0.0,
                     log_values: bool = False) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Split ``values [K, T]`` into per-tw curves ``(tw, lags, y)`` with ``lags > min_lag`` (and
    ``lags ≤ max_ratio·tw``), finite (positive if ``log_values``) values; ``y = ln values`` if asked."""
    out = []
    for k, tw in enumerate(np.asarray(tw_steps)):
        lag = (steps - tw).astype(float)
        y = np.asarray(values[k], dtype=float)
        ok = (lag > min_lag) & np.isfinite(y)
        if max_ratio is not None:
            ok &= lag <= max_ratio * tw
        if log_values:
            ok &= y > 0
        if tw <= 0:
            ok &= False
        y = np.log(y[ok]) if log_values else y[ok]
        out.append((float(tw), lag[ok], y))
    return out


def ln_ratio_variable(tw: float, lags: np.ndarray, mu: float) -> np.ndarray:
    """``ln(t / tw^μ)``."""
    return np.log(lags) - mu * np.log(tw)


def ln_h_variable(tw: float, lags: np.ndarray, mu: float) -> np.ndarray:
    """``ln(s(tw+t) − s(tw))`` for ``s(u) = u^(1−μ)/(1−μ)`` (μ = 1: ``ln u``), computed stably as
    ``(1−μ) ln tw + ln[expm1((1−μ) log1p(t/tw)) / (1−μ)]``."""
    a = 1.0 - mu
    lp = np.log1p(lags / tw)
    if abs(a) < 1e-9:
        return np.log(lp)
    return a * np.log(tw) + np.log(np.expm1(a * lp) / a)


def collapse_spread(curves: Sequence[tuple[np.ndarray, np.ndarray]], n_grid: int = _GRID_POINTS) -> float:
    """Normalised spread ``S`` of curves ``(u_k, y_k)`` (u increasing) on a common grid of ``u``.

    ``inf`` when fewer than 16 grid points (of 1024) are covered by two or more curves or the covered values do not
    vary.
    """
    curves = [(u, y) for u, y in curves if u.size >= 2]
    if len(curves) < 2:
        return float("inf")
    lo = min(float(u[0]) for u, _ in curves)
    hi = max(float(u[-1]) for u, _ in curves)
    if not hi > lo:
        return float("inf")
    grid = np.linspace(lo, hi, n_grid)
    ys = np.full((len(curves), n_grid), np.nan)
    for k, (u, y) in enumerate(curves):
        inside = (grid >= u[0]) & (grid <= u[-1])
        ys[k, inside] = np.interp(grid[inside], u, y)
    covered = np.sum(np.isfinite(ys), axis=0) >= 2
    if covered.sum() < _MIN_COVERED:
        return float("inf")
    ys = ys[:, covered]
    mask = np.isfinite(ys)
    point_mean = np.nansum(ys, axis=0) / mask.sum(axis=0)
    within = np.nansum((ys - point_mean) ** 2)
    total = np.nansum((ys - np.nanmean(ys)) ** 2)
    return float(within / total) if total > 0 else float("inf")


def _minimise(spread_at, bounds: tuple[float, float] = MU_BOUNDS) -> float:
    scan = np.arange(bounds[0], bounds[1] + 1e-9, _SCAN_STEP)
    values = np.array([spread_at(m) for m in scan])
    if not np.isfinite(values).any():
        return float("nan")
    best = float(scan[int(np.nanargmin(values))])
    lo, hi = max(bounds[0], best - _SCAN_STEP), min(bounds[1], best + _SCAN_STEP)
    res = minimize_scalar(spread_at, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(res.x) if res.fun <= spread_at(best) else best


def _spread_for(curves, variable):
    def spread_at(mu: float) -> float:
        parts = []
        for tw, lags, y in curves:
            u = variable(tw, lags, mu)
            ok = np.isfinite(u)
            parts.append((u[ok], y[ok]))
        return collapse_spread(parts)

    return spread_at


def fit_mu_collapse(curves: list[tuple[float, np.ndarray, np.ndarray]],
                    bounds: tuple[float, float] = MU_BOUNDS) -> float:
    """μ minimising the spread of ``y`` against ``ln(t/tw^μ)`` for curves ``(tw, lags, y)``."""
    return _minimise(_spread_for(curves, ln_ratio_variable), bounds)


def collapse_quality(curves: list[tuple[float, np.ndarray, np.ndarray]], mu: float) -> float:
    """The spread ``S(μ)`` of curves ``(tw, lags, y)`` against ``ln(t/tw^μ)`` (0 perfect, inf unmeasurable)."""
    if not np.isfinite(mu):
        return float("inf")
    return float(_spread_for(curves, ln_ratio_variable)(mu))


def fit_mu_h(curves: list[tuple[float, np.ndarray, np.ndarray]],
             bounds: tuple[float, float] = MU_BOUNDS) -> float:
    """μ minimising the spread of ``y`` against ``ln[h(tw+t)/h(tw)]`` for curves ``(tw, lags, y)``."""
    return _minimise(_spread_for(curves, ln_h_variable), bounds)


def crossing_level(curves: list[tuple[float, np.ndarray, np.ndarray]], increasing: bool,
                   c: float, y0: np.ndarray | None = None) -> np.ndarray:
    """Per-curve crossing level: ``c·y0[k]`` for decaying curves (y0 default 1), the geometric middle of
    the shared range for increasing ones (curves given as ``ln y``: the arithmetic middle)."""
    if not increasing:
        base = np.ones(len(curves)) if y0 is None else np.asarray(y0, dtype=float)
        return c * base
    lo = max((float(np.min(y)) for _, _, y in curves if y.size), default=np.nan)
    hi = min((float(np.max(y)) for _, _, y in curves if y.size), default=np.nan)
    return np.full(len(curves), 0.5 * (lo + hi) if hi > lo else np.nan)


def crossing_times(curves: list[tuple[float, np.ndarray, np.ndarray]], levels: np.ndarray,
                   increasing: bool) -> np.ndarray:
    """First lag at which each curve crosses its level (linear interpolation; NaN if unresolved)."""
    from trajkit_dynamics.relaxation import relaxation_time

    taus = np.full(len(curves), np.nan)
    for k, (_, lags, y) in enumerate(curves):
        if not np.isfinite(levels[k]) or y.size == 0:
            continue
        sign = -1.0 if increasing else 1.0
        taus[k], _ = relaxation_time(lags, sign * y, 1.0, q0=sign * levels[k])
    return taus


def fit_mu_tau(tw: np.ndarray, tau: np.ndarray) -> float:
    """Slope of ``ln τ`` vs ``ln tw`` over resolved points (NaN with fewer than two)."""
    tw = np.asarray(tw, dtype=float)
    tau = np.asarray(tau, dtype=float)
    ok = np.isfinite(tau) & (tau > 0) & (tw > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(tw[ok]), np.log(tau[ok]), 1)[0])


def _consistent(value: float, ci: tuple[float, float], target: float, tol: float) -> bool:
    if not np.isfinite(value):
        return False
    if abs(value - target) <= tol:
        return True
    lo, hi = ci
    return bool(np.isfinite(lo) and np.isfinite(hi) and lo - tol <= target <= hi + tol)


def classify_regime(mu_collapse: float, mu_collapse_ci: tuple[float, float], mu_tau: float,
                    mu_tau_ci: tuple[float, float], tol: float = 0.1, collapse_spread_value: float | None = None,
                    max_spread: float = COLLAPSE_MAX_SPREAD) -> str:
    """``"stationary" | "simple" | "sub" | "super" | "undetermined" | POOR_COLLAPSE`` by the rule in the
    module docstring; ``collapse_spread_value`` (S at ``mu_collapse``, None: not checked) above
    ``max_spread`` gives :data:`POOR_COLLAPSE`."""
    if not np.isfinite(mu_collapse):
        return "undetermined"
    if collapse_spread_value is not None and not collapse_spread_value <= max_spread:
        return POOR_COLLAPSE
    tau_flat = (not np.isfinite(mu_tau)) or _consistent(mu_tau, mu_tau_ci, 0.0, tol)
    if _consistent(mu_collapse, mu_collapse_ci, 0.0, tol) and tau_flat:
        return "stationary"
    if _consistent(mu_collapse, mu_collapse_ci, 1.0, tol):
        return "simple"
    return "sub" if mu_collapse < 1.0 else "super"


def _nanmean0(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=0)


def _estimates(tw_steps: np.ndarray, steps: np.ndarray, curves_kt: np.ndarray, *, log_values: bool,
               decaying: bool, max_ratio: float | None, min_lag: float, c: float,
               bounds: tuple[float, float]) -> tuple[float, float, float, np.ndarray, list]:
    ratio_curves = curves_in_window(tw_steps, steps, curves_kt, max_ratio=max_ratio, min_lag=min_lag,
                                    log_values=log_values)
    all_curves = curves_in_window(tw_steps, steps, curves_kt, min_lag=min_lag, log_values=log_values)
    mu_c = fit_mu_collapse(ratio_curves, bounds)
    mu_h = fit_mu_h(all_curves, bounds)
    levels = crossing_level(ratio_curves, increasing=not decaying, c=c)
    taus = crossing_times(ratio_curves, levels, increasing=not decaying)
    return mu_c, mu_h, fit_mu_tau(tw_steps, taus), taus, ratio_curves


def estimate_mu(tw_steps: np.ndarray, steps: np.ndarray, values: np.ndarray, *, observable: str = "msd",
                max_ratio: float | None = None, min_lag: float = 0.0, c: float = float(np.exp(-1.0)),
                n_boot: int = 200, level: float = 0.95, tol: float = 0.1,
                bounds: tuple[float, float] = MU_BOUNDS,
                rng: np.random.Generator | None = None) -> dict[str, object]:
    """All three μ estimates with bootstrap intervals over replicas, and the regime.

    ``values [R, K, T]`` are per-replica two-time curves of ``observable`` (``msd`` is increasing and
    compared in ``ln``; ``self_overlap`` / ``overlap_normalized`` decay and cross ``c·y(tw,tw)``, with
    ``y(tw,tw) = 1``). The point estimates use the replica mean; each bootstrap replicate resamples
    replicas with replacement (``n_boot = 0``: no intervals). Returns ``mu_collapse``, ``mu_h``,
    ``mu_tau`` (NaN when stationary; ``mu_collapse`` also NaN for a poor collapse), their ``*_ci``, the
    unconditioned fits ``*_raw``, ``collapse_quality`` and ``collapse_threshold``, ``tau [K]`` (crossing
    lags of the mean curves) and ``regime``.
    """
    values = np.asarray(values, dtype=float)
    log_values = observable == "msd"
    kw = dict(log_values=log_values, decaying=not log_values, max_ratio=max_ratio, min_lag=min_lag, c=c,
              bounds=bounds)
    mean = _nanmean0(values)
    mu_c, mu_h, mu_t, taus, ratio_curves = _estimates(tw_steps, steps, mean, **kw)
    quality = collapse_quality(ratio_curves, mu_c)
    boot = np.full((n_boot, 3), np.nan)
    if n_boot:
        boot = replica_bootstrap(lambda i: _estimates(tw_steps, steps, _nanmean0(values[i]), **kw)[:3],
                                 values.shape[0], n_boot, rng if rng is not None else 0)
    cis = [percentile_interval(boot[:, i], level) for i in range(3)]
    regime = classify_regime(mu_c, cis[0], mu_t, cis[2], tol, collapse_spread_value=quality)
    out: dict[str, object] = {"regime": regime, "tau": taus, "collapse_quality": quality,
                              "collapse_threshold": COLLAPSE_MAX_SPREAD}
    for i, (name, v) in enumerate((("mu_collapse", mu_c), ("mu_h", mu_h), ("mu_tau", mu_t))):
        unmeasured = regime == "stationary" or (regime == POOR_COLLAPSE and name == "mu_collapse")
        out[name] = float("nan") if unmeasured else v
        out[f"{name}_ci"] = [float("nan"), float("nan")] if unmeasured else list(cis[i])
        out[f"{name}_raw"] = v
    return out


class Aging(Analysis):
    """Aging exponent μ by collapse, h-form and τ(tw) (formulas and the regime rule in the module docstring)."""

    name = "aging"
    version = "1.0.0"
    description = "Aging exponent mu from the t/tw^mu collapse, the h(tw+t)/h(tw) form and tau(tw); regime."
    needs = "ensemble"
    params = (*COMMON_PARAMS,
              Param("observable", "str", default="msd", choices=("msd", "self_overlap", "overlap_normalized"),
                    help="two-time curve whose collapse gives mu"),
              Param("max_ratio", "float", default=None, help="fit window of the collapse and tau: t <= max_ratio*tw",
                    check=lambda v: v > 0, valid="> 0"),
              Param("min_lag", "float", default=0.0, min=0, help="ignore lags t <= min_lag"),
              Param("threshold", "float", default=float(np.exp(-1.0)),
                    help="level c of tau(tw) for overlaps (crossing of c*y(tw,tw))", check=lambda v: 0 < v < 1,
                    valid="in (0, 1)"),
              Param("n_boot", "int", default=200, min=0, help="bootstrap replicates over replicas (0: no intervals)"),
              Param("level", "float", default=0.95, help="confidence level", check=lambda v: 0 < v < 1,
                    valid="in (0, 1)"),
              Param("stationary_tol", "float", default=0.1, min=0, help="tolerance of the regime rule"),
              Param("seed", "int", default=0, help="seed of the bootstrap"),
              NORMALIZE)

    def compute(self, data: Any, params: dict[str, Any], ctx: Any) -> Result:
        r = len(getattr(data, "archives", [data]))
        if params["n_boot"] and r < 2:
            raise AnalysisError(f"the bootstrap over replicas needs at least 2 replicas (got {r}); pass more "
                                "replicas, or n_boot=0 for estimates without intervals")
        obs = params["observable"]
        if params["normalize"] == "noise_D" and obs != "msd":
            raise AnalysisError(f"normalize=noise_D rescales the MSD Δ(tw, tw+t) by D(tw); observable={obs} is not "
                                "rescaled: pass observable=msd or normalize=none")
        sums = ("dot", "sq", "quart") + (("theta",) if obs == "self_overlap" else ())
        tt = measure_two_time(data, params, ctx, sums=sums)
        if tt.tw_step.size < 2:
            raise AnalysisError("aging needs at least 2 waiting times; pass n_waiting_times=n (n >= 2) or "
                                "waiting_times as a list of snapshot steps")
        curve = MSD_OVER_NOISE_D if params["normalize"] == "noise_D" else obs     # the curves that collapse
        values = tt.values[curve]
        est = estimate_mu(tt.tw_step, tt.steps, values, observable=obs, max_ratio=params["max_ratio"],
                          min_lag=params["min_lag"], c=params["threshold"], n_boot=params["n_boot"],
                          level=params["level"], tol=params["stationary_tol"],
                          rng=np.random.default_rng(params["seed"]))
        mean = _nanmean0(values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sem = np.nanstd(values, axis=0, ddof=1) / np.sqrt(r) if r >= 2 else np.full_like(mean, np.nan)
        dims = ("tw_step", "step")
        arrays = {curve: (mean, dims), f"{curve}_sem": (sem, dims),
                  "tau": (np.asarray(est.pop("tau")), ("tw_step",))}
        scalars = dict(est, observable=obs, replicas=r, n_selected=tt.n, masked_steps=tt.masked_steps,
                       max_ratio=params["max_ratio"], min_lag=params["min_lag"], curve=curve)
        if tt.noise_d.size:
            arrays["noise_D"] = (tt.noise_d, ("replica", "tw_step"))
        # the three μ with their intervals as arrays: per group, a [G, 3] table (group.csv / mu CSV)
        names = ("mu_collapse", "mu_h", "mu_tau")
        arrays["mu"] = (np.array([scalars[n] for n in names], dtype=float), ("estimate",))
        arrays["mu_ci"] = (np.array([scalars[f"{n}_ci"] for n in names], dtype=float), ("estimate", "bound"))
        coords = {"tw_step": tt.tw_step, "step": tt.steps, "estimate": np.array(["collapse", "h_form", "tau"]),
                  "bound": np.array(["lo", "hi"])}
        return Result(arrays=arrays, coords=coords, scalars=scalars)

    def plot(self, result: Result, fig: Any) -> Any:
        sc = result.scalars
        obs, curve = sc["observable"], sc.get("curve", sc["observable"])
        y, sem, step = result.arrays[curve], result.arrays.get(f"{curve}_sem"), result.coords["step"]
        mu = sc.get("mu_collapse")
        mu = sc.get("mu_collapse_raw") if not plotting.finite(mu) else mu
        mu = float(mu) if plotting.finite(mu) else 0.0
        max_ratio, min_lag = sc.get("max_ratio"), sc.get("min_lag") or 0.0
        ax1, ax2, ax3 = fig.subplots(1, 3)
        tws = result.coords["tw_step"]
        for k, tw in enumerate(tws):
            lag = (step - tw).astype(float)
            after = lag > 0
            line = plotting.band(ax1, lag[after], y[k][after], None if sem is None else sem[k][after],
                                 label=plotting.tw_label(tw))
            fit = after & (lag > min_lag) & (lag <= (max_ratio * tw if max_ratio else np.inf))
            if tw > 0:
                plotting.band(ax2, lag[fit] / float(tw) ** mu, y[k][fit], None if sem is None else sem[k][fit],
                              color=line.get_color(), label=plotting.tw_label(tw))
        symbol = plotting.SYMBOLS.get(obs, obs)
        for ax in (ax1, ax2):
            ax.set_xscale("log")
            if obs == "msd":
                ax.set_yscale("log")
            plotting.legend(ax)
        ax1.set_ylabel(MSD_OVER_NOISE_D_LABEL if curve == MSD_OVER_NOISE_D else plotting.LABELS.get(obs, obs))
        ax2.set_ylabel(f"{symbol}($t_w$, $t_w$+t)" + ("/$D(t_w)$" if curve == MSD_OVER_NOISE_D else "")
                       + " (inside the fit window)")
        ax1.set_xlabel(plotting.LAG)
        why = " (stationary)" if sc.get("regime") == "stationary" else ""
        ax1.set_title(f"$\\mu_h$ (h-form, all lags) = {plotting.fmt_ci(sc.get('mu_h'), sc.get('mu_h_ci'))}{why}",
                      fontsize=8)
        ax2.set_xlabel(f"$(t - t_w)/t_w^{{\\mu}}$, $\\mu$ = {plotting.fmt(mu)}")
        ax2.set_title(_collapse_title(sc), fontsize=8)
        tau = result.arrays.get("tau")
        ok = np.isfinite(tau) & (tws > 0) if tau is not None else np.zeros(tws.size, bool)
        if ok.any():
            ax3.loglog(tws[ok], tau[ok], "o", label=r"$\tau(t_w)$")
        if ok.sum() >= 2 and plotting.finite(sc.get("mu_tau_raw")):
            slope = float(sc["mu_tau_raw"])
            x = tws[ok].astype(float)
            amp = np.exp(np.mean(np.log(tau[ok]) - slope * np.log(x)))
            ax3.loglog(x, amp * x ** slope, "--", label=f"$\\tau \\propto t_w^{{{slope:.3g}}}$")
        level = ("geometric middle of the shared range" if obs == "msd"
                 else f"{symbol} = {plotting.fmt(result.params.get('threshold'))}·{symbol}($t_w$, $t_w$)")
        ax3.set_xlabel(r"$t_w$ [steps]")
        ax3.set_ylabel(f"$\\tau(t_w)$ [steps] (crossing of {level})")
        ax3.set_title(f"$\\mu_\\tau$ = {plotting.fmt_ci(sc.get('mu_tau'), sc.get('mu_tau_ci'))}{why} "
                      f"({int(ok.sum())} of {tws.size} $\\tau$ resolved)", fontsize=8)
        plotting.legend(ax3)
        window = f"t ≤ {plotting.fmt(max_ratio)}·t_w" if max_ratio else "all lags"
        plotting.caption(fig, plotting.describe(result, [
            f"observable {obs}; collapse and τ fitted on {window}"
            + (f", t > {plotting.fmt(min_lag)}" if min_lag else ""),
            f"bands: ± s.e. over replicas; intervals: {int(result.params.get('n_boot', 0))} bootstrap resamples "
            f"at level {plotting.fmt(result.params.get('level'))}"]))
        return fig


def _collapse_title(sc: dict[str, Any]) -> str:
    """Title of the collapse panel: μ with its interval, the collapse quality S and the regime."""
    s_val, s_max = sc.get("collapse_quality"), sc.get("collapse_threshold", COLLAPSE_MAX_SPREAD)
    regime = sc.get("regime")
    quality = f"S = {plotting.fmt(s_val, 2)}"
    if regime == POOR_COLLAPSE:
        return (f"no collapse at $\\mu$ = {plotting.fmt(sc.get('mu_collapse_raw'))}: {quality} > {plotting.fmt(s_max)}"
                f"\nregime: {regime}")
    if regime == "stationary":
        return (f"collapse at $\\mu$ = 0 (fit {plotting.fmt(sc.get('mu_collapse_raw'))}), {quality} ≤ "
                f"{plotting.fmt(s_max)}\nregime: stationary (no aging exponent)")
    return (f"collapse $\\mu$ = {plotting.fmt_ci(sc.get('mu_collapse'), sc.get('mu_collapse_ci'))}, {quality}"
            + (f" ≤ {plotting.fmt(s_max)}" if plotting.finite(s_val) else "") + f"\nregime: {regime}")
