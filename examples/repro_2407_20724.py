"""Reproduction of arXiv:2407.20724 (Liao et al. 2024): random walks, permutation-interpolation, hierarchical
clustering and ruggedness vs generalisation of SGD solutions, on digits (or MNIST).

    python examples/repro_2407_20724.py                    # full size (80 runs), about 5-10 min on 2 cores
    python examples/repro_2407_20724.py --quick            # smoke test (8 short runs), under a minute
    python examples/repro_2407_20724.py --mnist-root DIR   # MNIST IDX files in DIR (standardised pixels)
    python examples/repro_2407_20724.py --dry-run          # check the config only; nothing trained

Protocol (examples/repro_2407_20724.toml): one-hidden-layer ReLU MLPs trained by plain SGD, 40 replicas at
a small (16) and a large (512) mini-batch. On each run's last snapshot, per batch size:

1. random walks from each solution (``rugosity``): filter-normalised random-walk steps of several sizes δ,
   the variance of the loss increments ``Var ΔL ∝ δ^γ`` (γ, the increment exponent) and their correlation
   length; plus the loss profiles along random directions → sharpness and rugosity (arc/chord);
2. permutation-interpolation (``interpolation``): train/test loss on the straight line between consecutive
   solutions, raw and after aligning the second onto the first by weight matching; the barriers;
3. hierarchical clustering (``minima``): distances after aligning each pair by weight matching, average-
   linkage dendrogram, cophenetic correlation, the ultrametricity index against its shuffled control and
   against the same for i.i.d. Gaussian points of the ensemble's size and dimension (no hierarchy);
4. ruggedness vs generalisation: Spearman's ρ of sharpness / rugosity with the gap ``test − train loss``
   across solutions, 95 % bootstrap intervals, within each batch size and pooled over both. The paper's
   "flatter minima generalise better" is the sign claim ρ > 0 (a sharper / more rugged minimum has a
   larger gap).

Writes figures, the saved results and ``summary.json`` under ``--out`` (default
``examples/out/repro_2407_20724/``), ``--figures DIR`` copies the figures as ``repro_2407_20724_*.png``
and the numbers as ``repro_2407_20724.json``; prints ``quantity | this run | paper`` at the end.
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

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

import trajkit
from trajkit.errors import TrajkitError
from trajkit.experiments import run_experiment
from trajkit.landscape import clustering, ultrametric
from trajkit.landscape.correlation import correlate

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "repro_2407_20724.toml"
STEM = "repro_2407_20724"
DPI = 90

#: --quick: 4 replicas per batch size (the clustering needs >= 3), short training, few probes.
QUICK = ["run.replicas=4", "run.steps=300", "snapshots.n=8"]

#: the paper's statements, from its abstract (arXiv:2407.20724); no number is stated there.
PAPER = {
    "walk": "random walks in parameter space used to unravel the landscape's structure (no exponent stated)",
    "barrier": "copies of identical regions due to the hidden-layer permutation symmetry; their connection "
               "studied by permutation-interpolation (no barrier value stated)",
    "hierarchy": "hierarchy among trained solutions, reminiscent of RSB (qualitative)",
    "flat": "improvement (better generalisation) of flattened minima: rho > 0",
    "batch": "— (no per-batch-size number stated)",
    "batch_gap": "none stated; if the flatter set is the better one: difference < 0",
}


def analysis_params(quick: bool) -> dict[str, dict[str, Any]]:
    """Parameters of the three analyses (full size, or the smoke-test size)."""
    if quick:
        return {"minima": {"shuffles": 20},
                "interpolation": {"pairs": "consecutive", "points": 11},
                "rugosity": {"directions": 2, "radius": 0.5, "points": 11, "deltas": [0.005, 0.01, 0.02],
                             "walks": 1, "walk_steps": 12, "n_boot": 200}}
    return {"minima": {"shuffles": 100},
            "interpolation": {"pairs": "consecutive", "points": 21},
            "rugosity": {"directions": 8, "radius": 0.5, "points": 21, "deltas": [0.0025, 0.005, 0.01, 0.02],
                         "walks": 2, "walk_steps": 50, "n_boot": 2000}}


def overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides of the config for ``--quick`` and ``--mnist-root``."""
    out = list(QUICK) if args.quick else []
    if args.mnist_root:
        # MNIST: pixels standardised with the training-set statistics; a seeded 10,000 / 2,000 subsample keeps
        # the probes (one loss per parameter vector on the whole training set) affordable on 2 cores.
        root = Path(args.mnist_root).resolve()
        out += ['data.name="mnist"', f'data.root="{root}"', 'data.preprocess="standardize"',
                f"data.n_train={1000 if args.quick else 10000}", f"data.n_test={500 if args.quick else 2000}"]
    return out


def _r(x: Any, nd: int = 3) -> Any:
    """Round a float (or a list of them) for the JSON; NaN stays NaN (written as NaN)."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_r(v, nd) for v in x]
    return float(round(float(x), nd)) if np.isfinite(float(x)) else float("nan")


def analyse_group(group: Any, out: Path, tag: str, params: dict[str, dict[str, Any]]) -> tuple[dict, dict]:
    """The three analyses on one batch size's runs: ``(numbers, raw arrays for the overview figure)``."""
    mn = trajkit.analyze("minima", group, align="pairwise", **params["minima"])
    _save(mn, out, f"minima_{tag}")
    # the same with every run aligned to run 0 only: pairs (0, b) get their own best match, the others not,
    # which biases the triangles through run 0 (kept to show the effect on the ultrametricity index)
    ref = trajkit.analyze("minima", group, align="reference", **params["minima"]).scalars
    it = trajkit.analyze("interpolation", group, **params["interpolation"])
    _save(it, out, f"interpolation_{tag}")
    rg = trajkit.analyze("rugosity", group, cache=str(out / f"probes_{tag}"), **params["rugosity"])
    _save(rg, out, f"rugosity_{tag}")
    s_m, s_i, s_r, a = mn.scalars, it.scalars, rg.scalars, rg.arrays
    nums: dict[str, Any] = {
        "n_runs": int(s_m["n_runs"]),
        "train_loss": float(a["train_loss"].mean()), "test_loss": float(a["test_loss"].mean()),
        "test_accuracy": float(a["test_accuracy"].mean()), "gap": float(a["gap"].mean()),
        "gap_std": float(a["gap"].std(ddof=1)),
        "mean_distance": s_m["mean_distance"], "mean_distance_aligned": s_m["mean_distance_aligned"],
        "mean_q_aligned": s_m["mean_q_aligned"],
        "reference": {k: ref[k] for k in ("mean_distance_aligned", "cophenetic", "ultrametricity",
                                          "ultrametricity_control", "ultrametricity_control_std")},
        "cophenetic": s_m["cophenetic"], "ultrametricity": s_m["ultrametricity"],
        "ultrametricity_control": s_m["ultrametricity_control"],
        "ultrametricity_control_std": s_m["ultrametricity_control_std"],
        **{k: s_i[k] for k in ("mean_barrier_train", "mean_barrier_train_aligned", "mean_barrier_test",
                               "mean_barrier_test_aligned")},
        "barrier_train_reduction": 1.0 - s_i["mean_barrier_train_aligned"] / s_i["mean_barrier_train"],
        **{f"mean_{s}": s_r[f"mean_{s}"] for s in ("sharpness", "rugosity", "increment_exponent",
                                                   "correlation_length")},
    }
    for s in ("sharpness", "rugosity", "increment_exponent", "correlation_length"):
        nums[f"spearman_{s}_gap"] = s_r[f"spearman_{s}"]
        nums[f"spearman_{s}_gap_ci"] = list(s_r[f"spearman_{s}_ci"])
        nums[f"spearman_{s}_gap_acc"] = s_r[f"spearman_{s}_acc"]
        nums[f"spearman_{s}_gap_acc_ci"] = list(s_r[f"spearman_{s}_acc_ci"])
    raw = {"sharpness": a["sharpness"], "rugosity": a["rugosity"], "gap": a["gap"],
           "gap_accuracy": a["gap_accuracy"], "increment_variance": a["increment_variance"],
           "deltas": rg.coords["delta"], "path_train": it.arrays["path_train"],
           "path_train_aligned": it.arrays["path_train_aligned"], "alpha": it.coords["alpha"]}
    return nums, raw


def _savefig(fig: Any, path: Path, limit: int = 120_000) -> None:
    """Save at ``DPI``, lowering it in steps of 10 while the PNG is over ``limit`` bytes (the gallery's cap)."""
    for dpi in range(DPI, 40, -10):
        fig.savefig(path, dpi=dpi)
        if path.stat().st_size < limit:
            break
    plt.close(fig)


def structureless_reference(r: int, n: int, shuffles: int, seed: int = 0) -> dict[str, float]:
    """The same clustering statistics for ``r`` i.i.d. standard Gaussian points in ``n`` dimensions (no
    hierarchy by construction): the baseline of the ultrametricity index and its shuffled control at the
    ensemble's size and dimension (:mod:`trajkit.landscape.ultrametric`)."""
    d = clustering.distance_matrix(np.random.default_rng(seed).standard_normal((r, n)))
    control, control_std = ultrametric.ultrametricity_control(d, shuffles, seed)
    return {"ultrametricity": ultrametric.ultrametricity_index(d), "ultrametricity_control": control,
            "ultrametricity_control_std": control_std,
            "cophenetic": clustering.cophenetic_correlation(clustering.linkage(d, "average"), d)}


def _save(result: Any, out: Path, name: str) -> None:
    _savefig(result.plot(), out / f"{name}.png")
    result.save(out / name)


def pooled(raws: dict[str, dict], n_boot: int) -> dict[str, Any]:
    """Spearman's ρ over the solutions of both batch sizes together (the batch-size effect included)."""
    out: dict[str, Any] = {}
    for s in ("sharpness", "rugosity"):
        x = np.concatenate([r[s] for r in raws.values()])
        for target, suffix in (("gap", ""), ("gap_accuracy", "_acc")):
            y = np.concatenate([r[target] for r in raws.values()])
            c = correlate(x, y, n_boot=n_boot, seed=0)
            out[f"spearman_{s}_gap{suffix}"] = c["spearman"]
            out[f"spearman_{s}_gap{suffix}_ci"] = list(c["spearman_ci"])
    out["n_runs"] = int(sum(r["gap"].size for r in raws.values()))
    if len(raws) == 2:  # small minus large batch: differences of the means, percentile bootstrap over runs
        (ta, a), (tb, b) = raws.items()
        rng = np.random.default_rng(0)
        for k in ("sharpness", "rugosity", "gap", "gap_accuracy"):
            x, y = np.asarray(a[k], dtype=float), np.asarray(b[k], dtype=float)
            boot = [rng.choice(x, x.size).mean() - rng.choice(y, y.size).mean() for _ in range(n_boot)]
            out[f"diff_{k}"] = float(x.mean() - y.mean())
            out[f"diff_{k}_ci"] = [float(v) for v in np.percentile(boot, [2.5, 97.5])]
        out["diff"] = f"{ta} - {tb}"
    return out


def overview(raws: dict[str, dict], nums: dict[str, dict], pool: dict[str, Any], path: Path) -> None:
    """One figure of the four protocols side by side."""
    fig, ax = plt.subplots(2, 2, figsize=(9.6, 7.4))
    colours = dict(zip(raws, ("tab:blue", "tab:orange", "tab:green"), strict=False))
    a = ax[0, 0]
    for tag, r in raws.items():
        inc = r["increment_variance"]
        m = np.nanmean(inc, axis=0)
        a.loglog(r["deltas"], m, "o-", color=colours[tag],
                 label=f"{tag}: γ = {nums[tag]['mean_increment_exponent']:.2f} (mean over runs)")
        for v in inc[:10]:  # the first ten runs (every line would bloat the PNG)
            a.loglog(r["deltas"], v, "-", color=colours[tag], alpha=0.15, lw=0.6)
    d = np.asarray(next(iter(raws.values()))["deltas"], dtype=float)
    m0 = np.nanmean(next(iter(raws.values()))["increment_variance"], axis=0)
    for g, ls in ((2, ":"), (4, "--")):
        a.loglog(d, m0[0] * (d / d[0]) ** g, ls, color="k", lw=0.8, label=rf"$\propto\delta^{g}$ (guide)")
    a.set_xticks(d, [f"{v:g}" for v in d])
    a.minorticks_off()
    a.set_xlabel(r"random-walk step $\delta$ (filter-normalised)")
    a.set_ylabel(r"Var $\Delta L_{\rm train}$ per step")
    a.set_title("(1) random walks from the solutions", fontsize=9)
    a.legend(fontsize=7)
    a = ax[0, 1]
    for tag, r in raws.items():
        al = r["alpha"]
        a.plot(al, r["path_train"].mean(0), "-", color=colours[tag],
               label=f"{tag} raw: B = {nums[tag]['mean_barrier_train']:.3f}")
        a.plot(al, r["path_train_aligned"].mean(0), "--", color=colours[tag],
               label=f"{tag} aligned: B = {nums[tag]['mean_barrier_train_aligned']:.3f}")
    a.set_xlabel(r"$\alpha$ on $(1-\alpha)\,w_a + \alpha\,\pi(w_b)$")
    a.set_ylabel(r"$L_{\rm train}$ (mean over consecutive pairs)")
    a.set_title("(2) permutation-interpolation: raw vs weight-matched", fontsize=9)
    a.legend(fontsize=7)
    a = ax[1, 0]
    blocks = [(t, nums[t]) for t in raws] + [(f"Gaussian\n(R = {nums[t]['n_runs']})", nums[t]["gaussian"])
                                              for t in list(raws)[:1]]
    x = np.arange(len(blocks))
    um = [b["ultrametricity"] for _, b in blocks]
    ctl = [b["ultrametricity_control"] for _, b in blocks]
    sd = [b["ultrametricity_control_std"] for _, b in blocks]
    a.bar(x - 0.18, um, 0.36, color="tab:purple", label="ultrametricity index K (aligned distances)")
    a.bar(x + 0.18, ctl, 0.36, yerr=sd, color="tab:gray", label="shuffled control (± sd)")
    for k, (_, b) in enumerate(blocks):
        a.text(k, max(um[k], ctl[k] + sd[k]) * 1.03, f"cophenetic {b['cophenetic']:.2f}", ha="center",
               fontsize=7)
    a.set_xticks(x, [name for name, _ in blocks])
    a.set_ylim(0, max(max(um), max(c + e for c, e in zip(ctl, sd, strict=True))) * 1.5)
    a.set_ylabel("mean (d_max − d_mid)/d_min over triangles")
    a.set_title("(3) hierarchy: K well below its control = ultrametric", fontsize=9)
    a.legend(fontsize=7, loc="upper right")
    a = ax[1, 1]
    for tag, r in raws.items():
        a.scatter(r["sharpness"], r["gap"], s=16, color=colours[tag],
                  label=f"{tag}: ρ = {nums[tag]['spearman_sharpness_gap']:.2f}")
    ci = pool["spearman_sharpness_gap_ci"]
    a.set_xlabel(r"sharpness $\langle L(w \pm r\,d)\rangle_d - L(w)$, r = 0.5")
    a.set_ylabel(r"gap $L_{\rm test} - L_{\rm train}$")
    a.set_title(f"(4) both batch sizes: Spearman ρ = {pool['spearman_sharpness_gap']:.2f} "
                f"[{ci[0]:.2f}, {ci[1]:.2f}]\n(paper, flatter generalises better: ρ > 0)", fontsize=9)
    a.legend(fontsize=7)
    fig.tight_layout()
    _savefig(fig, path)


def table(summary: dict[str, Any]) -> list[dict[str, str]]:
    """Rows ``quantity | this run | paper`` (the printed table and the doc's)."""
    rows: list[dict[str, str]] = []
    tags = summary["batch_sizes"]

    def ci(v: list[float]) -> str:
        return f"[{v[0]:.2f}, {v[1]:.2f}]"

    def ci3(v: list[float]) -> str:
        return f"[{v[0]:.3f}, {v[1]:.3f}]"

    def ci4(v: list[float]) -> str:
        return f"[{v[0]:.4f}, {v[1]:.4f}]"

    for t in tags:
        n = summary[t]
        rows += [
            {"quantity": f"{t}: final train loss / test accuracy",
             "this run": f"{n['train_loss']:.3f} / {n['test_accuracy']:.3f}", "paper": "—"},
            {"quantity": f"{t}: generalisation gap test − train loss (mean ± sd over runs)",
             "this run": f"{n['gap']:.3f} ± {n['gap_std']:.3f}", "paper": "—"},
            {"quantity": f"{t}: random-walk increment exponent γ (Var ΔL ∝ δ^γ)",
             "this run": f"{n['mean_increment_exponent']:.2f}", "paper": PAPER["walk"]},
            {"quantity": f"{t}: random-walk correlation length (smallest δ)",
             "this run": f"{n['mean_correlation_length']:.4f}", "paper": PAPER["walk"]},
            {"quantity": f"{t}: train-loss barrier, raw → aligned",
             "this run": f"{n['mean_barrier_train']:.3f} → {n['mean_barrier_train_aligned']:.3f}",
             "paper": PAPER["barrier"]},
            {"quantity": f"{t}: test-loss barrier, raw → aligned",
             "this run": f"{n['mean_barrier_test']:.3f} → {n['mean_barrier_test_aligned']:.3f}",
             "paper": PAPER["barrier"]},
            {"quantity": f"{t}: mean distance raw → aligned",
             "this run": f"{n['mean_distance']:.3f} → {n['mean_distance_aligned']:.3f}", "paper": "—"},
            {"quantity": f"{t}: cophenetic correlation (average linkage)",
             "this run": f"{n['cophenetic']:.2f}", "paper": PAPER["hierarchy"]},
            {"quantity": f"{t}: ultrametricity index (shuffled control ± sd)",
             "this run": f"{n['ultrametricity']:.4f} ({n['ultrametricity_control']:.4f} ± "
                         f"{n['ultrametricity_control_std']:.4f})", "paper": PAPER["hierarchy"]},
            {"quantity": f"{t}: K / control, pairwise alignment; all aligned to run 0; i.i.d. Gaussian points",
             "this run": f"{n['ultrametricity'] / n['ultrametricity_control']:.3f}; "
                         f"{n['reference']['ultrametricity'] / n['reference']['ultrametricity_control']:.3f}; "
                         f"{n['gaussian']['ultrametricity'] / n['gaussian']['ultrametricity_control']:.3f}",
             "paper": PAPER["hierarchy"]},
            {"quantity": f"{t}: cophenetic correlation of i.i.d. Gaussian points (same R, N)",
             "this run": f"{n['gaussian']['cophenetic']:.2f}", "paper": "—"},
            {"quantity": f"{t}: mean sharpness / rugosity",
             "this run": f"{n['mean_sharpness']:.3f} / {n['mean_rugosity']:.4f}", "paper": "—"},
            {"quantity": f"{t}: Spearman ρ(sharpness, gap) [95 % bootstrap]",
             "this run": f"{n['spearman_sharpness_gap']:.2f} {ci(n['spearman_sharpness_gap_ci'])}",
             "paper": PAPER["flat"]},
            {"quantity": f"{t}: Spearman ρ(rugosity, gap)",
             "this run": f"{n['spearman_rugosity_gap']:.2f} {ci(n['spearman_rugosity_gap_ci'])}",
             "paper": PAPER["flat"]},
        ]
    p = summary["pooled"]
    rows += [
        {"quantity": "both batch sizes: Spearman ρ(sharpness, gap)",
         "this run": f"{p['spearman_sharpness_gap']:.2f} {ci(p['spearman_sharpness_gap_ci'])}",
         "paper": PAPER["flat"]},
        {"quantity": "both batch sizes: Spearman ρ(rugosity, gap)",
         "this run": f"{p['spearman_rugosity_gap']:.2f} {ci(p['spearman_rugosity_gap_ci'])}",
         "paper": PAPER["flat"]},
        {"quantity": "both batch sizes: small − large batch, mean sharpness [95 % bootstrap]",
         "this run": f"{p['diff_sharpness']:.3f} {ci3(p['diff_sharpness_ci'])}",
         "paper": PAPER["batch"]},
        {"quantity": "both batch sizes: small − large batch, mean gap",
         "this run": f"{p['diff_gap']:.4f} {ci4(p['diff_gap_ci'])}",
         "paper": PAPER["batch_gap"]},
        {"quantity": "both batch sizes: Spearman ρ(sharpness, train − test accuracy)",
         "this run": f"{p['spearman_sharpness_gap_acc']:.2f} {ci(p['spearman_sharpness_gap_acc_ci'])}",
         "paper": PAPER["flat"]},
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny size for the smoke test")
    ap.add_argument("--mnist-root", default=None, help="folder with the MNIST IDX files (switches [data])")
    ap.add_argument("--out", default=str(HERE / "out" / STEM))
    ap.add_argument("--figures", default=None, help="also copy figures and numbers here (e.g. docs/figures)")
    ap.add_argument("--dry-run", action="store_true", help="validate the config and plan; train nothing")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads while recording")
    args = ap.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    sets = overrides(args)
    if args.dry_run:
        plan = run_experiment(CONFIG, out / "ensemble", overrides=sets, quiet=True, dry_run=True)
        print(json.dumps({"dry_run": True, "n_runs": plan["n_runs"], "overrides": sets,
                          "runs": [r["name"] for r in plan["runs"]]}, indent=1))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    rec = run_experiment(CONFIG, out / "ensemble", overrides=sets, quiet=True, threads=args.threads)
    t_rec = time.perf_counter() - t0
    params = analysis_params(args.quick)
    groups = trajkit.open_ensemble([out / "ensemble"]).groups("dynamics.batch_size")
    nums: dict[str, dict] = {}
    raws: dict[str, dict] = {}
    for batch, group in sorted(groups.items()):
        tag = f"B{batch}"
        nums[tag], raws[tag] = analyse_group(group, out, tag, params)
    pool = pooled(raws, params["rugosity"]["n_boot"])
    n_params = int(rec["runs"][0]["n_params"])
    for tag in nums:
        nums[tag]["gaussian"] = structureless_reference(nums[tag]["n_runs"], n_params, params["minima"]["shuffles"])
    overview(raws, nums, pool, out / "overview.png")
    wall = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "study": "2407.20724", "quick": args.quick, "data": "mnist" if args.mnist_root else "digits",
        "overrides": sets, "n_params": n_params, "batch_sizes": list(nums),
        "analysis_params": params, **nums, "pooled": pool,
        "sign_convention": "rho(sharpness or rugosity, gap = test - train loss) > 0 <=> flatter minima generalise "
                           "better (the paper's claim)",
        "wall_s": round(wall, 1), "record_s": round(t_rec, 1),
    }
    summary["table"] = table(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    if args.figures:
        dest = Path(args.figures)
        dest.mkdir(parents=True, exist_ok=True)
        first = next(iter(nums))  # the minima and interpolation figures look alike at both batch sizes
        for png in ["overview", f"minima_{first}", f"interpolation_{first}"] + [f"rugosity_{t}" for t in nums]:
            shutil.copy(out / f"{png}.png", dest / f"{STEM}_{png}.png")
        shutil.copy(out / "summary.json", dest / f"{STEM}.json")
    print(f"\n{'quantity':<64} | {'this run':<30} | paper")
    for row in summary["table"]:
        print(f"{row['quantity']:<64} | {row['this run']:<30} | {row['paper']}")
    print(f"\nwall time {wall:.0f} s (recording {t_rec:.0f} s); results in {out}")
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TrajkitError as e:  # bad input: one line naming the key and the fix
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
