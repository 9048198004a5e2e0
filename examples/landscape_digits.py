"""Worked example: the landscape of minima found by SGD at small and at large batch size (digits).

    .venv/bin/python examples/landscape_digits.py                  # records, analyses, writes figures
    .venv/bin/python examples/landscape_digits.py --replicas 6 --steps 1000     # a quicker look

What it does:
1. `trajkit record`: one-hidden-layer ReLU MLPs (64 → hidden → 10) on scikit-learn's digits, cross-entropy,
   plain SGD with learning rate ``lr``; 24 replicas at a small and at a large minibatch size (a sweep over
   ``dynamics.batch_size``), all replicas trained together.
2. Per batch size:
   - ``minima``: distances between the final parameter vectors before and after permutation alignment
     (every run aligned to run 0 by weight matching), average-linkage dendrogram, cophenetic correlation,
     ultrametricity index against its shuffled control, P(q);
   - ``interpolation``: train/test loss along the straight line between consecutive runs, raw and
     aligned, and the barriers;
   - ``rugosity``: sharpness, rugosity, increment exponent and correlation length around each minimum
     (filter-normalised directions and random walks), and their Spearman/Pearson correlation with the
     generalisation gap (test − train loss) with bootstrap intervals.

Figures (PNG), saved results and the numbers (``summary.json``) go to ``examples/out/landscape_digits/``;
``examples/landscape_digits.md`` discusses one run of it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import _common

import trajkit

CONFIG = """\
[model]
kind = "mlp"
hidden = [{hidden}]
activation = "relu"
[data]
name = "digits"
[loss]
name = "cross_entropy"
[dynamics]
kind = "sgd"
lr = {lr}
[run]
steps = {steps}
seed = 0
replicas = {replicas}
[snapshots]
schedule = "log"
n = 20
[sweep]
"dynamics.batch_size" = {batch_sizes}
"""



def record(out: Path, args: argparse.Namespace) -> Path:
    return _common.record(out, CONFIG.format(hidden=args.hidden, lr=args.lr, steps=args.steps, replicas=args.replicas,
                                 batch_sizes=args.batch_sizes), quiet=True)


save = _common.save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=24)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-sizes", type=int, nargs=2, default=[16, 512])
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "landscape_digits"))
    args = ap.parse_args()
    out = Path(args.out)
    ens_dir = record(out, args)
    groups = trajkit.open_ensemble([ens_dir]).groups("dynamics.batch_size")
    summary: dict[str, object] = {"replicas": args.replicas, "steps": args.steps, "hidden": args.hidden,
                                  "lr": args.lr}
    for batch, group in sorted(groups.items()):
        tag = f"B{batch}"
        mn = trajkit.analyze("minima", group, shuffles=50)
        save(mn, out, f"minima_{tag}")
        it = trajkit.analyze("interpolation", group, pairs="consecutive", points=21)
        save(it, out, f"interpolation_{tag}")
        rg = trajkit.analyze("rugosity", group, directions=8, radius=0.5, points=21, deltas=[0.005, 0.01, 0.02],
                             walks=2, walk_steps=50, n_boot=1000, cache=str(out / f"probes_{tag}"))
        save(rg, out, f"rugosity_{tag}")
        summary[tag] = {
            "minima": {k: mn.scalars[k] for k in ("mean_distance", "mean_distance_aligned", "mean_q_aligned",
                                                   "cophenetic", "ultrametricity", "ultrametricity_control",
                                                   "ultrametricity_control_std")},
            "interpolation": {k: it.scalars[k] for k in ("mean_barrier_train", "mean_barrier_train_aligned",
                                                          "mean_barrier_test", "mean_barrier_test_aligned")},
            "rugosity": {k: v for k, v in rg.scalars.items()
                         if k.startswith(("mean_", "spearman_", "pearson_")) and not k.endswith("_acc")
                         and "_acc_" not in k},
            "mean_gap": float(rg.arrays["gap"].mean()),
            "mean_train_loss": float(rg.arrays["train_loss"].mean()),
            "mean_test_accuracy": float(rg.arrays["test_accuracy"].mean()),
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
