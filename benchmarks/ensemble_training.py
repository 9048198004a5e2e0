"""Batched replicas vs one replica at a time, and the cost of recording, measured in one run.

16 replicas of an MLP 64-64-64-10 on scikit-learn's digits, SGD (batch 64) for 2,000 steps, ~60
log-spaced snapshots. Three variants share the data, initial parameters and minibatch streams:

- ``sequential``: 16 ordinary modules updated one after the other each step (no writing);
- ``batched``: the 16 replicas as stacked parameters, one forward/backward (no writing);
- ``batched+record``: the same, writing 16 archives (params at snapshots, metrics, per-step trace).

Variants alternate over ``--repeats`` rounds; the script prints median wall times, the speed-up
``sequential / batched`` and the recording overhead ``batched+record / batched − 1``, plus peak RSS.

    .venv/bin/python benchmarks/ensemble_training.py            # full size
    .venv/bin/python benchmarks/ensemble_training.py --quick    # 200 steps, 1 round
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trajkit.archive import create
from trajkit.experiments.dynamics import Dynamics
from trajkit.experiments.models import build_model
from trajkit.experiments.replicas import BatchedReplicas, SequentialReplicas
from trajkit.experiments.runner import ArchiveSink, _train_data, initial_params, plan_experiment
from trajkit.experiments.training import NullSink, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 steps, one round (a smoke run)")
    ap.add_argument("--replicas", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    steps = args.steps or (200 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    R = args.replicas
    over = ["model.hidden=[64, 64, 64]", 'data.name="digits"', 'dynamics.kind="sgd"', "dynamics.lr=0.05",
            "dynamics.batch_size=64", f"run.steps={steps}", f"run.replicas={R}", "snapshots.n=60"]
    with tempfile.TemporaryDirectory() as tmp:
        plan = plan_experiment(None, Path(tmp) / "unused", over).points[0]
        dyn = Dynamics.from_config(plan.config["dynamics"], plan.dataset.n_train)
        data = _train_data(plan.dataset, "cross_entropy", "cpu")
        seeds = list(range(R))
        init = torch.stack([initial_params(plan.spec, s) for s in seeds])
        with torch.device("meta"):
            module = build_model(plan.spec)

        def run(variant: str, k: int) -> float:
            if variant == "sequential":
                engine = SequentialReplicas(plan.spec, plan.layout, init, "cpu")
            else:
                engine = BatchedReplicas(module, plan.layout, init, "cpu")
            writers = []
            if variant == "batched+record":
                writers = [create(Path(tmp) / f"{k}_{r}.trajkit", plan.n_params, layout=plan.layout)
                           for r in range(R)]
                sinks = [ArchiveSink(w) for w in writers]
            else:
                sinks = [NullSink() for _ in range(R)]
            t0 = time.perf_counter()
            train(engine, dyn, data, seeds, plan.snapshot_steps, steps, sinks)
            for w in writers:
                w.close()
            return time.perf_counter() - t0

        variants = ["sequential", "batched", "batched+record"]
        times: dict[str, list[float]] = {v: [] for v in variants}
        run("batched", -1)  # warm-up
        for k in range(repeats):
            for v in (variants if k % 2 == 0 else variants[::-1]):
                times[v].append(run(v, k))
    med = {v: statistics.median(ts) for v, ts in times.items()}
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i.get('internal_api')}:{i.get('architecture')}:{i.get('num_threads')}"
                         for i in threadpool_info())
    except ImportError:  # pragma: no cover
        blas = "threadpoolctl not installed"
    print(f"ensemble training: {R} replicas, MLP {plan.spec['hidden']} (N={plan.n_params}), digits "
          f"P={plan.dataset.n_train}, SGD B=64, {steps} steps, {plan.snapshot_steps.size} snapshots, "
          f"{repeats} round(s); torch threads {torch.get_num_threads()}; BLAS {blas}")
    for v in variants:
        ts = ", ".join(f"{t:.2f}" for t in times[v])
        print(f"  {v:<16} median {med[v]:7.2f} s  ({ts})  {R * steps / med[v]:9.0f} replica-steps/s")
    print(f"  speed-up sequential / batched        {med['sequential'] / med['batched']:.2f}x")
    print(f"  recording overhead (batched path)    {100 * (med['batched+record'] / med['batched'] - 1):+.1f} %")
    print(f"  peak RSS                             {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
