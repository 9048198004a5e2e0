"""Commit-marker renames vs disk stalls: what replacing ``zarr.json`` every group commit costs a row writer.

A loop writes archive-sized rows (``--row-mib``, default 2.6 MiB, the benchmark MLP's row) with
``O_DIRECT``, one new file each, ``--pause-ms`` apart (default 1.5 ms: with the write, about the pace of a
snapshot at every 3 ms training step), and every ``--every`` rows (default 16, the writer thread's group)
replaces a small JSON marker in one of three ways, alternated in one run (``--repeats`` rounds, each mode
once per round in rotating order):

- ``none``: no marker (the I/O twin's floor);
- ``rename``: :func:`trajkit.archive.format.atomic_write_bytes` — a new file renamed over the old one,
  which frees the old file's block;
- ``markerfile``: :class:`trajkit.archive.format.MarkerFile` — the replaced version kept by a hard link
  and written over in place a second later, so no block is freed (what the archive writer does).

Printed per mode: the loop's time per row (median over rounds, and its ratio to ``none``), the
per-row latency's p99 and maximum, and how many rows waited more than 100 ms. On ext4 mounted with
``discard`` (this project's machine) every freed block is discarded at the next journal commit, and every
file operation waits for it: 2026-12-04, 1,000 rows, ``rename`` max 1.25–2.57 s and 1–4 rows over 100 ms
per run, ``markerfile`` max 37–40 ms and none, ``none`` max 50–72 ms. Deleted scratch files are synced
(``os.sync``) between runs, outside the timing, so that one run's discards do not land in the next.

    python benchmarks/marker_stalls.py                  # 1,000 rows per run, 3 rounds
    python benchmarks/marker_stalls.py --rows 3000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from trajkit.archive import directio
from trajkit.archive import format as fmt

MODES = ("none", "rename", "markerfile")


def run(mode: str, work: Path, rows: int, row_bytes: int, every: int, pause_s: float) -> dict:
    d = work / f"run-{mode}"
    d.mkdir()
    buf = memoryview(directio.aligned_empty(-(-row_bytes // directio.ALIGN) * directio.ALIGN // 4, 0.0)).cast("B")
    marker_path = d / "zarr.json"
    fmt.atomic_write_bytes(marker_path, b"{}")
    marker = fmt.MarkerFile(marker_path) if mode == "markerfile" else None
    lat = np.empty(rows)
    t0 = time.perf_counter()
    for i in range(rows):
        t = time.perf_counter()
        if not directio.write_direct(d / f"r.{i}", buf):
            (d / f"r.{i}").write_bytes(buf)
        if i % every == 0 and mode != "none":
            data = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"committed": i}}).encode()
            if marker is not None:
                marker.write(data)
            else:
                fmt.atomic_write_bytes(marker_path, data)
        lat[i] = time.perf_counter() - t
        time.sleep(pause_s)
    seconds = time.perf_counter() - t0
    if marker is not None:
        marker.close()
    shutil.rmtree(d)
    os.sync()   # the freed blocks' discards happen here, outside the timing
    lat *= 1e3
    return {"ms_per_row": 1e3 * seconds / rows, "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()), "over_100ms": int((lat > 100).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--row-mib", type=float, default=2.6)
    ap.add_argument("--every", type=int, default=16, help="rows between marker replacements")
    ap.add_argument("--pause-ms", type=float, default=1.5, help="sleep after each row (the training step)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir; put it on the disk "
                                                "the archives go to)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trajkit-markers-", dir=a.dir))
    out: dict[str, list[dict]] = {m: [] for m in MODES}
    try:
        for r in range(a.repeats):
            order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
            for mode in order:
                out[mode].append(run(mode, work, a.rows, int(a.row_mib * 2**20), a.every, a.pause_ms / 1e3))
            print(f"round {r + 1}/{a.repeats}: " + ", ".join(
                f"{m} {out[m][-1]['ms_per_row']:.2f} ms/row (max {out[m][-1]['max_ms']:.0f} ms)" for m in MODES),
                flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(x["ms_per_row"] for x in out["none"])
    print(f"\n{a.rows} rows of {a.row_mib} MiB per run, a marker every {a.every} rows, {a.repeats} rounds")
    print(f"{'mode':12s} {'ms/row':>8s} {'vs none':>8s} {'p99 ms':>8s} {'max ms':>9s} {'rows >100 ms':>13s}")
    for m in MODES:
        runs = out[m]
        ms = statistics.median(x["ms_per_row"] for x in runs)
        print(f"{m:12s} {ms:8.2f} {ms / base:8.2f} {statistics.median(x['p99_ms'] for x in runs):8.1f} "
              f"{max(x['max_ms'] for x in runs):9.1f} {sum(x['over_100ms'] for x in runs):13d}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
