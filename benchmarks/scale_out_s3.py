"""Archives read from a loopback S3 server vs local disk: `overlaps` + `chi4` on the same ensemble, one run.

    .venv/bin/python benchmarks/scale_out_s3.py              # 16 replicas, N = 1e5, T = 256 (1.5 GiB of archives)
    .venv/bin/python benchmarks/scale_out_s3.py --quick      # 4 replicas, N = 2e4, T = 64, a smoke run
    .venv/bin/python benchmarks/scale_out_s3.py --replicas 8 --n 50000 --t 128

The ensemble is the Brownian one of ``benchmarks/glass_plugins.py`` (its ``make_ensemble``), written as
real archives on local disk, then published with ``trajkit push`` to a moto S3 server started on
127.0.0.1 (s3fs pointed at it through ``AWS_ENDPOINT_URL``; fake credentials, nothing leaves the machine).
Reported: the push (objects, MiB/s), and for ``overlaps`` + ``chi4`` (glass_plugins' parameters) the wall
time reading the local directory and reading ``s3://…/ens/``, their ratio (local / S3 — the throughput of
S3 reads relative to disk, ≤ 1), the MiB of params in the ensemble, and the largest relative difference
between the two results (must be 0: the same bytes, the same arithmetic). Both sides run in this process
after one warm-up of the plugins; the local side reads from the page cache (the archives were just
written), the S3 side through the loopback HTTP server, which shares the machine's CPUs with the client.

``main(args)`` takes the command-line arguments as a list (``benchmarks/scale_out.py`` calls it) and
returns the report as a dict; run as a script it prints the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))        # glass_plugins: a sibling script, not a package

import glass_plugins

SERVER_START_TIMEOUT_S = 60


def parse(args: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--replicas", type=int, default=16)
    p.add_argument("--n", type=int, default=100_000, help="parameters per replica")
    p.add_argument("--t", type=int, default=256, help="snapshots per replica")
    p.add_argument("--quick", action="store_true", help="4 replicas, N = 2e4, T = 64")
    p.add_argument("--workdir", default=None, help="where the local ensemble goes (default: a temp dir)")
    ns = p.parse_args(args)
    if ns.quick:
        ns.replicas, ns.n, ns.t = 4, 20_000, 64
    return ns


def start_server() -> tuple[subprocess.Popen, str]:
    """A moto S3 server on a free loopback port, and its endpoint URL (waits until it answers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"moto server did not start on {endpoint}") from None
            time.sleep(0.1)


def timed_analyses(source: str | Path) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    arrays = glass_plugins.run_plugins(source)
    return time.perf_counter() - t0, arrays


def main(args: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark (``args``: command-line arguments) and return the report."""
    ns = parse(args)
    import s3fs

    import trajkit
    from trajkit.archive.push import push

    work = Path(ns.workdir) if ns.workdir else Path(tempfile.mkdtemp(prefix="trajkit-s3-bench-"))
    proc, endpoint = start_server()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                            "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_ENDPOINT_URL=endpoint,
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    try:
        root = work / "ens"
        glass_plugins.make_ensemble(root, ns.replicas, ns.n, ns.t)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3fs.S3FileSystem().mkdir(bucket)
        url = f"s3://{bucket}/ens/"
        t0 = time.perf_counter()
        report = push(root, url)
        push_s = time.perf_counter() - t0

        trajkit.list_analyses()
        glass_plugins.run_plugins(root)             # warm-up: plugin imports, compiled kernels
        local_s, local = timed_analyses(root)
        s3_s, remote = timed_analyses(url)
        diff = glass_plugins.max_rel_diff(remote, local)
        params_mib = ns.replicas * ns.n * ns.t * 4 / 2**20
        out = {
            "replicas": ns.replicas, "n_params": ns.n, "snapshots": ns.t, "params_mib": round(params_mib, 1),
            "push": {"objects": report.uploaded, "mib": round(report.bytes_uploaded / 2**20, 1),
                     "wall_s": round(push_s, 3), "mib_per_s": round(report.bytes_uploaded / 2**20 / push_s, 1)},
            "overlaps_chi4": {"local_s": round(local_s, 3), "s3_s": round(s3_s, 3),
                              "ratio_local_over_s3": round(local_s / s3_s, 3),
                              "max_rel_diff": max(diff.values(), default=0.0)},
            "caveat": "one run; local reads warm in the page cache; the moto server shares the CPUs",
        }
        return out
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if not ns.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
