"""Distributed recording: time of one snapshot with 2 and 4 gloo ranks vs 1 process.

An MLP of ``--depth`` square ``Linear(width, width)`` layers (``depth · (width² + width)`` parameters) is
recorded with ``trajkit.Recorder`` by 1 process (no process group), and by W spawned CPU ranks of a gloo
group on 127.0.0.1: replicated (DDP — rank 0 writes the whole row, the other ranks do nothing) and sharded
(FSDP2 ``fully_shard`` — every rank writes the params chunks it owns after one ``all_to_all_single``, then
one ``all_reduce`` barrier and rank 0's commit; see trajkit/record/distributed.py). Each snapshot is one
``rec.snapshot(k)`` call (inline writer everywhere, so the time includes the write) after a
``dist.barrier()`` that lines the ranks up; its time is the slowest rank's, and the median over ``--snapshots``
snapshots is reported with the bytes per second it implies.

The chunk size is trajkit's default (8 MiB of float32 per chunk), so a row is split between ranks only
when it spans several chunks (``4 · N > 8 MiB``, e.g. ``--width 2048 --depth 2``: 8.4 M parameters).

    python benchmarks/distributed_recording.py                                    # 8.4 M parameters, 1/2/4
    python benchmarks/distributed_recording.py --width 64 --depth 2 --snapshots 3 # tiny, proves it runs
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import trajkit

#: snapshots are forced with ``rec.snapshot(k)``; the schedule itself takes none
NEVER = trajkit.schedules.explicit([10**9])

def build(width: int, depth: int) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)])


def time_snapshots(rec: trajkit.Recorder, model: torch.nn.Module, n: int, distributed: bool) -> list[float]:
    times = []
    for k in range(n):
        with torch.no_grad():
            for p in model.parameters():
                (p.to_local() if hasattr(p, "to_local") else p).add_(1e-3)
        if distributed:
            dist.barrier()
        t0 = time.perf_counter()
        rec.snapshot(k)
        times.append(time.perf_counter() - t0)
    return times


def rank_main(rank: int, world: int, port: int, mode: str, args: argparse.Namespace, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=300))
    torch.set_num_threads(1)
    model = build(args.width, args.depth)
    if mode == "sharded":
        from torch.distributed.fsdp import fully_shard

        for m in model:
            fully_shard(m)
        fully_shard(model)
    else:
        model = torch.nn.parallel.DistributedDataParallel(model)
    path = Path(out) / f"{mode}-{world}.trajkit"
    with trajkit.Recorder(path, model, schedule=NEVER, writer="inline") as rec:
        times = time_snapshots(rec, model, args.snapshots, True)
    t = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if rank == 0:
        (Path(out) / f"{mode}-{world}.json").write_text(json.dumps(t.tolist()))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--snapshots", type=int, default=10)
    ap.add_argument("--worlds", default="2,4", help="comma-separated numbers of ranks")
    ap.add_argument("--modes", default="replicated,sharded")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="trajkit-dist-", dir=args.dir))
    try:
        torch.set_num_threads(1)
        model = build(args.width, args.depth)
        n = sum(p.numel() for p in model.parameters())
        with trajkit.Recorder(scratch / "single.trajkit", model, schedule=NEVER,
                              writer="inline") as rec:
            rows = [{"world": 1, "mode": "single process", "times": time_snapshots(rec, model, args.snapshots,
                                                                                      False)}]
        for mode in args.modes.split(","):
            for world in (int(w) for w in args.worlds.split(",")):
                mp.spawn(rank_main, args=(world, free_port(), mode, args, str(scratch)), nprocs=world)
                rows.append({"world": world, "mode": mode,
                             "times": json.loads((scratch / f"{mode}-{world}.json").read_text())})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = statistics.median(rows[0]["times"])
    for r in rows:
        r["median_ms"] = 1e3 * statistics.median(r["times"])
        r["gb_per_s"] = 4 * n / statistics.median(r["times"]) / 1e9
        r["vs_single"] = statistics.median(r["times"]) / base
    if args.json:
        print(json.dumps({"n_params": n, "rows": rows}, indent=2))
        return
    print(f"{n:,} parameters ({4 * n / 2**20:.1f} MiB per snapshot), {args.snapshots} snapshots, median")
    print(f"{'ranks':>5}  {'mode':<15} {'ms/snapshot':>12} {'GB/s':>6} {'vs 1 process':>13}")
    for r in rows:
        print(f"{r['world']:>5}  {r['mode']:<15} {r['median_ms']:>12.2f} {r['gb_per_s']:>6.2f} "
              f"{r['vs_single']:>12.2f}x")


if __name__ == "__main__":
    main()
