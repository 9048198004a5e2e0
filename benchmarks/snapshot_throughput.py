"""Snapshot throughput of a large model: GB/s to disk through ``trajkit.Recorder`` vs the copy limits.

A stack of ``Linear(width, width)`` layers of about ``--params`` parameters (default 10⁸, 400 MB of float32)
lives on ``--device``. Measured in one run, each the median of ``--repeats``:

- **device-to-host copy**: one flatten into a page-aligned host buffer (pinned on CUDA), the limit of any
  recorder that brings the parameters to the host (on CPU a memory copy, measured two ways alternated:
  torch ``copy_`` per tensor and the Recorder's ``copier.copy_row``, ``memcpy`` for large tensors; the
  faster is the bound);
- **direct disk write**: ``O_DIRECT`` writes of the row, chunk by chunk as the archive lays it out, from a
  page-aligned buffer (the disk's limit);
- **Recorder**: ``--snapshots`` forced snapshots (``rec.snapshot(k)`` back to back, parameters perturbed
  between them) and ``close()``: bytes of params written per second, end to end, and the time
  ``rec.snapshot`` held the calling thread.

The Recorder figure should sit near ``min(copy, disk)``; the ratio to that bound ("x bound") is printed.

    python benchmarks/snapshot_throughput.py                         # 10⁸ parameters on the default device
    python benchmarks/snapshot_throughput.py --params 2000000 --snapshots 3     # tiny, proves it runs
    python benchmarks/snapshot_throughput.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import trajkit
from trajkit.archive import directio
from trajkit.record.copier import copy_row


def make_model(n_params: int, device: str) -> torch.nn.Module:
    width = max(16, int(math.sqrt(n_params / 8)))
    depth = max(1, round(n_params / (width * width + width)))
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)]).to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_rates(params: list[torch.Tensor], device: str, repeats: int) -> dict[str, float]:
    """Bytes per second of one flatten into a page-aligned host buffer, median of ``repeats``. On CPU two
    ways, alternated in the same run: ``torch``, a ``copy_`` per tensor, and ``copy_row``, the Recorder's
    own copy (``memcpy`` for large tensors, :func:`trajkit.record.copier.copy_row`)."""
    n = sum(p.numel() for p in params)
    host = torch.from_numpy(directio.aligned_empty(n, 0.0))
    if device.startswith("cuda"):
        host = torch.empty(n, dtype=torch.float32, pin_memory=True)
        flat = torch.empty(n, dtype=torch.float32, device=device)
        ways = {"cuda": lambda: (torch.cat([p.detach().reshape(-1) for p in params], out=flat),
                                 host.copy_(flat, non_blocking=True))}
    else:
        offs = np.cumsum([0, *[p.numel() for p in params]]).tolist()
        views = [host[a:b].view(p.shape) for p, a, b in zip(params, offs, offs[1:], strict=False)]

        def per_tensor() -> None:
            for v, p in zip(views, params, strict=True):
                v.copy_(p.detach())

        ways = {"torch": per_tensor, "copy_row": lambda: copy_row(views, params)}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(repeats):
        for name in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            sync(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                ways[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: 4 * n / statistics.median(v) for k, v in times.items()}


def disk_rate(work: Path, n: int, chunk_cols: int, repeats: int) -> float:
    buf = directio.aligned_empty(-(-chunk_cols * 4 // directio.ALIGN) * directio.ALIGN // 4, 0.0)
    data = memoryview(buf).cast("B")
    n_chunks = -(-n // chunk_cols)
    times = []
    for r in range(repeats):
        d = work / f"disk{r}"
        d.mkdir()
        t0 = time.perf_counter()
        for j in range(n_chunks):
            if not directio.write_direct(d / f"c.{j}", data):
                with open(d / f"c.{j}", "wb") as f:
                    f.write(data)
        times.append(time.perf_counter() - t0)
        shutil.rmtree(d)
    return n_chunks * len(data) / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=int, default=10**8)
    ap.add_argument("--snapshots", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    work = Path(a.dir or tempfile.mkdtemp(prefix="trajkit-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = make_model(a.params, a.device)
        params = [p for p in model.parameters()]
        n = sum(p.numel() for p in params)
        copies = copy_rates(params, a.device, a.repeats)
        copy = max(copies.values())
        rec = trajkit.Recorder(work / "run.trajkit", model, schedule=trajkit.schedules.explicit([]))
        chunk_cols = rec._archive.chunk_cols   # the layout the archive writes its rows in
        held = []
        t0 = time.perf_counter()
        with torch.no_grad():
            for k in range(a.snapshots):
                params[0].add_(1e-3)   # the parameters change between snapshots, as in training
                t = time.perf_counter()
                rec.snapshot(k)
                held.append(time.perf_counter() - t)
            rec.close()
        sync(a.device)
        total = time.perf_counter() - t0
        disk = disk_rate(work, n, chunk_cols, a.repeats)
        arch = trajkit.open_archive(work / "run.trajkit")
        assert arch.n_snapshots == a.snapshots
        written = arch.params_disk_bytes()
        out = {"device": a.device, "n_params": n, "row_mb": 4 * n / 1e6, "snapshots": a.snapshots,
               "copy_GBps": copy / 1e9, "copy_GBps_by_way": {k: v / 1e9 for k, v in copies.items()},
               "disk_direct_GBps": disk / 1e9,
               "recorder_GBps": written / total / 1e9, "recorder_vs_bound": written / total / min(copy, disk),
               "snapshot_call_ms_median": 1e3 * statistics.median(held), "writer": rec.writer_mode,
               "peak_host_rss_mib": _rss_mib()}
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{n / 1e6:.1f} M parameters on {a.device} ({out['row_mb']:.0f} MB per snapshot)")
    for way, rate in out["copy_GBps_by_way"].items():
        label = {"cuda": "device-to-host copy", "torch": "host copy, torch copy_",
                 "copy_row": "host copy, copy_row"}[way]
        print(f"  {label:22s}{rate:7.2f} GB/s")
    if "torch" in out["copy_GBps_by_way"]:
        by = out["copy_GBps_by_way"]
        print(f"  copy_row / torch copy_ {by['copy_row'] / by['torch']:6.2f} x")
    print(f"  O_DIRECT disk write   {out['disk_direct_GBps']:7.2f} GB/s")
    print(f"  Recorder, end to end  {out['recorder_GBps']:7.2f} GB/s = {out['recorder_vs_bound']:.2f} x bound;"
          f" rec.snapshot held the caller {out['snapshot_call_ms_median']:.1f} ms (median)")
    if a.json:
        print(json.dumps(out))


def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
