"""Recorder overhead: training steps/s with vs without recording, alternated in one run.

MLP 784-512-512-10 (~670 k parameters), batch 128, SGD, CPU, synthetic data. Each repeat trains
the plain baseline, then every configuration (in rotating order), then the baseline again, so drifts of
the machine hit all of them alike; the reported slowdown is the median over repeats of (time with
recording / mean of the two baselines of the same repeat) − 1. For trajkit runs the time spent inside
``rec.step`` on the training thread is also reported (per snapshot and per plain step): the part of the
overhead that does not depend on how busy the other core is.

Threads: by default torch trains on one thread (``--threads 1``), ≈ 3.5–3.9 ms per step on the 2-core
VM — the regime the recorder's targets were set in ("about 3.7 ms per step"); the writer thread then has
the other core. ``--threads 2`` (≈ 2.1 ms per step) makes torch use both cores, so every cycle the writer
spends is taken from training.

Configurations: (a) 200 log-spaced snapshots over the run, (b) a snapshot every 10 steps, (c) every step
(on a shorter run: it writes ~2.7 MB per step), each through ``trajkit.Recorder``; (d) the baseline users
have today, ``torch.save(model.state_dict())`` to a folder at the same schedules; (a-zstd) schedule (a)
with zstd compression, for the compression ratio.

    python benchmarks/recorder_overhead.py                 # full: 5000 steps, 3 repeats
    python benchmarks/recorder_overhead.py --quick         # 600 steps, 1 repeat
    python benchmarks/recorder_overhead.py --configs a,b --repeats 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import trajkit


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                               torch.nn.ReLU(), torch.nn.Linear(512, 10))


def train(steps: int, sink: str, schedule, workdir: Path, writer: str = "auto", compressor=None,
          device: str = "cpu") -> dict:
    """Train ``steps`` SGD steps; ``sink`` is none | trajkit | torch.save. Returns time and bytes."""
    model = make_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(4096, 784, generator=g).to(device)
    y = torch.randint(0, 10, (4096,), generator=g).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    out = workdir / f"{sink}.trajkit"
    shutil.rmtree(out, ignore_errors=True)
    rec = None
    if sink == "trajkit":
        rec = trajkit.Recorder(out, model, schedule=schedule, writer=writer, compressor=compressor)
    elif sink == "torch.save":
        out.mkdir()
    in_rec = [0.0, 0.0]   # seconds inside rec.step: plain steps, snapshot steps
    n_snap = 0
    clock = time.perf_counter
    t0 = clock()
    for k in range(steps + 1):
        loss = None
        if k:
            i = (k * 128) % 4096
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[i:i + 128]), y[i:i + 128])
            loss.backward()
            opt.step()
        if rec is not None:
            t = clock()
            snap = rec.step(k, loss=loss)
            in_rec[snap] += clock() - t
            n_snap += snap
        elif sink == "torch.save":
            if k in schedule:
                torch.save(model.state_dict(), out / f"step_{k:07d}.pt")
    mode = None
    if rec is not None:
        mode = rec.writer_mode + (" + O_DIRECT" if rec.direct else "")
        rec.close()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    nbytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.exists() else 0
    ratio = None
    if sink == "trajkit":
        arch = trajkit.open_archive(out)
        ratio = arch.n_snapshots * arch.n_params * 4 / max(arch.params_disk_bytes(), 1)
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": elapsed, "bytes": nbytes, "compression_ratio": ratio, "writer": mode,
            "ms_per_snapshot": 1e3 * in_rec[1] / max(n_snap, 1),
            "us_per_plain_step": 1e6 * in_rec[0] / max(steps + 1 - n_snap, 1),
            "training_thread_fraction": sum(in_rec) / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--every-step-steps", type=int, default=1000, help="run length for config (c)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--writer", default="auto", choices=["auto", "inline", "thread"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads (default 1: ≈ 3.7 ms/step, the targets' regime; 2 = both cores)")
    ap.add_argument("--configs", default="a,b,c,d,zstd",
                    help="comma-separated subset of a, b, c (trajkit), d (torch.save at each), zstd")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.every_step_steps, args.repeats = 600, 200, 1
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_info

    print("threadpools:", [(i["internal_api"], i["num_threads"], i.get("architecture")) for i in threadpool_info()])
    print(f"torch threads: {torch.get_num_threads()}, writer={args.writer}")
    s, s1 = args.steps, args.every_step_steps
    all_configs = {
        "a: 200 log snapshots": (s, "trajkit", trajkit.schedules.log(1, s, 200), None),
        "b: every 10 steps": (s, "trajkit", trajkit.schedules.linear(10), None),
        "c: every step": (s1, "trajkit", trajkit.schedules.linear(1), None),
        "d(a): torch.save, log": (s, "torch.save", trajkit.schedules.log(1, s, 200), None),
        "d(b): torch.save, every 10": (s, "torch.save", trajkit.schedules.linear(10), None),
        "d(c): torch.save, every step": (s1, "torch.save", trajkit.schedules.linear(1), None),
        "a-zstd: 200 log, zstd": (s, "trajkit", trajkit.schedules.log(1, s, 200), "zstd"),
    }
    wanted = {c.strip() for c in args.configs.split(",") if c.strip()}
    unknown = wanted - {"a", "b", "c", "d", "zstd"}
    if unknown:
        ap.error(f"--configs: unknown {sorted(unknown)}; choose from a, b, c, d, zstd")

    def selected(name: str) -> bool:
        key = name.split(":")[0]
        if key.startswith("d("):
            return "d" in wanted and key[2] in wanted
        return (key == "a-zstd" and "zstd" in wanted) or key in wanted

    configs = {k: v for k, v in all_configs.items() if selected(k)}
    if not configs:
        ap.error("--configs selects nothing (d needs one of a, b, c with it)")
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="trajkit-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ratios: dict[str, list[float]] = {k: [] for k in configs}
    info: dict[str, list[dict]] = {}
    dev = args.device
    train(100, "none", trajkit.schedules.explicit([]), workdir, device=dev)  # warm-up
    names = list(configs)
    for rep in range(args.repeats):
        lengths = {configs[n][0] for n in names}
        base = {n: train(n, "none", trajkit.schedules.explicit([]), workdir, device=dev)["seconds"] for n in lengths}
        runs = {}
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            steps, sink, sched, comp = configs[name]
            runs[name] = train(steps, sink, sched, workdir, args.writer, comp, device=dev)
            info.setdefault(name, []).append(runs[name])
        base2 = {n: train(n, "none", trajkit.schedules.explicit([]), workdir, device=dev)["seconds"] for n in lengths}
        for name, r in runs.items():
            steps = configs[name][0]
            ratios[name].append(r["seconds"] / (0.5 * (base[steps] + base2[steps])))
        n0 = max(lengths)
        print(f"repeat {rep + 1}/{args.repeats}: baseline {n0} steps {base[n0]:.2f}s / {base2[n0]:.2f}s "
              f"({1e3 * base[n0] / n0:.2f} ms/step)", flush=True)
    print(f"\n{'configuration':32s} {'slowdown':>9s} {'(min..max)':>16s} {'bytes written':>14s} {'ratio':>6s} "
          f"{'on training thread':>30s}  writer")
    summary = {}
    for name in names:
        rs = np.array(ratios[name]) - 1
        last = info[name][-1]
        comp = last["compression_ratio"]
        tt = ""
        if configs[name][1] == "trajkit":
            snap = float(np.median([r["ms_per_snapshot"] for r in info[name]]))
            plain = float(np.median([r["us_per_plain_step"] for r in info[name]]))
            frac = float(np.median([r["training_thread_fraction"] for r in info[name]]))
            tt = f"{100 * frac:4.1f}% ({snap:.2f} ms/snap, {plain:.0f} us/step)"
        print(f"{name:32s} {100 * np.median(rs):8.1f}% {100 * rs.min():7.1f}..{100 * rs.max():5.1f}% "
              f"{last['bytes'] / 1e6:11.1f} MB {comp if comp is None else round(comp, 3)!s:>6s} {tt:>30s}  "
              f"{last['writer'] or '-'}")
        summary[name] = {"slowdown_median": float(np.median(rs)), "slowdown_all": rs.tolist(),
                         "writer": last["writer"], "bytes": last["bytes"], "compression_ratio": comp,
                         "training_thread": {k: [r[k] for r in info[name]] for k in
                                             ("ms_per_snapshot", "us_per_plain_step", "training_thread_fraction")}
                         if configs[name][1] == "trajkit" else None}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS: {peak:.0f} MiB; scratch: {workdir}")
    if args.json:
        print(json.dumps({"summary": summary, "peak_rss_mib": peak}))
    if not args.dir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
