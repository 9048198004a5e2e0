"""Loss dynamics: power-law approach, learning times, critical width.

- Power law (:func:`fit_power_law`): ``L(t) ≈ L∞ + A t^−β`` fitted by least squares on ``ln L`` (relative
  errors, so the late tail counts as much as the early decay) with ``L∞ ≥ 0``, ``A > 0``,
  ``0 < β ≤ 10``. The start comes from a profile over β (for fixed β the model is linear in L∞ and A);
  ``scipy.optimize.curve_fit`` refines it; intervals are ``± z·σ`` from its covariance (a bootstrap over
  replicas replaces them in the plugin when there are replicas).
- Learning time (:func:`learning_times`): ``t_learn(ℓ) = min{t : L(t) ≤ ℓ}``, interpolated between the two
  snapshots that bracket the first crossing (linearly in ``ln t``, ``ln L``); a threshold never reached is
  NaN with ``reached = False`` — reported, never fitted.
- Critical width (:func:`fit_critical_width`): ``t_learn = A/(w − w_c)``, i.e. ``1/t_learn`` linear in ``w``
  with root ``w_c``; its interval by the delta method from the regression covariance (Student t).
  :func:`extrapolate_to_zero` fits ``w_c(ℓ)`` linearly in ``ℓ`` and reports the intercept ``w_c(0)``.

Plugin ``loss`` (:class:`LossDynamics`, needs groups). The ensemble is split by ``group_by`` (default
``model.n_params``: runs with one parameter count are replicas of one configuration, so a width sweep
splits by itself; for a sweep recorded by ``trajkit record`` group by the swept config key, e.g.
``config.model.width`` or ``config.model.hidden``, where the run's resolved config lives). Within a group
the curve is the replica mean of ``metric`` (a snapshot metric such as ``train_loss``, or
``trace:NAME`` for a per-step trace). Parameters: ``metric``, ``thresholds`` (ℓ values), ``window``
(``[lo, hi]`` steps of the power-law fit), ``width_key`` (metadata key holding the width, default the
group value; a list value such as ``model.hidden = [32, 32]`` must have equal entries), ``n_boot``,
``level``, ``seed``. With replicas, the power-law intervals are bootstrap percentiles over replicas.

Result keys. Arrays over ``group`` (the group values, ``[G]``): ``width``, ``loss_inf``, ``loss_inf_ci
[G, 2]``, ``beta``, ``beta_ci [G, 2]``, ``amplitude``, ``final_loss``, ``n_over_p`` (N / dataset.n_train,
NaN when unknown); ``t_learn [G, C]`` and ``reached [G, C]`` over ``(group, threshold)``; ``loss [G, T]``
over ``(group, step)`` when the groups share their steps; scalar ``fit_window`` (first and last step the
power-law fits used, over all groups). Across groups (three or more reached widths):
``w_c [C]``, ``w_c_ci [C, 2]`` over ``threshold`` and scalars ``w_c0``, ``w_c0_ci`` (ℓ → 0). With one
group, scalars ``loss_inf``, ``loss_inf_ci``, ``beta``, ``beta_ci``, ``amplitude``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import optimize, stats

from trajkit.analysis import Analysis, Param, Result, plotting
from trajkit.analysis.stats import percentile_interval, replica_bootstrap
from trajkit.archive.metadata import get_path
from trajkit.errors import AnalysisError
from trajkit_dynamics.curves import draw_inverse_learning_time, metric_curve, width_value
from trajkit_dynamics.measure import METRIC, RANGE_VALID, is_range


def _model_log(t: np.ndarray, loss_inf: float, amplitude: float, beta: float) -> np.ndarray:
    return np.log(loss_inf + amplitude * t ** (-beta))


def fit_power_law(t: np.ndarray, loss: np.ndarray, window: tuple[float, float] | None = None,
                  level: float = 0.95) -> dict[str, float | tuple[float, float]]:
    """Fit ``L∞ + A t^−β`` to ``loss [T]`` at steps ``t [T]`` (points with ``t > 0``, ``L > 0`` inside
    ``window``). Returns ``loss_inf, amplitude, beta`` and ``*_ci`` intervals, ``n_points``; NaN when fewer
    than 4 points or the fit fails."""
    t = np.asarray(t, dtype=float)
    loss = np.asarray(loss, dtype=float)
    ok = (t > 0) & np.isfinite(loss) & (loss > 0)
    if window is not None:
        ok &= (t >= window[0]) & (t <= window[1])
    t, loss = t[ok], loss[ok]
    nan = float("nan")
    out: dict[str, float | tuple[float, float]] = {
        "loss_inf": nan, "amplitude": nan, "beta": nan, "loss_inf_ci": (nan, nan), "amplitude_ci": (nan, nan),
        "beta_ci": (nan, nan), "n_points": int(t.size)}
    if t.size < 4:
        return out
    best = None
    for beta in np.geomspace(1e-2, 5.0, 120):
        x = t ** (-beta)
        design = np.stack([np.ones_like(x), x], axis=1) / loss[:, None]
        coef, *_ = np.linalg.lstsq(design, np.ones_like(x), rcond=None)
        coef = np.array([max(coef[0], 0.0), max(coef[1], 1e-12)])
        resid = np.sum((np.log(coef[0] + coef[1] * x) - np.log(loss)) ** 2)
        if best is None or resid < best[0]:
            best = (resid, coef[0], coef[1], beta)
    _, l0, a0, b0 = best
    scale = float(np.max(loss))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            popt, pcov = optimize.curve_fit(_model_log, t, np.log(loss), p0=(l0, a0, b0),
                                            bounds=([0.0, 1e-12 * scale, 1e-4], [np.inf, np.inf, 10.0]),
                                            max_nfev=20000)
    except (RuntimeError, ValueError):
        return out
    z = stats.norm.ppf(0.5 + level / 2)
    err = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(3, nan)
    for name, v, e in zip(("loss_inf", "amplitude", "beta"), popt, err, strict=True):
        out[name] = float(v)
        out[f"{name}_ci"] = (float(v - z * e), float(v + z * e))
    return out


def fit_span(t: np.ndarray, loss: np.ndarray, window: tuple[float, float] | None = None) -> tuple[float, float]:
    """``(first, last)`` step that :func:`fit_power_law` uses (NaN when none)."""
    t = np.asarray(t, dtype=float)
    loss = np.asarray(loss, dtype=float)
    ok = (t > 0) & np.isfinite(loss) & (loss > 0)
    if window is not None:
        ok &= (t >= window[0]) & (t <= window[1])
    return (float(t[ok].min()), float(t[ok].max())) if ok.any() else (float("nan"), float("nan"))


def learning_times(t: np.ndarray, loss: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(t_learn [C], reached [C])`` for each threshold ℓ: first crossing of ``L ≤ ℓ``, interpolated."""
    t = np.asarray(t, dtype=float)
    loss = np.asarray(loss, dtype=float)
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=float))
    out = np.full(thresholds.size, np.nan)
    reached = np.zeros(thresholds.size, dtype=bool)
    finite = np.isfinite(loss)
    t, loss = t[finite], loss[finite]
    for i, ell in enumerate(thresholds):
        below = np.flatnonzero(loss <= ell)
        if below.size == 0:
            continue
        j = int(below[0])
        reached[i] = True
        if j == 0:
            out[i] = t[0]
            continue
        t0, t1, l0, l1 = t[j - 1], t[j], loss[j - 1], loss[j]
        if min(t0, t1, l0, l1, ell) > 0:
            f = (np.log(ell) - np.log(l0)) / (np.log(l1) - np.log(l0)) if l1 != l0 else 1.0
            out[i] = float(np.exp(np.log(t0) + f * (np.log(t1) - np.log(t0))))
        else:
            f = (ell - l0) / (l1 - l0) if l1 != l0 else 1.0
            out[i] = float(t0 + f * (t1 - t0))
    return out, reached


def fit_critical_width(widths: np.ndarray, t_learn: np.ndarray,
                       level: float = 0.95) -> dict[str, float | tuple[float, float]]:
    """Fit ``1/t_learn = (w − w_c)/A`` over the widths whose threshold was reached.

    Returns ``w_c``, ``w_c_ci`` (delta method, NaN with fewer than 3 points), ``w_c_se``, ``amplitude``
    (A) and ``n_points``."""
    w = np.asarray(widths, dtype=float)
    tl = np.asarray(t_learn, dtype=float)
    ok = np.isfinite(w) & np.isfinite(tl) & (tl > 0)
    w, y = w[ok], 1.0 / tl[ok]
    nan = float("nan")
    out: dict[str, float | tuple[float, float]] = {"w_c": nan, "w_c_ci": (nan, nan), "w_c_se": nan,
                                                  "amplitude": nan, "n_points": int(w.size)}
    if w.size < 2 or np.ptp(w) == 0:
        return out
    (a, b), cov = np.polyfit(w, y, 1, cov="unscaled") if w.size < 3 else np.polyfit(w, y, 1, cov=True)
    if a == 0:
        return out
    w_c = -b / a
    out.update(w_c=float(w_c), amplitude=float(1.0 / a))
    if w.size >= 3:
        grad = np.array([b / a**2, -1.0 / a])
        se = float(np.sqrt(max(grad @ cov @ grad, 0.0)))
        half = stats.t.ppf(0.5 + level / 2, w.size - 2) * se
        out.update(w_c_se=se, w_c_ci=(float(w_c - half), float(w_c + half)))
    return out


def extrapolate_to_zero(thresholds: np.ndarray, values: np.ndarray,
                        level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Intercept at ℓ = 0 of a straight line through ``values(ℓ)`` with its Student-t interval
    (NaN interval with fewer than 3 points, NaN value with fewer than 2)."""
    x = np.asarray(thresholds, dtype=float)
    y = np.asarray(values, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    nan = float("nan")
    if x.size < 2 or np.ptp(x) == 0:
        return nan, (nan, nan)
    fit = stats.linregress(x, y)
    if x.size < 3:
        return float(fit.intercept), (nan, nan)
    half = stats.t.ppf(0.5 + level / 2, x.size - 2) * fit.intercept_stderr
    return float(fit.intercept), (float(fit.intercept - half), float(fit.intercept + half))


class LossDynamics(Analysis):
    """Power-law loss decay, learning times and the critical width (formulas in the module docstring)."""

    name = "loss"
    version = "1.0.0"
    description = "Power-law loss approach L_inf + A t^-beta, learning times, critical width w_c and final loss."
    needs = "groups"
    params = (Param("group_by", "str", default="model.n_params",
                    help="metadata key splitting the runs into configurations (e.g. config.model.width)"),
              METRIC,
              Param("thresholds", "floats", default=[0.1, 0.03, 0.01], help="loss thresholds of t_learn",
                    check=lambda v: all(x > 0 for x in (v if isinstance(v, list) else [v])), valid="each > 0"),
              Param("window", "floats", default=None, help="[lo, hi] steps of the power-law fit",
                    check=is_range, valid=RANGE_VALID),
              Param("width_key", "str", default=None, help="metadata key of the width (default: the group value)"),
              Param("n_boot", "int", default=200, min=0, help="bootstrap replicates over replicas (0: none)"),
              Param("level", "float", default=0.95, help="confidence level", check=lambda v: 0 < v < 1,
                    valid="in (0, 1)"),
              Param("seed", "int", default=0, help="seed of the bootstrap"))

    def compute(self, data: Any, params: dict[str, Any], ctx: Any) -> Result:
        thresholds = np.atleast_1d(np.asarray(params["thresholds"], dtype=float))
        level, window = params["level"], params["window"]
        window = tuple(window) if window else None
        rng = np.random.default_rng(params["seed"])  # one stream for every group's bootstrap
        rows: dict[str, list[Any]] = {k: [] for k in ("width", "loss_inf", "loss_inf_ci", "beta", "beta_ci",
                                                      "amplitude", "final_loss", "n_over_p", "t_learn", "reached")}
        curves, group_values, fitted = [], [], []
        for value, ens in data.items():
            group_values.append(value)
            runs = [metric_curve(a, params["metric"]) for a in ens.archives]
            t = runs[0][0]
            if any(r[0].shape != t.shape or not np.array_equal(r[0], t) for r in runs):
                raise AnalysisError(f"group {value!r}: runs differ in the steps of {params['metric']!r}")
            losses = np.stack([r[1] for r in runs])
            mean = np.nanmean(losses, axis=0)
            curves.append((t, mean))
            fitted.append(fit_span(t, mean, window))
            fit = fit_power_law(t, mean, window, level)
            if params["n_boot"] and losses.shape[0] >= 2:
                def refit(i: np.ndarray, t: np.ndarray = t, losses: np.ndarray = losses) -> list[float]:
                    f = fit_power_law(t, np.nanmean(losses[i], axis=0), window, level)
                    return [f["loss_inf"], f["beta"]]

                boot = replica_bootstrap(refit, losses.shape[0], params["n_boot"], rng)     # [B, 2]
                fit["loss_inf_ci"] = percentile_interval(boot[:, 0], level)
                fit["beta_ci"] = percentile_interval(boot[:, 1], level)
            tl, reached = learning_times(t, mean, thresholds)
            arch = ens.archives[0]
            wkey = params["width_key"]
            rows["width"].append(width_value(get_path(arch.metadata, wkey) if wkey else value, str(arch.path)))
            for k in ("loss_inf", "loss_inf_ci", "beta", "beta_ci", "amplitude"):
                rows[k].append(fit[k])
            rows["final_loss"].append(float(mean[np.isfinite(mean)][-1]) if np.isfinite(mean).any() else np.nan)
            n_train = get_path(arch.metadata, "dataset.n_train")
            rows["n_over_p"].append(arch.n_params / n_train if n_train else np.nan)
            rows["t_learn"].append(tl)
            rows["reached"].append(reached)
        arrays: dict[str, Any] = {}
        for k, v in rows.items():
            arr = np.asarray(v, dtype=bool if k == "reached" else float)
            dims = ("group", "threshold") if k in ("t_learn", "reached") else \
                ("group", "bound") if k.endswith("_ci") else ("group",)
            arrays[k] = (arr, dims)
        if all(np.array_equal(c[0], curves[0][0]) for c in curves):
            arrays["loss"] = (np.stack([c[1] for c in curves]), ("group", "step"))
        coords: dict[str, Any] = {"group": np.asarray([str(g) for g in group_values]), "threshold": thresholds,
                                  "step": curves[0][0]}
        spans = np.array([f for f in fitted if np.all(np.isfinite(f))]).reshape(-1, 2)
        scalars: dict[str, Any] = {"metric": params["metric"], "groups": len(group_values),
                                   "fit_window": [float(spans[:, 0].min()), float(spans[:, 1].max())]
                                   if spans.size else [None, None]}
        if len(group_values) == 1:
            for k in ("loss_inf", "loss_inf_ci", "beta", "beta_ci", "amplitude"):
                v = rows[k][0]
                scalars[k] = list(v) if isinstance(v, tuple) else v
        widths = np.asarray(rows["width"])
        tl_all = np.asarray(rows["t_learn"])
        wc = [fit_critical_width(widths, tl_all[:, i], level) for i in range(thresholds.size)]
        if len(group_values) >= 3:
            wc_val = np.array([f["w_c"] for f in wc])
            arrays["w_c"] = (wc_val, ("threshold",))
            arrays["w_c_ci"] = (np.array([f["w_c_ci"] for f in wc]), ("threshold", "bound"))
            arrays["w_c_points"] = (np.array([f["n_points"] for f in wc]), ("threshold",))
            w0, w0_ci = extrapolate_to_zero(thresholds, wc_val, level)
            scalars.update(w_c0=w0, w_c0_ci=list(w0_ci))
        return Result(arrays=arrays, coords=coords, scalars=scalars)

    def plot(self, result: Result, fig: Any) -> Any:
        ax1, ax2 = fig.subplots(1, 2)
        sc = result.scalars
        metric = sc.get("metric", "loss")
        key = plotting.KEY_SYMBOLS.get(result.params.get("group_by", ""), result.params.get("group_by", "group"))
        lo, hi = sc.get("fit_window") or [None, None]
        if "loss" in result.arrays:
            step = result.coords["step"].astype(float)
            ok = step > 0
            for g, label in enumerate(result.coords["group"]):
                ax1.loglog(step[ok], result.arrays["loss"][g][ok], label=f"{key} = {label}")
                pars = [result.arrays[k][g] for k in ("loss_inf", "amplitude", "beta")]
                if all(plotting.finite(v) for v in pars) and plotting.finite(lo):
                    x = np.geomspace(float(lo), float(hi), 60)
                    ax1.loglog(x, pars[0] + pars[1] * x ** -pars[2], "--", color="k", lw=0.8, zorder=3)
        else:
            ax1.text(0.5, 0.5, "groups do not share their steps", ha="center", transform=ax1.transAxes)
        ax1.set_xlabel("step $t$")
        ax1.set_ylabel(f"$L(t)$ = {metric} (replica mean)")
        title = f"black dashed: $L_\\infty + A\\,t^{{-\\beta}}$ fitted on {plotting.fmt(lo)} ≤ t ≤ {plotting.fmt(hi)}"
        if result.arrays["beta"].size == 1:
            title += (f"\n$\\beta$ = {plotting.fmt_ci(sc.get('beta'), sc.get('beta_ci'))}, "
                      f"$L_\\infty$ = {plotting.fmt_ci(sc.get('loss_inf'), sc.get('loss_inf_ci'))}")
        ax1.set_title(title, fontsize=8)
        plotting.legend(ax1)
        widths, tl = result.arrays["width"], result.arrays["t_learn"]
        xs = np.linspace(0, np.nanmax(widths) * 1.05, 50) if np.isfinite(widths).any() else np.zeros(0)
        notes = []
        for i, ell in enumerate(result.coords["threshold"]):
            wc = result.arrays["w_c"][i] if "w_c" in result.arrays else np.nan
            line = draw_inverse_learning_time(ax2, widths, tl[:, i], wc, xs, "o", label=f"ℓ = {ell:g}")
            if np.isfinite(wc) and np.isfinite(line.get_ydata()).sum() >= 2:
                notes.append(f"ℓ={ell:g}: {plotting.fmt_ci(wc, result.arrays['w_c_ci'][i])}")
            if not result.arrays["reached"][:, i].any():
                notes.append(f"ℓ={ell:g}: never reached")
        ax2.set_xlabel("width $w$")
        ax2.set_ylabel(r"$1/t_{\rm learn}(\ell)$ [1/steps], $t_{\rm learn} = \min\{t: L(t) \leq \ell\}$")
        ax2.set_ylim(bottom=0)
        if "w_c" in result.arrays:
            title = plotting.join_lines(["$w_c$ from $t_{\\rm learn} = A/(w - w_c)$:", *notes,
                                         f"$w_c(\\ell \\to 0)$ = {plotting.fmt_ci(sc.get('w_c0'), sc.get('w_c0_ci'))}"],
                                        width=60)
        else:
            title = "no $w_c$ fit: needs 3 or more groups (widths)" + ("; " + "; ".join(notes) if notes else "")
        ax2.set_title(title, fontsize=8)
        plotting.legend(ax2)
        intervals = (f"{result.params.get('n_boot')} bootstrap resamples of the replicas"
                     if result.params.get("n_boot") else "fit covariance")
        plotting.caption(fig, plotting.describe(result, [
            f"{sc.get('groups')} group" + ("s" if sc.get("groups") != 1 else ""), f"intervals: {intervals} at level "
            f"{plotting.fmt(result.params.get('level'))}"]))
        return fig
