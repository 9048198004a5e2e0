"""Relaxation times, τ(T), and time–temperature superposition.

- ``τ_c(tw)`` (:func:`relaxation_time`): the first lag ``t`` with ``Q(tw, tw+t) < c·Q(tw, tw)``, linearly
  interpolated in ``t`` between the two snapshots that bracket the crossing (``tau_rule = "interpolate"``,
  default) or the first snapshot past it (``tau_rule = "first_below"``, as the code of 2405.13098).
  **Tie convention**: the comparison is strict, so a snapshot exactly at ``c·Q(tw, tw)`` has not crossed;
  interpolation then places τ at that snapshot (the line through it meets the level there), and
  ``first_below`` at the next one. It is *unresolved* when the
  curve is already below ``c·Q(tw,tw)`` at the first snapshot after ``tw`` (the crossing falls before
  the second snapshot after ``tw``: flag −1, "faster than the schedule resolves"), never drops below
  it (flag +1, "slower than the run") or gives τ < ``min_tau`` (flag −2; 2405.13098 uses 4 steps);
  unresolved times are NaN, never numbers.
- ``tau_estimator``: ``mean_curve`` (default) takes τ of the replica-mean Q; ``per_replica`` takes τ of each
  replica's Q (:func:`replica_tau_summary`): ``tau`` the mean and ``tau_std`` the standard deviation over
  the resolved replicas, ``tau_resolved`` their number, ``tau_flag`` 0 when any is resolved; τ(T) then
  uses those means, and its slope is fitted on the pooled ``(T, τ_r)`` values of every resolved replica.
- Free diffusion (Langevin runs, :mod:`trajkit_dynamics.free_diffusion`): ``self_overlap_free``, the
  reference ``erf(ε/sqrt(4Dt))`` with ``D = Tη/P``, averaged over replicas' ε, drawn dashed beside Q.
- ``τ(T)`` (:func:`log_log_slope`): slope of ``ln τ`` vs ``ln T`` over a range of (high) temperatures;
  for overdamped Langevin on a flat loss ``D = Tη/P`` and the slope is −1.
- Time–temperature superposition: ``Q(t)`` at each temperature against ``t/τe(T)``; the power-law
  exponent is the slope of ``ln Q`` vs ``ln(t/τe)`` over a window (default ``1 ≤ t/τe ≤ 10³``) at the
  highest temperature (−1/2 for diffusion, where ``Q ≈ ε/sqrt(πDt)``).

Plugin ``relaxation`` (:class:`Relaxation`, needs an ensemble). Parameters: those of ``overlaps``
(``waiting_times`` / ``n_waiting_times``, ``snap``, ``select``, ``epsilon`` / ``epsilon_factor``, ``allow_nan``),
``thresholds`` (values of c, default 0.9 and 1/e), ``group_by`` (``auto``: split by
``dynamics.temperature`` when the runs have two or more temperatures; ``none``; or a metadata key, which
must then take two or more values), ``tau_threshold`` (c of τ(T), default 1/e), ``t_range`` (temperature
range [lo, hi] of the slope, default all T > 0), ``tts_window`` (``[lo, hi]`` of t/τe, default 1, 1000),
``level`` (confidence level, 0.95), ``tau_rule``, ``tau_estimator``, ``min_tau``, and the ε options of
``overlaps`` (``epsilon_from``, ``epsilon_step``). τ(T) and the TTS curves use the first waiting time.
Intervals: from the replicas by a bootstrap (``n_boot``, ``seed``) when every group has two or more
replicas, else the Student-t interval of the regression.

Result keys. Arrays ``self_overlap [K, T]`` and ``self_overlap_sem`` over ``(tw_step, step)``,
``tau [K, C]`` and ``tau_flag [K, C]`` over ``(tw_step, threshold)`` (flag 0 resolved, −1 faster than the
schedule resolves, +1 slower than the run, −2 below ``min_tau``; τ NaN unless resolved) — for a grouped
ensemble these come per group: ``tau [G, K, C]``, ``tau_flag [G, K, C]``, ``self_overlap [G, K, T]`` with
leading ``temperature`` (the group values). With ``tau_estimator = per_replica`` also ``tau_std`` and
``tau_resolved`` (like ``tau``); for Langevin runs ``self_overlap_free`` (like ``self_overlap``) and the
scalar ``free_diffusion_D`` (a list per temperature when grouped). Grouped also: ``tau_T [G]``,
``tau_T_flag [G]`` (per_replica: ``tau_T_std [G]``, ``tau_T_resolved [G]``), ``tts_x [G, T]`` (t/τe(T)),
``tts_q [G, T]`` over ``(temperature, step)``; scalars ``tau_T_slope``, ``tau_T_slope_ci``, ``tau_T0``
(τ at T = 0, None when absent or unresolved), ``tts_exponent``, ``tts_exponent_ci``, ``tts_temperature``,
the fit windows ``tts_fit_window`` (asked, ``[lo, hi]`` of t/τe), ``tts_fit_range`` (first and last t/τe
actually inside it), ``tts_fit_points``, ``tau_T_range`` (``[lo, hi]`` temperatures of the slope) and
``tau_T_points`` (resolved τe inside it).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from trajkit.analysis import Analysis, Param, Result, plotting
from trajkit.analysis.stats import (
    log_log_slope,
    percentile_interval,
    replica_bootstrap,
    replica_mean_sem,
    window_slope,
)
from trajkit.errors import AnalysisError
from trajkit_dynamics.free_diffusion import FREE_LABEL, ensemble_diffusion, free_self_overlap_grid
from trajkit_dynamics.measure import COMMON_PARAMS, RANGE_VALID, TwoTime, is_range, measure_two_time

#: Flag values of :func:`relaxation_time`.
RESOLVED, TOO_FAST, TOO_SLOW, BELOW_MIN_TAU = 0, -1, 1, -2
#: ``tau_rule``: where between snapshots the crossing is placed.
TAU_RULES = ("interpolate", "first_below")
#: ``tau_estimator``: τ of the replica-mean curve, or τ of each replica.
TAU_ESTIMATORS = ("mean_curve", "per_replica")


def relaxation_time(lags: np.ndarray, q: np.ndarray, c: float, q0: float | None = None, *,
                    rule: str = "interpolate", min_tau: float | None = None) -> tuple[float, int]:
    """``(τ_c, flag)`` for one curve ``q [T]`` at lags ``lags [T]`` (``lags > 0``, increasing).

    ``q0`` is ``Q(tw, tw)`` (default 1, the value of the self-overlap at zero lag). Non-finite entries of
    ``q`` are skipped. The level is crossed at the first lag with ``q < c·q0`` (strictly: a snapshot exactly
    at the level is not past it). ``rule = "interpolate"``: τ linearly interpolated between that lag and the
    previous one; ``"first_below"``: τ is that lag. Flag 0: resolved; −1: already below at the first lag
    (unresolved, too fast); +1: never below (unresolved, too slow); −2: τ < ``min_tau`` (unresolved). τ is
    NaN unless resolved.
    """
    lags = np.asarray(lags, dtype=float)
    q = np.asarray(q, dtype=float)
    ok = np.isfinite(q) & (lags > 0)
    lags, q = lags[ok], q[ok]
    level = c * (1.0 if q0 is None else float(q0))
    below = np.flatnonzero(q < level)
    if below.size == 0:
        return float("nan"), TOO_SLOW
    j = int(below[0])
    if j == 0:
        return float("nan"), TOO_FAST
    if rule == "first_below":
        tau = float(lags[j])
    else:
        t0, t1, y0, y1 = lags[j - 1], lags[j], q[j - 1], q[j]
        tau = float(t0 + (level - y0) * (t1 - t0) / (y1 - y0))
    if min_tau is not None and tau < min_tau:
        return float("nan"), BELOW_MIN_TAU
    return tau, RESOLVED


def relaxation_times(tw_steps: np.ndarray, steps: np.ndarray, q: np.ndarray, thresholds: np.ndarray,
                     q0: np.ndarray | None = None, *, rule: str = "interpolate",
                     min_tau: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``τ [K, C]`` and ``flag [K, C]`` (int8) for two-time curves ``q [K, T]`` on ``steps [T]``.

    Row k uses the snapshots with ``step > tw_steps[k]`` at lags ``step − tw``; ``q0 [K]`` defaults to 1;
    ``rule`` and ``min_tau`` as in :func:`relaxation_time`.
    """
    tw_steps = np.asarray(tw_steps)
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=float))
    tau = np.full((tw_steps.size, thresholds.size), np.nan)
    flag = np.zeros((tw_steps.size, thresholds.size), dtype=np.int8)
    for k, tw in enumerate(tw_steps):
        after = steps > tw
        for i, c in enumerate(thresholds):
            tau[k, i], flag[k, i] = relaxation_time(steps[after] - tw, q[k, after], c,
                                                    None if q0 is None else q0[k], rule=rule, min_tau=min_tau)
    return tau, flag


def replica_tau_summary(tau: np.ndarray, flag: np.ndarray) -> dict[str, np.ndarray]:
    """Per-replica relaxation times ``tau, flag [R, ...]`` summarised over replicas (``tau_estimator =
    per_replica``): ``tau`` the mean and ``tau_std`` the standard deviation (ddof 1; NaN with fewer than two)
    over the resolved replicas, ``tau_resolved`` their number, and ``tau_flag`` 0 when one or more is
    resolved, else +1 when a replica is too slow, else the replicas' (smallest) fast flag."""
    tau = np.asarray(tau, dtype=float)
    flag = np.asarray(flag)
    resolved = flag == RESOLVED
    n = resolved.sum(axis=0)
    vals = np.where(resolved, tau, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.where(n > 0, np.nanmean(vals, axis=0), np.nan)
        std = np.where(n >= 2, np.nanstd(vals, axis=0, ddof=1), np.nan)
    summary_flag = np.where(n > 0, RESOLVED, np.where((flag == TOO_SLOW).any(axis=0), TOO_SLOW, flag.min(axis=0)))
    return {"tau": mean, "tau_std": std, "tau_resolved": n.astype(np.int64), "tau_flag": summary_flag.astype(np.int8)}


def _group_key(data: Any, choice: str) -> str | None:
    if choice == "none":
        return None
    if choice == "auto":
        try:
            temps = data.metadata("dynamics.temperature")
        except AnalysisError:
            return None
        return "dynamics.temperature" if len({float(t) for t in temps}) >= 2 else None
    return choice


def _tau_of_curve(tt: TwoTime, q: np.ndarray, k: int, c: float, rule: dict[str, Any]) -> tuple[float, int]:
    """τ_c of curve ``q [K, T]`` at waiting time ``k`` (``rule``: ``tau_rule`` and ``min_tau``)."""
    after = tt.steps > tt.tw_step[k]
    return relaxation_time(tt.steps[after] - tt.tw_step[k], q[k, after], c, **rule)


def _taus(tt: TwoTime, mean: np.ndarray, thresholds: np.ndarray, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """``tau``, ``tau_flag`` ``[K, C]`` of the mean curve ``mean [K, T]``, or (``tau_estimator = per_replica``)
    :func:`replica_tau_summary` of every replica's τ plus ``tau_replicas [R, K, C]``."""
    rule = dict(rule=params["tau_rule"], min_tau=params["min_tau"])
    if params["tau_estimator"] == "mean_curve":
        tau, flag = relaxation_times(tt.tw_step, tt.steps, mean, thresholds, **rule)
        return {"tau": tau, "tau_flag": flag}
    per = [relaxation_times(tt.tw_step, tt.steps, q, thresholds, **rule) for q in tt.values["self_overlap"]]
    return replica_tau_summary(np.stack([t for t, _ in per]), np.stack([f for _, f in per]))


class Relaxation(Analysis):
    """Relaxation times τ_c(tw), τ(T) and time–temperature superposition (formulas in the module docstring)."""

    name = "relaxation"
    version = "1.0.0"
    description = "Relaxation times tau_c(tw) of the self-overlap; tau(T) slope and time-temperature superposition."
    needs = "ensemble"
    params = (*COMMON_PARAMS,
              Param("thresholds", "floats", default=[0.9, float(np.exp(-1.0))],
                    help="levels c of tau_c: first t with Q(tw, tw+t) < c Q(tw, tw)", check=lambda v: all(
                        0 < x < 1 for x in (v if isinstance(v, list) else [v])), valid="each in (0, 1)"),
              Param("group_by", "str", default="auto",
                    help="auto (dynamics.temperature if it varies), none, or a metadata key"),
              Param("tau_threshold", "float", default=float(np.exp(-1.0)), help="c of tau(T) and the TTS scale",
                    check=lambda v: 0 < v < 1, valid="in (0, 1)"),
              Param("t_range", "floats", default=None, help="[lo, hi] temperatures of the tau(T) slope",
                    check=is_range, valid=RANGE_VALID),
              Param("tts_window", "floats", default=[1.0, 1000.0], help="[lo, hi] of t/tau_e for the exponent",
                    check=is_range, valid=RANGE_VALID),
              Param("level", "float", default=0.95, help="confidence level", check=lambda v: 0 < v < 1,
                    valid="in (0, 1)"),
              Param("n_boot", "int", default=200, min=0, help="bootstrap replicates over replicas (0: none)"),
              Param("seed", "int", default=0, help="seed of the bootstrap"),
              Param("tau_rule", "str", default="interpolate", choices=TAU_RULES,
                    help="interpolate: linear between the snapshots around the crossing; first_below: the "
                         "first snapshot with Q < c Q(tw, tw)"),
              Param("tau_estimator", "str", default="mean_curve", choices=TAU_ESTIMATORS,
                    help="mean_curve: tau of the replica-mean Q; per_replica: tau of each replica, mean and std, "
                         "tau(T) slope fitted on the pooled replica values"),
              Param("min_tau", "float", default=None, min=0,
                    help="relaxation times below it (steps) are reported unresolved (flag -2)"))

    def compute(self, data: Any, params: dict[str, Any], ctx: Any) -> Result:
        thresholds = np.atleast_1d(np.asarray(params["thresholds"], dtype=float))
        key = _group_key(data, params["group_by"])
        if key is None:
            tt = measure_two_time(data, params, ctx, sums=("sq", "theta"))
            mean, sem = replica_mean_sem(tt.values["self_overlap"])
            dims = ("tw_step", "threshold")
            arrays = {"self_overlap": (mean, ("tw_step", "step")), "self_overlap_sem": (sem, ("tw_step", "step"))}
            arrays.update({k: (v, dims) for k, v in _taus(tt, mean, thresholds, params).items()})
            scalars = {"n_selected": tt.n, "replicas": tt.replicas, "masked_steps": tt.masked_steps}
            d = ensemble_diffusion(getattr(data, "archives", [data]))
            if d is not None:
                arrays["self_overlap_free"] = (free_self_overlap_grid(tt.tw_step, tt.steps, tt.epsilon, d),
                                               ("tw_step", "step"))
                scalars["free_diffusion_D"] = d
            return Result(arrays=arrays, coords={"tw_step": tt.tw_step, "step": tt.steps, "threshold": thresholds},
                          scalars=scalars)
        groups = data.groups(key)
        if len(groups) < 2:
            raise AnalysisError(f"group_by={key!r}: all runs have the same value ({next(iter(groups))!r}); "
                                "tau(T) needs two or more groups (record a sweep, or use group_by=none)")
        try:
            temps = np.array([float(g) for g in groups], dtype=float)
        except (TypeError, ValueError):
            raise AnalysisError(f"group_by={key!r}: values {list(groups)} are not numbers") from None
        return self._grouped(list(groups.values()), temps, thresholds, params, ctx)

    def _grouped(self, groups: list[Any], temps: np.ndarray, thresholds: np.ndarray, params: dict[str, Any],
                 ctx: Any) -> Result:
        c = float(params["tau_threshold"])
        per_replica = params["tau_estimator"] == "per_replica"
        rule = dict(rule=params["tau_rule"], min_tau=params["min_tau"])
        tts = [measure_two_time(g, params, ctx, sums=("sq", "theta")) for g in groups]
        ref = tts[0]
        for tt in tts[1:]:
            if not (np.array_equal(tt.steps, ref.steps) and np.array_equal(tt.tw_step, ref.tw_step)):
                raise AnalysisError("groups differ in snapshot steps or waiting times; record the sweep with one "
                                    "schedule")
        q_mean = np.stack([replica_mean_sem(tt.values["self_overlap"])[0] for tt in tts])     # [G, K, T]
        taus = [_taus(tt, q, thresholds, params) for tt, q in zip(tts, q_mean, strict=True)]
        # τ_e(T) at the first waiting time: of the mean curve, or per replica ([R_g] each) and their mean
        tau_T = np.array([_tau_of_curve(ref, q, 0, c, rule) for q in q_mean])                  # [G, 2]
        rep_tau: list[np.ndarray] = []
        if per_replica:
            per = [np.array([_tau_of_curve(ref, q, 0, c, rule) for q in tt.values["self_overlap"]]) for tt in tts]
            summary = [replica_tau_summary(p[:, 0], p[:, 1].astype(np.int8)) for p in per]
            rep_tau = [np.where(p[:, 1] == RESOLVED, p[:, 0], np.nan) for p in per]        # [R_g] each
            tau_T = np.array([[float(sm["tau"]), int(sm["tau_flag"])] for sm in summary])
        lag = (ref.steps - ref.tw_step[0]).astype(float)
        after = lag > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            tts_x = np.where(after[None, :], lag[None, :] / tau_T[:, :1], np.nan)
        tts_q = np.where(after[None, :], q_mean[:, 0, :], np.nan)
        lo, hi = params["t_range"] or [float(np.min(temps[temps > 0], initial=np.inf)), float(np.max(temps))]
        in_range = (temps >= lo) & (temps <= hi) & (temps > 0)
        level = params["level"]

        def tau_slope(tau_g: np.ndarray, rep: list[np.ndarray]) -> tuple[float, float, tuple[float, float]]:
            """ln τ vs ln T over ``in_range``: on the group values, or on the pooled replica values."""
            if not per_replica:
                return log_log_slope(temps[in_range], tau_g[in_range], level)
            xs = np.concatenate([np.full(r.size, t) for t, r, u in zip(temps, rep, in_range, strict=True) if u])
            ys = np.concatenate([r for r, u in zip(rep, in_range, strict=True) if u])
            return log_log_slope(xs, ys, level)

        slope, _, slope_ci = tau_slope(tau_T[:, 0], rep_tau)
        hot = int(np.argmax(temps))
        window = tuple(params["tts_window"])
        expo, expo_ci, n_fit = window_slope(tts_x[hot], tts_q[hot], window, level)
        used = (tts_x[hot] >= window[0]) & (tts_x[hot] <= window[1]) & np.isfinite(tts_q[hot]) & (tts_q[hot] > 0)
        fit_range = [float(tts_x[hot][used].min()), float(tts_x[hot][used].max())] if used.any() else [None, None]
        t_used = in_range & np.isfinite(tau_T[:, 0]) & (tau_T[:, 0] > 0)
        reps = [tt.replicas for tt in tts]
        if params["n_boot"] and min(reps) >= 2:
            def slope_and_exponent(*idx: np.ndarray) -> list[float]:
                """τ(T) slope and TTS exponent with every group's replicas resampled (``idx`` per group)."""
                qb = np.stack([replica_mean_sem(tt.values["self_overlap"][i])[0]
                               for tt, i in zip(tts, idx, strict=True)])
                if per_replica:
                    rb = [r[i] for r, i in zip(rep_tau, idx, strict=True)]
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        tb = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in rb])
                else:
                    rb = []
                    tb = np.array([_tau_of_curve(ref, q, 0, c, rule)[0] for q in qb])
                with np.errstate(invalid="ignore", divide="ignore"):
                    xb = np.where(after, lag / tb[hot], np.nan)
                return [tau_slope(tb, rb)[0], window_slope(xb, np.where(after, qb[hot, 0], np.nan), window, level)[0]]

            boot = replica_bootstrap(slope_and_exponent, reps, params["n_boot"], params["seed"])   # [B, 2]
            slope_ci, expo_ci = percentile_interval(boot[:, 0], level), percentile_interval(boot[:, 1], level)
        zero = np.flatnonzero(temps == 0)
        tau0 = float(tau_T[zero[0], 0]) if zero.size and tau_T[zero[0], 1] == RESOLVED else None
        tdims = ("temperature", "tw_step", "threshold")
        arrays = {"self_overlap": (q_mean, ("temperature", "tw_step", "step")),
                  **{k: (np.stack([t[k] for t in taus]), tdims) for k in taus[0]},
                  "tau_T": (tau_T[:, 0], ("temperature",)),
                  "tau_T_flag": (tau_T[:, 1].astype(np.int8), ("temperature",)),
                  "tts_x": (tts_x, ("temperature", "step")), "tts_q": (tts_q, ("temperature", "step"))}
        if per_replica:
            arrays["tau_T_std"] = (np.array([float(sm["tau_std"]) for sm in summary]), ("temperature",))
            arrays["tau_T_resolved"] = (np.array([int(sm["tau_resolved"]) for sm in summary]), ("temperature",))
        scalars = {"tau_T_slope": slope, "tau_T_slope_ci": list(slope_ci), "tau_T0": tau0,
                   "tts_exponent": expo, "tts_exponent_ci": list(expo_ci), "tts_temperature": float(temps[hot]),
                   "tts_fit_window": [float(window[0]), float(window[1])], "tts_fit_range": fit_range,
                   "tts_fit_points": n_fit, "tau_T_range": [float(lo), float(hi)], "tau_T_points": int(t_used.sum()),
                   "tau_threshold": c, "tw_step": int(ref.tw_step[0]), "n_selected": ref.n,
                   "replicas": reps, "masked_steps": sorted({s for tt in tts for s in tt.masked_steps})}
        ds = [ensemble_diffusion(g.archives) for g in groups]
        if all(d is not None for d in ds):
            arrays["self_overlap_free"] = (np.stack([free_self_overlap_grid(ref.tw_step, ref.steps, tt.epsilon, d)
                                                     for tt, d in zip(tts, ds, strict=True)]),
                                           ("temperature", "tw_step", "step"))
            scalars["free_diffusion_D"] = ds
        coords = {"temperature": temps, "tw_step": ref.tw_step, "step": ref.steps, "threshold": thresholds}
        return Result(arrays=arrays, coords=coords, scalars=scalars)

    def plot(self, result: Result, fig: Any) -> Any:
        if "tts_x" not in result.arrays:
            return self._plot_single(result, fig)
        sc = result.scalars
        ax1, ax2 = fig.subplots(1, 2)
        temps = result.coords["temperature"]
        free = result.arrays.get("self_overlap_free")
        for g, temp in enumerate(temps):
            x, q = result.arrays["tts_x"][g], result.arrays["tts_q"][g]
            ok = np.isfinite(x) & np.isfinite(q) & (x > 0) & (q > 0)
            line = ax1.plot(x[ok], q[ok], label=f"T = {plotting.fmt(temp)}")[0]
            if free is not None:
                ax1.plot(x[ok], free[g, 0][ok], ls="--", lw=0.8, color=line.get_color(),
                         label=FREE_LABEL if g == 0 else None)
        expo = sc.get("tts_exponent")
        lo_w, hi_w = sc.get("tts_fit_window") or result.params.get("tts_window") or [None, None]
        rng = sc.get("tts_fit_range") or [None, None]
        if plotting.finite(expo) and plotting.finite(rng[0]):
            x = np.geomspace(float(rng[0]), float(rng[1]), 20)
            hot = int(np.argmax(temps))
            xs, qs = result.arrays["tts_x"][hot], result.arrays["tts_q"][hot]
            inside = (xs >= rng[0]) & (xs <= rng[1]) & np.isfinite(qs) & (qs > 0)
            amp = np.exp(np.mean(np.log(qs[inside]) - float(expo) * np.log(xs[inside])))
            ax1.plot(x, amp * x ** float(expo), "k--", lw=1, label="power-law fit")
        if plotting.finite(rng[0]):
            ax1.axvspan(float(rng[0]), float(rng[1]), color="0.9", zorder=0, label="fitted points")
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        ax1.set_xlabel(plotting.TTS_X.replace("c\\,", f"{plotting.fmt(sc.get('tau_threshold'))}\\,"))
        ax1.set_ylabel(f"$Q(t_w, t_w+t)$, $t_w$ = {sc.get('tw_step', '?')}")
        if plotting.finite(expo):
            title = (f"$Q \\propto (t/\\tau_e)^{{{float(expo):.3g}}}$ "
                     f"[{plotting.fmt(sc.get('tts_exponent_ci', [None])[0])}, "
                     f"{plotting.fmt(sc.get('tts_exponent_ci', [None, None])[1])}] on {plotting.fmt(lo_w)} ≤ "
                     f"$t/\\tau_e$ ≤ {plotting.fmt(hi_w)}\n(T = {plotting.fmt(sc.get('tts_temperature'))}; "
                     f"{sc.get('tts_fit_points', '?')} points, {plotting.fmt(rng[0])} to {plotting.fmt(rng[1])})")
        else:
            title = (f"TTS exponent unresolved: too few points in {plotting.fmt(lo_w)} ≤ $t/\\tau_e$ ≤ "
                     f"{plotting.fmt(hi_w)} at T = {plotting.fmt(sc.get('tts_temperature'))}")
        ax1.set_title(title, fontsize=8)
        plotting.legend(ax1)
        tau, flag = result.arrays["tau_T"], result.arrays.get("tau_T_flag", np.zeros(temps.size))
        ok = np.isfinite(tau) & (temps > 0)
        ax2.loglog(temps[ok], tau[ok], "o", label=r"$\tau_e(T)$ resolved")
        slope = sc.get("tau_T_slope")
        t_lo, t_hi = sc.get("tau_T_range") or result.params.get("t_range") or [None, None]
        fit = ok & (temps >= (t_lo if plotting.finite(t_lo) else -np.inf)) \
            & (temps <= (t_hi if plotting.finite(t_hi) else np.inf))
        if plotting.finite(slope) and fit.sum() >= 2:
            amp = np.exp(np.mean(np.log(tau[fit]) - float(slope) * np.log(temps[fit])))
            ax2.loglog(temps[fit], amp * temps[fit] ** float(slope), "k--", lw=1,
                       label=f"$\\tau_e \\propto T^{{{float(slope):.3g}}}$")
        n_slow, n_fast = int(np.sum(flag == TOO_SLOW)), int(np.sum(flag == TOO_FAST))
        ax2.set_xlabel("temperature $T$")
        ax2.set_ylabel(f"$\\tau_e(T)$ [steps] (first $t$ with $Q < {plotting.fmt(sc.get('tau_threshold'))}\\,"
                       "Q(t_w, t_w)$)")
        title = (f"slope {plotting.fmt_ci(slope, sc.get('tau_T_slope_ci'))} on {plotting.fmt(t_lo)} ≤ T ≤ "
                 f"{plotting.fmt(t_hi)}" if plotting.finite(slope) else "slope unresolved (fewer than 2 resolved τ_e)")
        if n_slow or n_fast:
            title += f"\nunresolved τ_e: {n_slow} slower than the run, {n_fast} faster than the schedule"
        if plotting.finite(sc.get("tau_T0")):
            title += f"\nτ_e(T = 0) = {plotting.fmt(sc['tau_T0'])} steps"
        ax2.set_title(title, fontsize=8)
        plotting.legend(ax2)
        plotting.caption(fig, plotting.describe(result, [
            f"grouped by {'temperature' if result.params.get('group_by') == 'auto' else result.params.get('group_by')}",
            f"intervals: {'bootstrap over replicas' if result.params.get('n_boot') else 'Student t of the regression'}"
            f" at level {plotting.fmt(result.params.get('level'))}"]))
        return fig

    @staticmethod
    def _plot_single(result: Result, fig: Any) -> Any:
        ax = fig.subplots(1, 1)
        q, step = result.arrays["self_overlap"], result.coords["step"]
        sem = result.arrays.get("self_overlap_sem")
        thresholds = result.coords.get("threshold", np.zeros(0))
        tau, flag = result.arrays.get("tau"), result.arrays.get("tau_flag")
        free = result.arrays.get("self_overlap_free")
        why = {TOO_SLOW: "slower than the run", TOO_FAST: "too fast", BELOW_MIN_TAU: "below min_tau"}
        unresolved = []
        for k, tw in enumerate(result.coords["tw_step"]):
            lag = (step - tw).astype(float)
            after = lag > 0
            line = plotting.band(ax, lag[after], q[k][after], None if sem is None else sem[k][after],
                                 label=plotting.tw_label(tw))
            if free is not None:
                ax.plot(lag[after], free[k][after], ls="--", lw=0.8, color=line.get_color(),
                        label=FREE_LABEL if k == 0 else None)
            for i, c in enumerate(thresholds):
                if tau is not None and np.isfinite(tau[k, i]):
                    ax.plot([tau[k, i]], [c], "o", color=line.get_color(), ms=4)
                elif flag is not None:
                    unresolved.append(f"$t_w$={int(tw)}, c={plotting.fmt(c, 2)} ({why.get(int(flag[k, i]), '?')})")
        for c in thresholds:
            ax.axhline(c, color="0.5", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel(plotting.LAG)
        ax.set_ylabel(plotting.LABELS["self_overlap"])
        levels = ", ".join(plotting.fmt(c, 2) for c in thresholds)
        title = f"dots: $\\tau_c$, first $t$ with $Q < c\\,Q(t_w, t_w)$, c = {levels}"
        if unresolved:
            title += "\nunresolved: " + "; ".join(unresolved[:4]) + (" …" if len(unresolved) > 4 else "")
        ax.set_title(title, fontsize=8)
        plotting.legend(ax)
        plotting.caption(fig, plotting.describe(result, ["bands: ± s.e. over replicas"]))
        return fig
