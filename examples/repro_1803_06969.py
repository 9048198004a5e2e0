"""Reproduction of 1803.06969 (Baity-Jesi et al., ICML 2018): aging of the MSD under SGD and its Δ/D(t_w) collapse.

    .venv/bin/python examples/repro_1803_06969.py                       # full size (≈ 3-7 min on 2 cores)
    .venv/bin/python examples/repro_1803_06969.py --quick --out /tmp/q  # smoke test (≤ 60 s)
    .venv/bin/python examples/repro_1803_06969.py --mnist-root ~/data   # MNIST instead of the digits
    .venv/bin/python examples/repro_1803_06969.py --dry-run             # validate and list the runs only

Records ``examples/repro_1803_06969.toml`` (minibatch SGD, an under- and an over-parametrised MLP on the
digits, 4 replicas, gradient-noise statistics at every snapshot) and measures, for each network:

- **aging of Δ**: the `aging` analysis on Δ(t_w, t_w + t) (μ from the collapse in t/t_w^μ, the h-form and
  τ(t_w) ∝ t_w^μ, bootstrap intervals over replicas), and the same on Δ/D(t_w) (``normalize = "noise_D"``);
- **collapse quality** with a measure of our own, the *mean log-spread*: on a common log-spaced grid of 40 lags
  t (inside the lag range every waiting time covers; curves interpolated linearly in ln t), σ(t) = the standard
  deviation over waiting times of ln y(t_w, t_w + t), averaged over the grid: σ_raw for y = Δ, σ_D for
  y = Δ/D(t_w). A perfect collapse has σ = 0; curves differing by constant factors a_k have σ = std(ln a_k).
  Reported over all common lags and over the short lags t ≤ min t_w;
- **exponents at the last waiting time**: α, the least-squares slope of ln Δ vs ln t over the short lags
  1 ≤ t ≤ max(10, t_w/100) and over the last decade of lags (diffusion: α = 1); α_D, the slope of ln Δ vs
  ln ∫_{t_w}^{t_w+t} D(s) ds over the last decade (diffusion in the clock of the gradient noise: α_D = 1);
  the ratios N·Δ/(2 D(t_w) t) (short lags) and N·Δ/(2∫D ds) (last decade), both 1 for displacements made of
  the minibatch noise alone; and the radial share (‖w(t_w+t)‖ − ‖w(t_w)‖)²/(NΔ) over the last decade (the part
  of the displacement that is a change of the weight norm);
- **D(t_w) vs t_w**: D = η² Var(g_B)/2, the diffusion coefficient (summed over parameters) of one SGD step's
  noise, from the recorded noise_D times the constant of :func:`sgd_noise_factor`, at each waiting time, and
  the slope of ln D vs ln t_w.

Intervals are 95 % percentile bootstraps over replicas (the replicas' curves resampled, the mean curve
refitted). Figures, saved results and ``summary.json`` go to ``--out``; ``--figures DIR`` copies the figures
and the numbers (``repro_1803_06969_*.png``, ``repro_1803_06969.json``) there. The table printed at the end is
quantity | this run | paper.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.pyplot as plt

import trajkit
from trajkit.errors import TrajkitError
from trajkit.experiments import load_config, run_experiment

STEM = "repro_1803_06969"
HERE = Path(__file__).resolve().parent
CONFIG = HERE / f"{STEM}.toml"
QUICK_STEPS = 600
#: MNIST: the standard files, pixels / 255 (plain MNIST; the 10k/2k subsample keeps the run on 2 cores)
MNIST = ['data.name="mnist"', 'data.preprocess="none"', "data.n_train=10000", "data.n_test=2000"]
N_WAITING = 5
N_BOOT = 200
LEVEL = 0.95
SPREAD_GRID = 40

#: what the paper states (its abstract, arXiv:1803.06969) and the study summary of docs/OBSERVABLES.md
PAPER = {
    "aging": "Δ depends on t_w (aging) (OBSERVABLES.md)",
    "collapse": "curves collapse once Δ is rescaled by D(t_w) (OBSERVABLES.md)",
    "alpha": "diffuses at the bottom of the landscape at large times, loss → 0 (abstract)",
    "D": "dynamics slows down: increasingly many flat directions (abstract)",
    "phases": "under-parametrised: typical glassy behaviour; over-parametrised differs (abstract)",
}


# -- schedule and noise conventions --------------------------------------------------------------------------


def waiting_times(total: int) -> list[int]:
    """``N_WAITING`` log-spaced waiting times from total/80 to total/5 (two significant digits)."""
    return [int(float(f"{x:.2g}")) for x in np.geomspace(total / 80, total / 5, N_WAITING)]


def schedule_steps(total: int, n_base: int = 60, n_lags: int = 20) -> list[int]:
    """The explicit snapshot steps: ``n_base`` log-spaced steps over the run, the waiting times, and
    ``tw + round(geomspace(1, tw, n_lags))`` after each (short lags t ≪ tw resolved at every waiting time)."""
    parts = [np.array([0]), np.rint(np.geomspace(1, total, n_base)).astype(np.int64)]
    for tw in waiting_times(total):
        parts += [np.array([tw]), tw + np.rint(np.geomspace(1, tw, n_lags)).astype(np.int64)]
    s = np.unique(np.concatenate(parts))
    return [int(x) for x in s[s <= total]]


def sgd_noise_factor(k: int, b: int, batch: int, p: int) -> float:
    """c with D_SGD = c · noise_D, D_SGD = η² Var(g_B)/2 the diffusion coefficient (summed over parameters) of
    the noise of one SGD step with batches of B drawn without replacement from the P samples.

    The recorded noise_D = η² grad_var/(2B), with E grad_var = (K−1)/K · σ²/b · (P−b)/(P−1) for K minibatches of
    b samples, and Var(g_B) = σ²/B · (P−B)/(P−1); hence c = K/(K−1) · b (P−B)/(P−b) (b = B: c = K/(K−1) · B).
    """
    return k / (k - 1) * b * (p - batch) / (p - b)


# -- measurements on the curves -------------------------------------------------------------------------------


def _curves(tw_steps: np.ndarray, steps: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per waiting time the (lags > 0, y) with y finite and positive: y ``[K, T]`` over (tw_step, step)."""
    out = []
    for k, tw in enumerate(tw_steps):
        lag = (steps - tw).astype(float)
        ok = (lag > 0) & np.isfinite(y[k]) & (y[k] > 0)
        out.append((lag[ok], y[k][ok]))
    return out


def lag_grid(tw_steps: np.ndarray, steps: np.ndarray, hi: float | None = None, n: int = SPREAD_GRID) -> np.ndarray:
    """``n`` log-spaced lags inside the lag range every waiting time covers (capped at ``hi``)."""
    lo = max(float(np.min(steps[steps > tw] - tw)) for tw in tw_steps)
    top = min(float(np.max(steps) - tw) for tw in tw_steps)
    top = top if hi is None else min(top, float(hi))
    if not top > lo:
        raise ValueError(f"the waiting times {list(tw_steps)} share no lag range")
    return np.geomspace(lo, top, n)


def mean_log_spread(tw_steps: np.ndarray, steps: np.ndarray, y: np.ndarray, grid: np.ndarray) -> float:
    """Mean over ``grid`` of the standard deviation over waiting times of ln y(t_w, t_w + t) (ln t interpolation)."""
    rows = [np.interp(np.log(grid), np.log(lag), np.log(v)) for lag, v in _curves(tw_steps, steps, y)]
    return float(np.mean(np.std(np.stack(rows), axis=0)))


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ln y vs ln x over the finite positive points."""
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def cumulative_noise(steps: np.ndarray, noise_d: np.ndarray) -> np.ndarray:
    """``I[j] = ∫_0^{steps[j]} D(s) ds`` by the trapezoid rule on the snapshot steps (noise_d ``[T]``)."""
    return np.concatenate([[0.0], np.cumsum(np.diff(steps.astype(float)) * 0.5 * (noise_d[1:] + noise_d[:-1]))])


def windows(steps: np.ndarray, tw: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the short lags 1 ≤ t ≤ max(10, tw/100) and of the last decade t_max/10 ≤ t ≤ t_max after ``tw``."""
    lag = (steps - tw).astype(float)
    t_max = float(lag.max())
    return (lag >= 1) & (lag <= max(10.0, tw / 100)), (lag >= t_max / 10) & (lag > 0)


def radial_share(tw_steps: np.ndarray, steps: np.ndarray, msd: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """``(‖w(t_w+t)‖ − ‖w(t_w)‖)² / (N Δ)`` at the last waiting time, ``[T]``: the part of the displacement that
    is a change of the weight norm. From C(t_w, s) = w(t_w)·w(s)/N and Δ: C(s, s) = Δ + 2 C(t_w, s) − C(t_w, t_w)."""
    row = int(np.flatnonzero(steps == tw_steps[-1])[0])
    c_tw = overlap[-1, row]
    c_ss = msd[-1] + 2 * overlap[-1] - c_tw
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.sqrt(c_ss) - np.sqrt(c_tw)) ** 2 / msd[-1]


def measure(tw_steps: np.ndarray, steps: np.ndarray, msd: np.ndarray, d_tw: np.ndarray, d_traj: np.ndarray,
            n_params: int, overlap: np.ndarray | None = None) -> dict[str, float]:
    """The numbers of one (mean) set of curves: msd ``[K, T]``, d_tw ``[K]`` = D(t_w), d_traj ``[T]`` = D(s)
    (both D_SGD, see :func:`sgd_noise_factor`), overlap ``[K, T]`` = C(t_w, s) (for the radial share)."""
    scaled = msd / d_tw[:, None]
    grid, short = lag_grid(tw_steps, steps), lag_grid(tw_steps, steps, hi=float(tw_steps[0]))
    tw = int(tw_steps[-1])
    w_short, w_late = windows(steps, tw)
    lag = (steps - tw).astype(float)
    integral = cumulative_noise(steps, d_traj)
    i_tw = integral - integral[int(np.flatnonzero(steps == tw)[0])]
    radial = (float(np.mean(radial_share(tw_steps, steps, msd, overlap)[w_late])) if overlap is not None
              else float("nan"))
    return {
        "radial_late": radial,
        "spread_raw": mean_log_spread(tw_steps, steps, msd, grid),
        "spread_noise_D": mean_log_spread(tw_steps, steps, scaled, grid),
        "spread_short_raw": mean_log_spread(tw_steps, steps, msd, short),
        "spread_short_noise_D": mean_log_spread(tw_steps, steps, scaled, short),
        "alpha_short": loglog_slope(lag[w_short], msd[-1][w_short]),
        "alpha_late": loglog_slope(lag[w_late], msd[-1][w_late]),
        "alpha_noise_clock": loglog_slope(i_tw[w_late], msd[-1][w_late]),
        "ratio_short": float(np.mean(n_params * msd[-1][w_short] / (2 * d_tw[-1] * lag[w_short]))),
        "ratio_late": float(np.mean(n_params * msd[-1][w_late] / (2 * i_tw[w_late]))),
        "D_slope": loglog_slope(tw_steps.astype(float), d_tw),
    }


def bootstrap(per_replica: dict[str, np.ndarray], tw_steps: np.ndarray, steps: np.ndarray, n_params: int,
              n_boot: int, seed: int = 0) -> dict[str, Any]:
    """:func:`measure` on the replica means, and percentile intervals over replicas resampled with replacement."""
    def on(idx: np.ndarray) -> dict[str, float]:
        return measure(tw_steps, steps, per_replica["msd"][idx].mean(0), per_replica["d_tw"][idx].mean(0),
                       per_replica["d_traj"][idx].mean(0), n_params, per_replica["overlap"][idx].mean(0))

    R = per_replica["msd"].shape[0]
    point = on(np.arange(R))
    rng = np.random.default_rng(seed)
    draws = [on(rng.integers(0, R, R)) for _ in range(n_boot if R > 1 else 0)]
    out: dict[str, Any] = dict(point)
    for key in point:
        vals = np.array([d[key] for d in draws], dtype=float)
        vals = vals[np.isfinite(vals)]
        q = (1 - LEVEL) / 2
        out[f"{key}_ci"] = ([float(np.quantile(vals, q)), float(np.quantile(vals, 1 - q))] if vals.size
                            else [float("nan"), float("nan")])
    return out


# -- one network ----------------------------------------------------------------------------------------------


def analyse_group(group: Any, out: Path, label: str, n_boot: int) -> dict[str, Any]:
    arch0 = group.archives[0]
    meta = arch0.metadata
    steps = np.asarray(group.steps)
    tws = waiting_times(int(steps[-1]))
    n_params = int(arch0.n_params)
    p = int(meta["dataset"]["n_train"])
    gcfg, batch = meta["config"]["metrics"], int(meta["config"]["dynamics"]["batch_size"])
    c = sgd_noise_factor(int(gcfg["gradient_batches"]), int(gcfg["gradient_batch_size"]), min(batch, p), p)
    common = {"waiting_times": tws, "snap": "nearest"}
    # one overlaps result per replica (for the bootstrap) and one over the ensemble (for the figures)
    per: dict[str, Any] = {"msd": [], "overlap": [], "d_tw": [], "d_traj": []}
    tw_steps = np.asarray(tws)
    for arch in group.archives:
        r = trajkit.analyze("overlaps", [arch.path], normalize="noise_D", **common)
        tw_steps = np.asarray(r.coords["tw_step"])
        per["msd"].append(np.asarray(r["msd"]))
        per["overlap"].append(np.asarray(r["overlap"]))
        per["d_tw"].append(c * np.asarray(r["noise_D"])[0])
        per["d_traj"].append(c * np.asarray(arch.metrics["noise_D"], dtype=float))
    per = {k: np.stack(v) for k, v in per.items()}
    ov = trajkit.analyze("overlaps", group, normalize="noise_D", **common)
    ov.save(out / f"overlaps_{label}")
    ag_raw = trajkit.analyze("aging", group, observable="msd", n_boot=n_boot, **common)
    ag_raw.save(out / f"aging_{label}")
    save_png(ag_raw.plot(), out / f"aging_{label}.png")
    ag_d = trajkit.analyze("aging", group, observable="msd", normalize="noise_D", n_boot=n_boot, **common)
    ag_d.save(out / f"aging_noise_D_{label}")
    save_png(ag_d.plot(), out / f"aging_noise_D_{label}.png")
    nums = bootstrap(per, tw_steps, steps, n_params, n_boot)

    def aging_numbers(ag: Any) -> dict[str, Any]:
        keys = ("regime", "mu_collapse", "mu_collapse_ci", "mu_collapse_raw", "mu_h", "mu_h_ci", "mu_tau",
                "mu_tau_ci", "collapse_quality")
        return {k: ag.scalars[k] for k in keys}

    metrics = {k: np.stack([np.asarray(a.metrics[k], dtype=float) for a in group.archives]).mean(0)
               for k in ("train_loss", "train_acc", "test_acc", "noise_D", "grad_mean_norm2", "grad_var")}
    return {
        "label": label, "hidden": meta["config"]["model"]["hidden"], "n_params": n_params,
        "n_train": p, "n_over_p": n_params / p, "replicas": len(group.archives),
        "tw_steps": [int(t) for t in tw_steps], "noise_factor": c,
        "D_tw": [float(x) for x in per["d_tw"].mean(0)],
        "final_train_loss": float(metrics["train_loss"][-1]), "final_train_acc": float(metrics["train_acc"][-1]),
        "final_test_acc": float(metrics["test_acc"][-1]),
        "final_train_loss_replicas": [float(a.metrics["train_loss"][-1]) for a in group.archives],
        "aging_raw": aging_numbers(ag_raw), "aging_noise_D": aging_numbers(ag_d), **nums,
        "_curves": {"steps": steps, "tw": tw_steps, "msd": np.asarray(ov["msd"]),
                    "scaled": np.asarray(ov["msd_over_noise_D"]) / c, "D": c * metrics["noise_D"],
                    "metrics": metrics},
    }


# -- figures --------------------------------------------------------------------------------------------------


def save_png(fig: Any, path: Path, dpi: int = 90) -> None:
    """Save ``fig`` as a PNG with an adaptive 256-colour palette (the gallery keeps each figure < 120 KB)."""
    from PIL import Image

    fig.savefig(path, dpi=dpi)
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256)
    small.save(path, optimize=True)
    plt.close(fig)


def figure_msd(nets: list[dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(len(nets), 2, figsize=(9, 3.3 * len(nets)), squeeze=False)
    for row, net in zip(axes, nets, strict=True):
        c = net["_curves"]
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(c["tw"])))
        for k, tw in enumerate(c["tw"]):
            lag = (c["steps"] - tw).astype(float)
            ok = lag > 0
            row[0].loglog(lag[ok], c["msd"][k, ok], color=colors[k], label=f"$t_w$ = {tw}")
            row[1].loglog(lag[ok], c["scaled"][k, ok], color=colors[k])
        x = np.geomspace(1, float(c["steps"][-1]), 10)
        y_end = float(np.nanmax(c["msd"][0]))
        row[0].loglog(x, y_end * x / x[-1], "k:", lw=0.8, label="∝ t")
        row[1].loglog(x, 2 * x / net["n_params"], "k--", lw=0.8, label="2t/N (pure SGD-noise diffusion)")
        title = f"width {net['hidden'][0]} (N = {net['n_params']:,}, N/P = {net['n_over_p']:.2g})"
        row[0].set_title(f"{title}: Δ, mean log-spread {net['spread_raw']:.2f}", fontsize=9)
        row[1].set_title(f"Δ/D($t_w$): mean log-spread {net['spread_noise_D']:.2f}", fontsize=9)
        row[0].set_ylabel("Δ($t_w$, $t_w$+t)")
        row[1].set_ylabel("Δ / D($t_w$)")
        for ax in row:
            ax.set_xlabel("t [steps]")
        row[0].legend(fontsize=7)
        row[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def figure_noise(nets: list[dict[str, Any]], path: Path) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.3))
    for net in nets:
        c = net["_curves"]
        s = c["steps"].astype(float)
        ok = s > 0
        lab = f"width {net['hidden'][0]} (N = {net['n_params']:,})"
        (line,) = a.loglog(s[ok], c["D"][ok], lw=1, label=lab)
        a.loglog(net["tw_steps"], net["D_tw"], "o", color=line.get_color(), ms=4)
        b.loglog(s[ok], c["metrics"]["train_loss"][ok], color=line.get_color(), label=lab)
    a.set_xlabel("t [steps]")
    a.set_ylabel("D(t) = η² Var($g_B$) / 2")
    a.set_title("gradient-noise strength (dots: the waiting times)", fontsize=9)
    b.set_xlabel("t [steps]")
    b.set_ylabel("training loss (mean over replicas)")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


# -- the table ------------------------------------------------------------------------------------------------


def fmt(x: Any, ci: Any = None, d: int = 2) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    s = f"{x:.{d}f}"
    if ci is not None and all(np.isfinite(ci)):
        s += f" ({ci[0]:.{d}f} … {ci[1]:.{d}f})"
    return s


#: the rows of the table: (label, json key under a net, the key of its interval or None, paper)
ROWS = [
    ("μ of Δ (collapse in t/t_w^μ)", "aging_raw.mu_collapse_raw", "aging_raw.mu_collapse_ci", "aging"),
    ("μ of Δ (τ(t_w) ∝ t_w^μ)", "aging_raw.mu_tau", "aging_raw.mu_tau_ci", "aging"),
    ("μ of Δ/D(t_w) (collapse)", "aging_noise_D.mu_collapse_raw", "aging_noise_D.mu_collapse_ci", "collapse"),
    ("mean log-spread of Δ, all common lags", "spread_raw", "spread_raw_ci", "collapse"),
    ("mean log-spread of Δ/D(t_w), all common lags", "spread_noise_D", "spread_noise_D_ci", "collapse"),
    ("mean log-spread of Δ, t ≤ min t_w", "spread_short_raw", "spread_short_raw_ci", "collapse"),
    ("mean log-spread of Δ/D(t_w), t ≤ min t_w", "spread_short_noise_D", "spread_short_noise_D_ci", "collapse"),
    ("α, Δ ∝ t^α at the last t_w, short lags", "alpha_short", "alpha_short_ci", "alpha"),
    ("α, Δ ∝ t^α at the last t_w, last decade of lags", "alpha_late", "alpha_late_ci", "alpha"),
    ("α_D, Δ ∝ (∫D ds)^α_D, last decade", "alpha_noise_clock", "alpha_noise_clock_ci", "alpha"),
    ("N·Δ/(2 D(t_w) t), short lags (noise diffusion: 1)", "ratio_short", "ratio_short_ci", None),
    ("N·Δ/(2 ∫D ds), last decade (noise diffusion: 1)", "ratio_late", "ratio_late_ci", None),
    ("radial share (‖w(t_w+t)‖ − ‖w(t_w)‖)²/(NΔ), last decade", "radial_late", "radial_late_ci", None),
    ("d ln D(t_w) / d ln t_w", "D_slope", "D_slope_ci", "D"),
    ("final training loss (mean of replicas)", "final_train_loss", None, "phases"),
]


def lookup(net: dict[str, Any], key: str | None) -> Any:
    if key is None:
        return None
    v: Any = net
    for part in key.split("."):
        v = v[part]
    return v


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    nets = summary["nets"]
    head = ["quantity", *[f"width {n['hidden'][0]} (N/P = {n['n_over_p']:.2g})" for n in nets], "paper"]
    rows = [head]
    for label, key, ci, paper in ROWS:
        d = 5 if key == "final_train_loss" else 2
        rows.append([label, *[fmt(lookup(n, key), lookup(n, ci), d) for n in nets],
                     PAPER[paper] if paper else "(trajkit's reference)"])
    rows.append(["regime of Δ (`aging`)", *[n["aging_raw"]["regime"] for n in nets], PAPER["phases"]])
    return rows


def print_table(summary: dict[str, Any]) -> None:
    rows = table_rows(summary)
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print(" | ".join(c.ljust(w[i]) for i, c in enumerate(r)))
        if k == 0:
            print("-+-".join("-" * x for x in w))


def markdown_table(summary: dict[str, Any]) -> str:
    """The table of docs/reproductions.md (``--markdown`` prints it)."""
    rows = table_rows(summary)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------------------


def overrides(args: argparse.Namespace) -> list[str]:
    ov = []
    if args.quick:
        ov = [f"run.steps={QUICK_STEPS}", "run.replicas=2", "metrics.gradient_batches=8",
              f"snapshots.steps={schedule_steps(QUICK_STEPS, n_base=20, n_lags=8)}", "sweep.model.hidden=[[4], [64]]"]
    if args.mnist_root:
        ov += [*MNIST, f"data.root={json.dumps(str(Path(args.mnist_root).expanduser().resolve()))}"]
    return ov + list(args.set)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "out" / STEM))
    ap.add_argument("--quick", action="store_true", help="tiny size for the smoke test")
    ap.add_argument("--mnist-root", default=None, help="folder with the MNIST IDX files: train on MNIST")
    ap.add_argument("--figures", default=None, help="also copy the figures and the numbers json here")
    ap.add_argument("--dry-run", action="store_true", help="validate the config and list the runs; train nothing")
    ap.add_argument("--set", action="append", default=[], help="extra config override KEY=VALUE (repeatable)")
    ap.add_argument("--n-boot", type=int, default=None, help=f"bootstrap replicates (default {N_BOOT}; --quick 20)")
    ap.add_argument("--markdown", default=None, metavar="JSON",
                    help="print the markdown table of a summary json (e.g. docs/figures/repro_1803_06969.json)")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown_table(json.loads(Path(args.markdown).read_text())))
        return 0
    if args.n_boot is None:
        args.n_boot = 20 if args.quick else N_BOOT
    out = Path(args.out)
    ov = overrides(args)
    cfg = load_config(CONFIG, ov)                       # validates every key before anything runs
    if args.dry_run:
        s = run_experiment(CONFIG, out / "ensemble", overrides=ov, dry_run=True, quiet=True)
        print(json.dumps({"data": cfg["data"], "runs": [r["name"] for r in s["runs"]]}, indent=2, default=str))
        return 0
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    run_experiment(CONFIG, out / "ensemble", overrides=ov, quiet=True, threads=1)
    t_rec = time.time() - t0
    ens = trajkit.open_ensemble([out / "ensemble"], check=False)
    nets = []
    for _, group in sorted(ens.groups("model.n_params").items()):
        label = f"width{group.archives[0].metadata['config']['model']['hidden'][0]}"
        nets.append(analyse_group(group, out, label, args.n_boot))
    figs = {"msd": out / f"{STEM}_msd.png", "noise": out / f"{STEM}_noise.png"}
    figure_msd(nets, figs["msd"])
    figure_noise(nets, figs["noise"])
    summary = {
        "study": "1803.06969", "data": cfg["data"]["name"], "quick": bool(args.quick),
        "steps": int(cfg["run"]["steps"]), "replicas": int(cfg["run"]["replicas"]),
        "lr": cfg["dynamics"]["lr"], "batch_size": cfg["dynamics"]["batch_size"],
        "gradient_batches": cfg["metrics"]["gradient_batches"], "n_boot": args.n_boot, "level": LEVEL,
        "record_s": round(t_rec, 1), "wall_s": round(time.time() - t0, 1),
        "nets": [{k: v for k, v in net.items() if not k.startswith("_")} for net in nets],
        "paper": PAPER,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if args.figures:
        dest = Path(args.figures)
        dest.mkdir(parents=True, exist_ok=True)
        for f in figs.values():
            shutil.copy(f, dest / f.name)
        for net in nets:
            shutil.copy(out / f"aging_{net['label']}.png", dest / f"{STEM}_aging_{net['label']}.png")
        (dest / f"{STEM}.json").write_text(json.dumps(summary, indent=2, default=float))
    print_table(summary)
    print(f"wall time {summary['wall_s']} s (recording {summary['record_s']} s); outputs in {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TrajkitError as e:                      # bad input: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
