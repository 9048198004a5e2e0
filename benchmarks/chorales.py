"""Bach chorales: R batched RNN replicas vs R sequential ones, and the parse cache, measured in one run.

1. **Training.** R = 8 replicas of a depth-2, width-32 tanh RNN on ``bach_chorales`` (16 chorales, eighth
   grid, windows of 16 steps, SGD batch 16, momentum 0.9), no writing. ``sequential`` updates 8 ordinary
   modules one after the other each step (``run.vectorize = false``); ``batched`` runs them as stacked
   parameters through ``batched_forward`` (one forward/backward). Same data, initial parameters and
   minibatch streams; the two variants alternate over ``--repeats`` rounds; reported: median steps/s and
   the speed-up.
2. **Parse cache.** ``load_corpus`` of the same 16 chorales with an empty cache directory (parse + write)
   vs a warm one (read the .npz), alternating; reported: median seconds and the ratio.

    .venv/bin/python benchmarks/chorales.py            # 300 steps, 3 rounds
    .venv/bin/python benchmarks/chorales.py --quick    # 40 steps, 1 round
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from trajkit.experiments.chorales import load_corpus
from trajkit.experiments.dynamics import Dynamics
from trajkit.experiments.models import build_model
from trajkit.experiments.replicas import BatchedReplicas, SequentialReplicas
from trajkit.experiments.runner import _train_data, initial_params, plan_experiment
from trajkit.experiments.training import NullSink, train

OVERRIDES = ['data.name="bach_chorales"', "data.chorales=16", 'data.quantisation="eighth"', "data.seq_len=16",
             "data.n_train=48", 'model.kind="rnn"', "model.width=32", "model.depth=2", "dynamics.lr=0.05",
             "dynamics.momentum=0.9", "dynamics.batch_size=16", 'snapshots.schedule="log"', "snapshots.n=10"]


def time_training(steps: int, replicas: int, batched: bool) -> float:
    plan = plan_experiment(None, "unused", [*OVERRIDES, f"run.steps={steps}", f"run.replicas={replicas}"]).points[0]
    dyn = Dynamics.from_config(plan.config["dynamics"], plan.dataset.n_train)
    init = torch.stack([initial_params(plan.spec, s) for s in range(replicas)])
    data = _train_data(plan.dataset, "cross_entropy", "cpu")
    if batched:
        with torch.device("meta"):
            module = build_model(plan.spec)
        engine = BatchedReplicas(module, plan.layout, init)
    else:
        engine = SequentialReplicas(plan.spec, plan.layout, init)
    t0 = time.perf_counter()
    train(engine, dyn, data, list(range(replicas)), plan.snapshot_steps, steps, [NullSink() for _ in range(replicas)])
    return time.perf_counter() - t0


def time_parse(warm_dir: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as cold:
        os.environ["TRAJKIT_CACHE_DIR"] = cold
        t0 = time.perf_counter()
        load_corpus("eighth", 16)
        t_cold = time.perf_counter() - t0
    os.environ["TRAJKIT_CACHE_DIR"] = warm_dir
    t0 = time.perf_counter()
    load_corpus("eighth", 16)
    return t_cold, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 steps, 1 round")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 oversubscribes a busy 2-core box)")
    args = ap.parse_args()
    steps, repeats = (40, 1) if args.quick else (args.steps, args.repeats)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as warm:
        os.environ["TRAJKIT_CACHE_DIR"] = warm
        load_corpus("eighth", 16)                       # fill the warm cache (and the dataset for the plan)
        times: dict[str, list[float]] = {"sequential": [], "batched": []}
        parse: dict[str, list[float]] = {"cold": [], "warm": []}
        for _ in range(repeats):
            for name in times:
                times[name].append(time_training(steps, args.replicas, name == "batched"))
            cold, hot = time_parse(warm)
            parse["cold"].append(cold)
            parse["warm"].append(hot)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"training: R={args.replicas} replicas, depth 2, width 32, {steps} steps, {args.threads} threads")
    for k, v in med.items():
        print(f"  {k:<10} {steps / v:8.1f} steps/s  ({v:.2f} s)")
    print(f"  speed-up batched / sequential: {med['sequential'] / med['batched']:.2f}x")
    pc, pw = statistics.median(parse["cold"]), statistics.median(parse["warm"])
    print(f"parse 16 chorales: cold {pc:.2f} s, cache hit {pw * 1e3:.1f} ms, ratio {pc / pw:.0f}x")


if __name__ == "__main__":
    main()
