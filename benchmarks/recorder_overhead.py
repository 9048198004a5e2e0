"""Recorder overhead: training steps/s with vs without recording, alternated in one run.

MLP 784-512-512-10 (~670 k parameters), batch 128 (``--batch``), SGD, CPU, synthetic data.

Alternation. Each configuration trains side by side with its own plain baseline — two identical models in
one process, sharing one copy of the (read-only) data, alternating short blocks of steps in ABBA order — so
the two see the same machine to within a few milliseconds; the slowdown of a repeat is (time of the
recorded run, its final ``close()`` included) / (time of the baseline) − 1, and the median over repeats is
reported. Blocks (``--block``, default ``auto``) are 10 steps long for sparse schedules and 250 for those
that snapshot at every step. Block ends are moved (by < 20 steps) to where the last snapshot is furthest
behind, so the writer thread's queued work rarely spills into the baseline's block; any spill that remains
makes the figure an underestimate by at most one snapshot's write per block (at (a) only in its dense
start, none at (b); (c) spills one row per block, hence its long blocks). Why short blocks: the shared VM's
speed swings at the scale of seconds (2.2 to 4.1 ms per step between 6-second runs on 2026-12-04), and an
A/A run (``null``) of two plain twins read +6.1..+12.8 % in 250-step blocks with separate data copies,
−2.2..+5.1 % with one copy, and −0.3..+1.3 % in 10-step blocks. With ``--block 0`` whole runs alternate
instead (baseline, every configuration in rotating order, baseline again; ratio to the mean of the two
baselines), as in earlier versions. For trajkit runs the time spent inside ``rec.step`` on the training
thread is also reported (per snapshot and per plain step): the part of the overhead that does not depend
on how busy the other core is. (With the overlapped copy, a wait for it inside the next ``opt.step()`` is not in
that figure; the slowdown includes it.)

Threads: by default torch trains on one thread (``--threads 1``), ≈ 3.5–3.9 ms per step on the 2-core
VM — the regime the recorder's targets were set in ("about 3.7 ms per step"); the writer thread then has
the other core. ``--threads 2`` (≈ 2.1 ms per step) makes torch use both cores, so every cycle the writer
spends is taken from training.

Configurations: (a) 200 log-spaced snapshots over the run, (b) a snapshot every 10 steps, (c) every step
(on a shorter run: it writes ~2.6 MiB per step), each through ``trajkit.Recorder``; (d) the baseline users
have today, ``torch.save(model.state_dict())`` to a folder at the same schedules; (a-zstd) schedule (a)
with zstd compression, for the compression ratio; (a-buf, b-buf, c-buf) the same schedules with
``Recorder(direct=False)``, params chunks written through the page cache instead of ``O_DIRECT``;
(a-raw, b-raw, c-raw), with ``--configs ...,raw``: the bare I/O twin of each schedule (``RawRows``: the
parameter copy on the training thread into a page-aligned buffer and an ``O_DIRECT`` write of each row
from a second thread, nothing else), so that what writing these bytes costs on this machine is told apart
from what trajkit adds on top; (a-io, b-io, c-io), with ``--configs ...,io``: the bytes alone (``IoOnly``:
at each snapshot the training thread writes one byte to a pipe, and a separate process writes a static
row-sized page-aligned buffer to a new file with ``O_DIRECT`` and acknowledges it, at most two in flight —
no copy, no thread, no GIL of ours), what
merely sending these bytes to this machine's disk costs training; (a-copy, b-copy, c-copy), with
``--configs ...,copy``: the twin's copy alone, into the same two buffers, nothing written — what moving the
row through memory costs training (at every step on the 2-core VM of 2026-12-03, batch 32: −0.2 %,
against the twin's +41.6 %).

Copy off the training thread. Configurations a, b, c (and their -buf twins) hand the Recorder the optimiser
(``Recorder(..., optimizer=opt)``): the snapshot copy overlaps the next forward/backward pass and the next
``opt.step()`` waits for it. ``--configs ...,sync`` adds (a-sync, b-sync, c-sync): the same schedules
without ``optimizer=``, the copy on the training thread inside ``rec.step`` as before — the A/B in one run.
``--configs ...,zero`` adds (a-zero, b-zero, c-zero): the same schedules with ``zero_copy=None``, each
snapshot written straight from the parameters' memory (moved into one archive row) with no copy at all;
the writer column says how many rows went out uncopied (a row whose write held up the next ``opt.step()``
makes the next 16 snapshots copy).

The method's resolution. ``--configs ...,null`` adds two runs that record nothing: (null) a plain twin
against its baseline — an A/A test, whose spread is the smallest slowdown this machine can resolve today —
and (home) a plain twin whose parameters were moved, as zero copy moves them, into one page-aligned row on
transparent huge pages: whether that placement alone makes training faster or slower.

Physical floor of (c). Every step writes a whole row (2.7 MB per ~3.5 ms step, ≈ 0.8 GB/s), at the disk's
limit. The run measures the disk's direct-write rate in the scratch directory (``O_DIRECT`` writes of
params-sized chunks, by default as many bytes as (c) writes, ``--disk-mib``: a 256 MiB burst read 1.35–2.68
GB/s on 2026-12-04, where 300 rows written back to back sustained 0.9–1.05 GB/s) and prints beside (c) its
floor: max(0, bytes
written ÷ that rate − the baseline's time) ÷ the baseline's time, the slowdown no recorder can beat,
and the share of that rate that every step asks at the baseline's pace. The pace depends on the VM's speed
on the day; ``--batch`` (default 128) shortens or lengthens the step without changing the row, so a slow
VM can be put in the regime of a fast one (batch 32 trained at 3.3 ms/step on the VM that trained batch
128 at 8 ms/step).

    python benchmarks/recorder_overhead.py                 # full: 5000 steps, 3 repeats
    python benchmarks/recorder_overhead.py --quick         # 600 steps, 1 repeat
    python benchmarks/recorder_overhead.py --configs a,b,buf --repeats 8 --threads 2
    python benchmarks/recorder_overhead.py --configs a,b,c,sync     # overlapped copy vs copy on the thread
    python benchmarks/recorder_overhead.py --configs a,b,c,sync,raw --repeats 5   # + the bare I/O twins
    python benchmarks/recorder_overhead.py --configs a,c,raw,io --repeats 3       # + the bytes alone
    python benchmarks/recorder_overhead.py --configs a,b,zero,null --repeats 5    # zero copy, with A/A runs
    python benchmarks/recorder_overhead.py --configs c,zero,raw,io,copy,null --batch 32   # (c) at ~0.8 GB/s
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import trajkit
from trajkit.record.copier import copy_row

#: minibatch size (``--batch``)
BATCH = 128


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                               torch.nn.ReLU(), torch.nn.Linear(512, 10))


class Trainer:
    """One training run that can be advanced in blocks: ``sink`` is none | trajkit | torch.save.

    ``run_to(k)`` trains up to step ``k`` and returns the seconds it took (recording included); ``finish()``
    closes the recorder (waiting for queued writes: charged to the run) and reports bytes and ratios.
    """

    def __init__(self, sink: str, schedule, workdir: Path, name: str, writer: str = "auto", compressor=None,
                 device: str = "cpu", direct: bool | None = None, overlap: bool = True,
                 zero_copy: bool | None = False, batch: int = BATCH):
        self.batch = batch
        self.model = make_model().to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(0)
        self.X = torch.randn(4096, 784, generator=g).to(device)
        self.y = torch.randint(0, 10, (4096,), generator=g).to(device)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.sink, self.schedule, self.device = sink, schedule, device
        self.out = workdir / f"{name}.{sink}"
        shutil.rmtree(self.out, ignore_errors=True)
        self.rec = None
        if sink == "trajkit":
            self.rec = trajkit.Recorder(self.out, self.model, schedule=schedule, writer=writer, compressor=compressor,
                                        direct=direct, optimizer=self.opt if overlap else None,
                                        zero_copy=zero_copy)
        elif sink == "torch.save":
            self.out.mkdir()
        elif sink in ("raw", "copy"):
            self.out.mkdir()
            self.raw = RawRows(self.out, [p for p in self.model.parameters()], write=sink == "raw")
        elif sink == "io":
            self.out.mkdir()
            self.raw = IoOnly(self.out, sum(p.numel() for p in self.model.parameters()))
        elif sink == "home":   # no recording: the parameters only moved where zero copy puts them
            from trajkit.archive import directio
            from trajkit.record.copier import FlatParams

            n = sum(p.numel() for p in self.model.parameters())
            self._home = FlatParams(list(self.model.parameters()), -(-n * 4 // directio.ALIGN) * directio.ALIGN // 4)
        self.k = -1   # last step done (step 0 = the initialisation, recorded like the others)
        self.seconds = 0.0
        self.in_rec = [0.0, 0.0]   # seconds inside rec.step: plain steps, snapshot steps
        self.n_snap = 0

    def run_to(self, last: int) -> float:
        model, opt, X, y, rec, clock = self.model, self.opt, self.X, self.y, self.rec, time.perf_counter
        B = self.batch
        t0 = clock()
        for k in range(self.k + 1, last + 1):
            loss = None
            if k:
                i = (k * B) % (4096 - 4096 % B)
                opt.zero_grad(set_to_none=True)
                loss = self.loss_fn(model(X[i:i + B]), y[i:i + B])
                loss.backward()
                opt.step()
            if rec is not None:
                t = clock()
                snap = rec.step(k, loss=loss)
                self.in_rec[snap] += clock() - t
                self.n_snap += snap
            elif self.sink == "torch.save" and k in self.schedule:
                torch.save(model.state_dict(), self.out / f"step_{k:07d}.pt")
            elif self.sink in ("raw", "io") and k in self.schedule:
                self.raw.write(k)
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.k = max(self.k, last)
        dt = clock() - t0
        self.seconds += dt
        return dt

    def finish(self) -> dict:
        mode = None
        t0 = time.perf_counter()
        if self.rec is not None:
            mode = (self.rec.writer_mode + (" + O_DIRECT" if self.rec.direct else "")
                    + (f", zero copy ({self.rec.zero_copy_rows} rows uncopied)" if self.rec.zero_copy
                       else ", copy overlapped" if self.rec.overlap else ", copy on thread"))
            self.rec.close()
        elif self.sink in ("raw", "io", "copy"):
            mode = {"raw": "bare copy + O_DIRECT thread", "io": "O_DIRECT from another process",
                    "copy": "bare copy on the training thread, nothing written"}[self.sink]
            self.raw.close()
        elif self.sink in ("none", "home"):
            mode = "no recording" + (", parameters in one huge-page row" if self.sink == "home" else "")
        self.seconds += time.perf_counter() - t0
        out = self.out
        nbytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.exists() else 0
        ratio = row_bytes = None
        if self.sink == "trajkit":
            arch = trajkit.open_archive(out)
            ratio = arch.n_snapshots * arch.n_params * 4 / max(arch.params_disk_bytes(), 1)
            row_bytes = arch.params_disk_bytes() // max(arch.n_snapshots, 1)
        shutil.rmtree(out, ignore_errors=True)
        # the freed blocks are discarded at the next journal commit (ext4 mounted with ``discard``, as here):
        # force it now, outside every timed block, so that the next run does not wait for this one's
        os.sync()
        n_plain = self.k + 1 - self.n_snap
        return {"seconds": self.seconds, "bytes": nbytes, "compression_ratio": ratio, "writer": mode,
                "row_bytes": row_bytes,
                "ms_per_snapshot": 1e3 * self.in_rec[1] / max(self.n_snap, 1),
                "us_per_plain_step": 1e6 * self.in_rec[0] / max(n_plain, 1),
                "training_thread_fraction": sum(self.in_rec) / self.seconds}


class RawRows:
    """The I/O twin of a recorder: what any recorder of these bytes must do, and nothing else. At each snapshot
    the parameters are copied on the training thread (``copier.copy_row``, as the recorder copies) into one
    of two preallocated page-aligned buffers (waiting if that buffer's previous write is still running), and
    one writer thread writes the row to its own file with ``O_DIRECT`` — no archive metadata, no commit
    protocol, no trace, no Python writer logic."""

    def __init__(self, out: Path, params: list[torch.Tensor], write: bool = True):
        from concurrent.futures import ThreadPoolExecutor

        from trajkit.archive import directio

        self.out, self.params = out, params
        n = sum(p.numel() for p in params)
        padded = -(-n * 4 // directio.ALIGN) * directio.ALIGN // 4
        self.bufs = [directio.aligned_empty(padded, 0.0) for _ in range(2)]
        offs = np.cumsum([0, *[p.numel() for p in params]]).tolist()
        self.views = [[torch.from_numpy(b)[a:e].view(p.shape) for p, a, e in zip(params, offs, offs[1:], strict=False)]
                      for b in self.bufs]
        self.pending: list = [None, None]
        self.pool = ThreadPoolExecutor(1)
        self.writes = write   # False: the copy alone (``copy``), nothing written
        self.i = 0

    @torch.no_grad()
    def write(self, k: int) -> None:
        from trajkit.archive import directio

        j = self.i % 2
        self.i += 1
        if self.pending[j] is not None:
            self.pending[j].result()
        copy_row(self.views[j], self.params)   # the recorder's own copy (memcpy for large tensors)
        if not self.writes:
            return
        self.pending[j] = self.pool.submit(directio.write_direct, self.out / f"row.{k}",
                                           memoryview(self.bufs[j]).cast("B"))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class IoOnly:
    """The bytes alone: a separate process writes a static row-sized page-aligned buffer to a new file with
    ``O_DIRECT`` whenever the training thread writes one byte to its pipe (no copy, no thread in this
    process), and answers one byte when the write is done. Its slowdown is what sending these bytes to the
    disk costs training on this machine. Back-pressure as the bare twin's two buffers: a third write waits
    for the oldest to be acknowledged (without it the pipe queued requests at ~90 % disk load, and their
    writes spilled into the baseline's block); ``close`` waits for all."""

    CHILD = (
        "import os, sys\n"
        "from trajkit.archive import directio\n"
        "out, n = sys.argv[1], int(sys.argv[2])\n"
        "buf = memoryview(directio.aligned_empty(n, 0.0)).cast('B')\n"
        "i = 0\n"
        "while (b := os.read(0, 1)) and b != b'q':\n"
        "    directio.write_direct(f'{out}/row.{i}', buf); i += 1\n"
        "    os.write(1, b'a')\n"
    )
    #: writes in flight at most (the bare twin's buffers)
    IN_FLIGHT = 2

    def __init__(self, out: Path, n: int):
        import subprocess
        import sys

        from trajkit.archive import directio

        padded = -(-n * 4 // directio.ALIGN) * directio.ALIGN // 4
        self.proc = subprocess.Popen([sys.executable, "-c", self.CHILD, str(out), str(padded)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.pending = 0

    def _ack(self) -> None:
        if os.read(self.proc.stdout.fileno(), 1) != b"a":
            raise RuntimeError(f"io twin: the writer process stopped (exit code {self.proc.poll()})")
        self.pending -= 1

    def write(self, k: int) -> None:
        while self.pending >= self.IN_FLIGHT:
            self._ack()
        self.proc.stdin.write(b"w")
        self.pending += 1

    def close(self) -> None:
        while self.pending:
            self._ack()
        self.proc.stdin.write(b"q")
        self.proc.stdin.close()
        self.proc.wait()


def train(steps: int, sink: str, schedule, workdir: Path, writer: str = "auto", compressor=None,
          device: str = "cpu", direct: bool | None = None, overlap: bool = True,
          zero_copy: bool | None = False, batch: int = BATCH) -> dict:
    """Train ``steps`` SGD steps in one go. Returns time, bytes and the recorder's own figures."""
    t = Trainer(sink, schedule, workdir, "run", writer, compressor, device, direct, overlap, zero_copy, batch)
    t.run_to(steps)
    return t.finish()


#: steps per block of the alternation (``--block auto``): sparse schedules, and those writing at every step
SHORT_BLOCK, LONG_BLOCK = 10, 250


def auto_block(schedule, steps: int) -> int:
    """The alternation's block for ``schedule``: :data:`LONG_BLOCK` when it snapshots at (nearly) every step —
    each block then ends with a row in flight, whose write spills into the baseline's block, so the blocks
    must be long for that spill to stay small —, :data:`SHORT_BLOCK` otherwise."""
    return LONG_BLOCK if schedule.steps(steps).size > steps // 2 else SHORT_BLOCK


def block_ends(steps: int, block: int, schedule) -> list[int]:
    """Ends of the interleaving blocks: about every ``block`` steps, each moved (by < 20 steps) to where the
    last snapshot lies furthest behind, so that the recorder's queued writes rarely spill into the
    baseline's block."""
    snaps = schedule.steps(steps)
    ends, e = [], block
    while e < steps:
        cands = range(e, min(e + 20, steps))
        best = max(cands, key=lambda c: c - (snaps[snaps <= c].max() if (snaps <= c).any() else -steps))
        ends.append(best)
        e = best + block
    return [*ends, steps]


def interleaved(steps: int, block: int, sink: str, schedule, workdir: Path, writer: str, compressor, device: str,
                direct: bool | None, overlap: bool = True, zero_copy: bool | None = False,
                batch: int = BATCH) -> tuple[dict, float]:
    """Train the recorded run and a plain baseline side by side, alternating blocks of ~``block`` steps
    (ABBA order), so that both see the same machine; returns the recorded run's figures and the baseline's
    seconds."""
    rec = Trainer(sink, schedule, workdir, "rec", writer, compressor, device, direct, overlap, zero_copy, batch)
    base = Trainer("none", trajkit.schedules.explicit([]), workdir, "base", device=device, batch=batch)
    # one copy of the (read-only) data for both: two copies placed differently made two identical plain models
    # train up to ±5 % apart on the VM of 2026-12-04 (an A/A bias, not noise: it kept its sign across repeats)
    base.X, base.y = rec.X, rec.y
    for i, end in enumerate(block_ends(steps, block, schedule)):
        first, second = (rec, base) if i % 2 == 0 else (base, rec)
        first.run_to(end)
        second.run_to(end)
    return rec.finish(), base.finish()["seconds"]


def direct_write_rate(workdir: Path, mib: int, chunk_bytes: int) -> float:
    """Bytes per second of ``O_DIRECT`` writes of ``chunk_bytes`` chunks (one file each, as a params row is
    written) into ``workdir``, ``mib`` MiB in all; buffered writes + fsync where ``O_DIRECT`` is refused."""
    from trajkit.archive import directio

    n = max(1, (mib << 20) // chunk_bytes)
    buf = directio.aligned_empty(-(-chunk_bytes // directio.ALIGN) * directio.ALIGN // 4, 0.0)
    data = memoryview(buf).cast("B")
    d = workdir / "disk-rate"
    d.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n):
        if not directio.write_direct(d / f"c.{i}", data):
            with open(d / f"c.{i}", "wb") as f:
                f.write(data)
                os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    shutil.rmtree(d, ignore_errors=True)
    os.sync()   # as in Trainer.finish
    return n * len(data) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--every-step-steps", type=int, default=1000, help="run length for config (c)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--writer", default="auto", choices=["auto", "inline", "thread"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads (default 1: ≈ 3.7 ms/step, the targets' regime; 2 = both cores)")
    ap.add_argument("--configs", default="a,b,c,d,zstd",
                    help="comma-separated subset of a, b, c (trajkit), d (torch.save at each), zstd, raw (bare I/O "
                         "twins), io (the bytes alone, from another process), "
                         "copy (the twin's copy alone, nothing written), "
                         "buf (each of a, b, c also with direct=False: writes through the page cache), "
                         "sync (each of a, b, c also without optimizer=: the copy on the training thread), "
                         "zero (each of a, b, c also with zero_copy=None: no copy), "
                         "null (the method's own resolution: an A/A run of a plain twin against its baseline, and "
                         "a plain twin whose parameters sit where zero copy puts them, nothing recorded)")
    ap.add_argument("--batch", type=int, default=BATCH,
                    help="minibatch size (default 128). A smaller batch shortens the step but not the row, so "
                         "on a slow VM it recreates the bytes-per-second of a faster one (32: ≈ 3.3 ms/step on the VM "
                         "that trains batch 128 at 8 ms/step)")
    ap.add_argument("--disk-mib", type=int, default=None,
                    help="MiB written to measure the disk's direct-write rate (default: as many as (c) writes, so "
                         "that the rate is the sustained one, not a burst into the device's cache)")
    ap.add_argument("--block", default="auto",
                    help="train each recorded run and its own baseline side by side, alternating blocks of about "
                         f"this many steps (default auto: {SHORT_BLOCK}, or {LONG_BLOCK} for schedules that snapshot "
                         "at every step); 0: whole runs, baselines before and after each repeat")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.every_step_steps, args.repeats = 600, 200, 1
    if args.block != "auto":
        try:
            args.block = int(args.block)
        except ValueError:
            ap.error(f"--block must be auto or a number of steps, got {args.block!r}")
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_info

    print("threadpools:", [(i["internal_api"], i["num_threads"], i.get("architecture")) for i in threadpool_info()])
    print(f"torch threads: {torch.get_num_threads()}, writer={args.writer}")
    s, s1 = args.steps, args.every_step_steps
    all_configs = {
        "a: 200 log snapshots": (s, "trajkit", trajkit.schedules.log(1, s, 200), None, None),
        "b: every 10 steps": (s, "trajkit", trajkit.schedules.linear(10), None, None),
        "c: every step": (s1, "trajkit", trajkit.schedules.linear(1), None, None),
        "d(a): torch.save, log": (s, "torch.save", trajkit.schedules.log(1, s, 200), None, None),
        "d(b): torch.save, every 10": (s, "torch.save", trajkit.schedules.linear(10), None, None),
        "d(c): torch.save, every step": (s1, "torch.save", trajkit.schedules.linear(1), None, None),
        "a-zstd: 200 log, zstd": (s, "trajkit", trajkit.schedules.log(1, s, 200), "zstd", None),
        "a-buf: 200 log, direct=False": (s, "trajkit", trajkit.schedules.log(1, s, 200), None, False),
        "b-buf: every 10, direct=False": (s, "trajkit", trajkit.schedules.linear(10), None, False),
        "c-buf: every step, direct=False": (s1, "trajkit", trajkit.schedules.linear(1), None, False),
        "a-sync: 200 log, copy on thread": (s, "trajkit", trajkit.schedules.log(1, s, 200), None, None),
        "b-sync: every 10, copy on thread": (s, "trajkit", trajkit.schedules.linear(10), None, None),
        "c-sync: every step, copy on thread": (s1, "trajkit", trajkit.schedules.linear(1), None, None),
        "a-zero: 200 log, zero copy": (s, "trajkit", trajkit.schedules.log(1, s, 200), None, None),
        "b-zero: every 10, zero copy": (s, "trajkit", trajkit.schedules.linear(10), None, None),
        "c-zero: every step, zero copy": (s1, "trajkit", trajkit.schedules.linear(1), None, None),
        "a-raw: 200 log, bare I/O twin": (s, "raw", trajkit.schedules.log(1, s, 200), None, None),
        "b-raw: every 10, bare I/O twin": (s, "raw", trajkit.schedules.linear(10), None, None),
        "c-raw: every step, bare I/O twin": (s1, "raw", trajkit.schedules.linear(1), None, None),
        "a-io: 200 log, bytes alone": (s, "io", trajkit.schedules.log(1, s, 200), None, None),
        "b-io: every 10, bytes alone": (s, "io", trajkit.schedules.linear(10), None, None),
        "c-io: every step, bytes alone": (s1, "io", trajkit.schedules.linear(1), None, None),
        "a-copy: 200 log, the copy alone": (s, "copy", trajkit.schedules.log(1, s, 200), None, None),
        "b-copy: every 10, the copy alone": (s, "copy", trajkit.schedules.linear(10), None, None),
        "c-copy: every step, the copy alone": (s1, "copy", trajkit.schedules.linear(1), None, None),
        "null: A/A, plain twin": (s, "none", trajkit.schedules.explicit([]), None, None),
        "home: plain, re-homed params": (s, "home", trajkit.schedules.explicit([]), None, None),
    }
    wanted = {c.strip() for c in args.configs.split(",") if c.strip()}
    unknown = wanted - {"a", "b", "c", "d", "zstd", "buf", "sync", "zero", "raw", "io", "copy", "null"}
    if unknown:
        ap.error(f"--configs: unknown {sorted(unknown)}; "
                 "choose from a, b, c, d, zstd, buf, sync, zero, raw, io, copy, null")

    def selected(name: str) -> bool:
        key = name.split(":")[0]
        if key.startswith("d("):
            return "d" in wanted and key[2] in wanted
        if key.endswith("-buf"):
            return "buf" in wanted and key[0] in wanted
        if key.endswith("-sync"):
            return "sync" in wanted and key[0] in wanted
        if key.endswith("-zero"):
            return "zero" in wanted and key[0] in wanted
        if key.endswith("-raw"):
            return "raw" in wanted and key[0] in wanted
        if key.endswith("-copy"):
            return "copy" in wanted and key[0] in wanted
        if key.endswith("-io"):
            return "io" in wanted and key[0] in wanted
        if key in ("null", "home"):
            return "null" in wanted
        return (key == "a-zstd" and "zstd" in wanted) or key in wanted

    configs = {k: v for k, v in all_configs.items() if selected(k)}
    if not configs:
        ap.error("--configs selects nothing (d needs one of a, b, c with it)")
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="trajkit-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ratios: dict[str, list[float]] = {k: [] for k in configs}
    info: dict[str, list[dict]] = {}
    dev = args.device
    bs = args.batch
    train(100, "none", trajkit.schedules.explicit([]), workdir, device=dev, batch=bs)  # warm-up
    names = list(configs)

    def run_args(name: str) -> tuple:
        """(steps, sink, schedule, writer, compressor, direct, overlap, zero_copy) of a configuration; buf ones
        use the thread; sync ones copy on the training thread (no optimizer= for the Recorder); zero ones write
        from the parameters' memory (zero_copy=None)."""
        steps, sink, sched, comp, direct = configs[name]
        key = name.split(":")[0]
        overlap = not key.endswith("-sync")
        zero_copy = None if key.endswith("-zero") else False
        return steps, sink, sched, "thread" if direct is False else args.writer, comp, direct, overlap, zero_copy

    base_seconds: dict[str, list[float]] = {k: [] for k in configs}

    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        if args.block:   # each configuration against its own baseline, interleaved in blocks
            for name in order:
                steps, sink, sched, writer, comp, direct, overlap, zc = run_args(name)
                block = auto_block(sched, steps) if args.block == "auto" else args.block
                if args.quick:
                    block = min(block, 100)
                r, base = interleaved(steps, block, sink, sched, workdir, writer, comp, dev, direct, overlap, zc, bs)
                info.setdefault(name, []).append(r)
                ratios[name].append(r["seconds"] / base)
                base_seconds[name].append(base)
            print(f"repeat {rep + 1}/{args.repeats}: " + ", ".join(
                f"{n.split(':')[0]} {100 * (ratios[n][-1] - 1):+.1f}%" for n in names), flush=True)
            continue
        lengths = {configs[n][0] for n in names}
        base = {n: train(n, "none", trajkit.schedules.explicit([]), workdir, device=dev, batch=bs)["seconds"]
                for n in lengths}
        runs = {}
        for name in order:
            steps, sink, sched, writer, comp, direct, overlap, zc = run_args(name)
            runs[name] = train(steps, sink, sched, workdir, writer, comp, device=dev, direct=direct, overlap=overlap,
                               zero_copy=zc, batch=bs)
            info.setdefault(name, []).append(runs[name])
        base2 = {n: train(n, "none", trajkit.schedules.explicit([]), workdir, device=dev, batch=bs)["seconds"]
                 for n in lengths}
        for name, r in runs.items():
            steps = configs[name][0]
            ratios[name].append(r["seconds"] / (0.5 * (base[steps] + base2[steps])))
            base_seconds[name].append(0.5 * (base[steps] + base2[steps]))
        n0 = max(lengths)
        print(f"repeat {rep + 1}/{args.repeats}: baseline {n0} steps {base[n0]:.2f}s / {base2[n0]:.2f}s "
              f"({1e3 * base[n0] / n0:.2f} ms/step)", flush=True)
    floors: dict[str, float] = {}
    every_step = [n for n in names if n.split(":")[0].startswith("c") and configs[n][1] == "trajkit"]
    if every_step:
        row_bytes = info[every_step[0]][-1]["row_bytes"]
        mib = args.disk_mib if args.disk_mib is not None else max(256, info[every_step[0]][-1]["bytes"] >> 20)
        rate = direct_write_rate(workdir, mib, row_bytes)
        print(f"\ndisk direct-write rate: {rate / 1e9:.2f} GB/s ({mib} MiB in {row_bytes / 2**20:.2f} MiB "
              f"chunk files, {workdir})")
        for n in every_step:
            written = info[n][-1]["bytes"]
            floors[n] = float(np.median([max(0.0, written / rate - b) / b for b in base_seconds[n]]))
        n = every_step[0]
        steps, demand = configs[n][0], info[n][-1]["bytes"] / float(np.median(base_seconds[n]))
        print(f"every step at the baseline's pace ({1e3 * float(np.median(base_seconds[n])) / steps:.2f} ms/step, "
              f"batch {bs}) asks {demand / 1e9:.2f} GB/s of the disk: {100 * demand / rate:.0f} % of its "
              "direct-write rate")
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
              f"{last['bytes'] / 2**20:11.1f} MiB {comp if comp is None else round(comp, 3)!s:>6s} {tt:>30s}  "
              f"{last['writer'] or '-'}" + (f"  [physical floor {100 * floors[name]:+.1f}%]" if name in floors else ""))
        summary[name] = {"slowdown_median": float(np.median(rs)), "slowdown_all": rs.tolist(),
                         "writer": last["writer"], "bytes": last["bytes"], "compression_ratio": comp,
                         "physical_floor": floors.get(name),
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
