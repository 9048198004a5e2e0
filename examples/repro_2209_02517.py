"""Reproduction gallery: 2209.02517 (Herrera Segura, Tapias, Montoya 2022) — subaging in underparametrised nets.

    python examples/repro_2209_02517.py                     # full size (docs/reproductions.md)
    python examples/repro_2209_02517.py --quick             # a tiny size, for the smoke test
    python examples/repro_2209_02517.py --mnist-root DIR    # MNIST instead of the teacher data (IDX files)
    python examples/repro_2209_02517.py --dry-run           # print the resolved config, train nothing
    python examples/repro_2209_02517.py --figures docs/figures

Records examples/repro_2209_02517.toml — ReLU MLPs trained by minibatch SGD at a fixed total number of
parameters N, underparametrised (N ≈ 150 ≪ P = 1,000 teacher-labelled examples) and overparametrised
(N ≈ 10,000 ≫ P), each at depth 1, 2 and 3 — then runs the `aging` analysis on the mean-square
displacement of the weights, one result per (N, depth) sweep point (μ from the collapse in t/tw^μ, the
h-form and τ(tw), bootstrap intervals over replicas), and the `loss` analysis (power-law tail of the
training loss). Figures and ``summary.json`` go
to ``--out`` (default ``examples/out/repro_2209_02517/``); the table at the end puts the numbers next to
the paper's stated result.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import _common  # examples/_common.py (the script's folder is on sys.path)
import matplotlib.pyplot as plt

import trajkit
from trajkit.experiments import load_config, run_experiment

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "repro_2209_02517.toml"
STEM = "repro_2209_02517"
QUICK = ["run.steps=600", "run.replicas=2", "snapshots.n=30", "sweep.model.depth=[1, 2]"]
#: MNIST (28×28 inputs, 10 classes): the parameter counts scaled with the 784 inputs — N ≈ 4,000 (width 5
#: at depth 1) against P = 10,000 training images, and N ≈ 100,000 ≫ P; pixels / 255 (the paper's
#: preprocessing is not stated in its abstract, the source read for this gallery)
MNIST = ['data.name="mnist"', 'data.preprocess="none"', "data.n_train=10000", "data.n_test=2000",
         "sweep.model.n_params=[4000, 100000]"]
PAPER = {
    "under": "subaging, μ < 1",
    "depth": "μ robust across architectures at constant N",
    "over": "not stated (the abstract speaks of the underparametrised regime)",
    "loss": "slow evolution of the loss",
}


def overrides_for(args: argparse.Namespace) -> list[str]:
    """The ``--set``-style overrides of the chosen size and data."""
    out = list(QUICK if args.quick else [])
    if args.mnist_root:
        out += [*MNIST, f"data.root={json.dumps(str(Path(args.mnist_root).resolve()))}"]
    return out


def waiting_times_for(steps: int) -> list[int]:
    """Five log-spaced waiting times from steps/200 (after the first fast descent) to steps/5."""
    return [int(s) for s in np.geomspace(max(steps // 200, 2), steps // 5, 5).round()]


def analyse(ens_dir: Path, steps: int) -> tuple[trajkit.analysis.Result, trajkit.analysis.Result]:
    """``aging`` (msd) and ``loss`` per (N, depth) sweep point."""
    tws = waiting_times_for(steps)
    ag = trajkit.analyze("aging", [ens_dir], waiting_times=tws, snap="nearest", observable="msd", n_boot=100)
    with warnings.catch_warnings(record=True):          # thresholds a run never reaches are listed, not fatal
        warnings.simplefilter("always")
        lo = trajkit.analyze("loss", [ens_dir], thresholds=[0.3, 0.1])
    return ag, lo


def _f(x):
    return None if x is None or not np.isfinite(x) else float(x)


def points(ag, lo, ens_dir: Path) -> list[dict]:
    """One row per sweep point: N (target and actual), depth, width, μ estimates with intervals, regime, β."""
    ens = trajkit.open_ensemble([ens_dir], check=False)
    meta = {}
    for group in ens.groups("config.model").values():
        a = group.archives[0].metadata
        cfg = a["config"]["model"]
        meta[(int(cfg["n_params"]), int(cfg["depth"]))] = {
            "width": int(a["model"]["spec"]["hidden"][0]), "n_params": int(a["model"]["n_params"]),
            "n_train": int(a["dataset"]["n_train"]),
            "final_loss": float(np.mean([np.asarray(r.metrics["train_loss"])[-1] for r in group.archives]))}
    depth = ag.arrays["group.model.depth"]
    target = ag.arrays["group.model.n_params"]
    lo_groups = [str(g) for g in lo.coords["group"]]
    rows = []
    for g, name in enumerate(ag.coords["group"]):
        key = (int(target[g]), int(depth[g]))
        s = ag.scalars
        j = lo_groups.index(str(meta[key]["n_params"]))      # `loss` groups by the actual parameter count
        lag = ag.coords["step"] - ag.coords["tw_step"][0]
        msd0 = ag.arrays["msd"][g, 0][(lag > 0) & np.isfinite(ag.arrays["msd"][g, 0])]
        rows.append({
            "group": str(name), "n_params_target": key[0], "depth": key[1], **meta[key],
            "regime_class": "under" if meta[key]["n_params"] < meta[key]["n_train"] else "over",
            "regime": s["regime"][g],
            "mu_collapse": _f(s["mu_collapse"][g]), "mu_collapse_ci": [_f(v) for v in s["mu_collapse_ci"][g]],
            "mu_collapse_raw": _f(s["mu_collapse_raw"][g]), "collapse_quality": _f(s["collapse_quality"][g]),
            "mu_h": _f(s["mu_h"][g]), "mu_h_ci": [_f(v) for v in s["mu_h_ci"][g]],
            "mu_tau": _f(s["mu_tau"][g]), "mu_tau_ci": [_f(v) for v in s["mu_tau_ci"][g]],
            "beta": _f(lo["beta"][j]), "beta_ci": [_f(v) for v in lo["beta_ci"][j]],
            "loss_inf": _f(lo["loss_inf"][j]),
            "msd_first_tw": [_f(msd0[0]), _f(msd0[-1])]})   # Δ(tw₁, tw₁ + t) at the shortest and longest lag
    return sorted(rows, key=lambda r: (r["n_params_target"], r["depth"]))


def depth_spread(rows: list[dict]) -> dict:
    """Across the depths of one N: max − min of each μ estimate (over the depths that measured it) and
    whether their intervals share a common value (max of the lower bounds ≤ min of the upper bounds)."""
    out: dict[str, object] = {}
    for est in ("mu_collapse", "mu_tau"):
        got = [r for r in rows if r[est] is not None and r[est + "_ci"][0] is not None]
        out[est] = float(max(r[est] for r in got) - min(r[est] for r in got)) if len(got) >= 2 else None
        out[est + "_depths"] = [r["depth"] for r in got]
        out[est + "_overlap"] = (bool(max(r[est + "_ci"][0] for r in got) <= min(r[est + "_ci"][1] for r in got))
                                 if len(got) >= 2 else None)
    return out


def figures(ag, rows: list[dict], out: Path) -> list[Path]:
    """(1) MSD against t/tw^μ per sweep point; (2) μ per depth with intervals, under vs over."""
    files = []
    names = [str(g) for g in ag.coords["group"]]
    tws, step = ag.coords["tw_step"], ag.coords["step"]
    depths = sorted({r["depth"] for r in rows})
    classes = [c for c in ("under", "over") if any(r["regime_class"] == c for r in rows)]
    fig, axes = plt.subplots(len(classes), len(depths), figsize=(3.2 * len(depths), 2.7 * len(classes)),
                             dpi=90, squeeze=False)
    for r in rows:
        ax = axes[classes.index(r["regime_class"])][depths.index(r["depth"])]
        g = names.index(r["group"])
        mu = r["mu_collapse"] if r["mu_collapse"] is not None else r["mu_collapse_raw"]
        for k, tw in enumerate(tws):
            lag = (step - tw).astype(float)
            y = ag.arrays["msd"][g, k]
            ok = (lag > 0) & np.isfinite(y) & (y > 0)
            ax.loglog(lag[ok] / float(tw) ** mu, y[ok], lw=1, color=plt.cm.viridis(k / max(len(tws) - 1, 1)),
                      label=f"tw={int(tw)}")
        ci = r["mu_collapse_ci"]
        ci_txt = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci[0] is not None else ""
        ax.set_title(f"N={r['n_params']} d={r['depth']} w={r['width']}\nμ={mu:.2f}{ci_txt} {r['regime']}",
                     fontsize=8)
        ax.set_xlabel("t / tw^μ", fontsize=8)
        ax.set_ylabel("Δ(tw, tw+t)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    files.append(out / f"{STEM}_collapse.png")
    fig.savefig(files[-1])
    fig, ax = plt.subplots(figsize=(4.6, 3.4), dpi=90)
    for c, color, dx in (("under", "tab:blue", -0.06), ("over", "tab:red", 0.06)):
        sel = [r for r in rows if r["regime_class"] == c]
        for est, marker, ddx in (("mu_collapse", "o", 0.0), ("mu_tau", "s", 0.12)):
            xs, ys, err = [], [], []
            for r in sel:
                v, ci = r[est], r[est + "_ci"]
                if v is None:
                    continue
                xs.append(r["depth"] + dx + ddx)
                ys.append(v)
                err.append([v - ci[0] if ci[0] is not None else 0, ci[1] - v if ci[1] is not None else 0])
            if xs:
                n = sel[0]["n_params_target"]
                ax.errorbar(xs, ys, yerr=np.array(err).T, fmt=marker, color=color, capsize=3,
                            mfc="white" if est == "mu_tau" else color,
                            label=f"N≈{n} ({c}), {'collapse' if est == 'mu_collapse' else 'τ(tw)'}")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xticks(depths)
    ax.set_xlabel("depth (hidden layers) at fixed N")
    ax.set_ylabel("aging exponent μ (95 % interval)")
    ax.set_title("μ per depth; dashed: simple aging μ = 1", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    files.append(out / f"{STEM}_mu_depth.png")
    fig.savefig(files[-1])
    plt.close("all")
    return files


def _fmt(v, c=None):
    if v is None:
        return "–"
    return f"{v:.2f} [{c[0]:.2f}, {c[1]:.2f}]" if c and c[0] is not None else f"{v:.2f}"


def table(summary: dict) -> str:
    """quantity | this run | paper."""
    lines = ["quantity | this run | paper", "---|---|---"]
    for r in summary["points"]:
        paper = PAPER["under"] if r["regime_class"] == "under" else PAPER["over"]
        mu = r["mu_collapse"] if r["mu_collapse"] is not None else r["mu_collapse_raw"]
        lines.append(f"μ_collapse, N={r['n_params']} ({r['regime_class']}), depth {r['depth']} | "
                     f"{_fmt(mu, r['mu_collapse_ci'])} ({r['regime']}) | {paper}")
        lines.append(f"μ_τ, N={r['n_params']} ({r['regime_class']}), depth {r['depth']} | "
                     f"{_fmt(r['mu_tau'], r['mu_tau_ci'])} | {paper}")
    for c in ("under", "over"):
        sp = summary["depth_spread"][c]
        for est in ("mu_collapse", "mu_tau"):
            if sp[est] is not None:
                lines.append(f"spread of {est} over depths {sp[est + '_depths']}, {c} | {sp[est]:.2f} "
                             f"(intervals overlap: {sp[est + '_overlap']}) | "
                             f"{PAPER['depth'] if c == 'under' else PAPER['over']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "out" / STEM)
    p.add_argument("--figures", type=Path, default=None, help="also copy the figures and the numbers here")
    p.add_argument("--quick", action="store_true", help="a tiny size, for the smoke test")
    p.add_argument("--mnist-root", default=None, help="folder with the MNIST IDX files: [data] becomes mnist")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and train nothing")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    overrides = overrides_for(args)
    cfg = load_config(CONFIG, overrides)
    if args.dry_run:
        print(json.dumps(cfg, indent=1, default=str))
        return {"config": cfg}
    args.out.mkdir(parents=True, exist_ok=True)
    ens_dir = args.out / "ensemble"
    run_experiment(CONFIG, ens_dir, overrides, quiet=True, threads=args.threads)
    steps = int(cfg["run"]["steps"])
    ag, lo = analyse(ens_dir, steps)
    rows = points(ag, lo, ens_dir)
    spread = {c: depth_spread([r for r in rows if r["regime_class"] == c]) for c in ("under", "over")}
    summary = {"study": "2209.02517", "data": cfg["data"]["name"], "steps": steps,
               "replicas": int(cfg["run"]["replicas"]), "waiting_times": [int(t) for t in ag.coords["tw_step"]],
               "overrides": overrides, "points": rows, "depth_spread": spread, "paper": PAPER}
    files = figures(ag, rows, args.out)
    _common.publish(args.out, summary, files, args.figures, STEM)
    print(table(summary))
    return summary


if __name__ == "__main__":
    main()
