"""The Recorder's side of online two-time observables (:mod:`trajkit.online`): keep w(tw), measure sums.

:class:`OnlineTracker` is built from a :class:`trajkit.online.TwoTime` before the archive is created (so
bad input writes nothing), then :meth:`OnlineTracker.open` attaches an
:class:`~trajkit.archive.online.OnlineWriter` to the archive. :meth:`OnlineTracker.measure` runs on the
training thread at the steps of :meth:`TwoTime.steps` only: it keeps the flat selected parameters at a
waiting time, and at ``tw + t`` computes, per layer, the six float64 sums of every waiting time measured
then, reduces them once (``TwoTime.reduce``), copies them to the host and commits them as rows.

Sharded parameters (``group`` given: DTensor / FSDP2 runs, a tracker on every rank): each rank keeps only
its local part of w(tw) and sums over the elements it counts (:func:`~trajkit.record.distributed.counts_here`:
every element by exactly one rank); the ``[m, 6, L]`` partial sums are summed over the ranks by **one**
:func:`~trajkit.record.distributed.all_reduce_sums` per measured step, before ``TwoTime.reduce`` and the
host copy, and only the tracker given a writer by :meth:`~OnlineTracker.open` (rank 0's) writes them. The cutoff
``ε = std(w(tw))/F`` needs the global moments: a second, separate all-reduce of ``[n, Σw, Σw²]`` (three
float64) at each such waiting time — separate because the Θ sums measured at that same step need ε
first; ``std = sqrt(Σw²/n − (Σw/n)²)`` (one pass; the single-process path's two-pass std agrees to rounding
for weights whose mean is not far larger than their spread). The reduced count must equal the selection's
size, which checks that the ranks' shards cover it exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajkit.archive.layout import Layout, select_columns
from trajkit.archive.online import SUMS, OnlineWriter
from trajkit.errors import TrajkitError
from trajkit.record import distributed

#: the entries of ``/online`` a resumed run must measure alike (``reference``, where w(tw) is kept, may change)
RESUME_KEYS = ("waiting_times", "lags", "select", "epsilon", "epsilon_factor", "n_cols", "layers",
               "n_cols_per_layer", "per_layer")
#: fewest columns per thread of the CPU loop (splitting less is not worth a thread hand-off)
MIN_SPLIT_COLS = 65536
#: elements per chunk of the sums (bounds the float64 temporaries: 5 × 8 B × 2²² ≈ 168 MB)
CHUNK = 1 << 22


def schedule_end(schedule: Any) -> int | None:
    """The last step a schedule takes (its spec's stop / largest step), or None when it is unbounded."""
    spec = schedule.spec
    kind = spec.get("kind")
    if kind == "log":
        return int(spec["stop"])
    if kind == "explicit":
        return max(spec["steps"]) if spec["steps"] else None
    if kind == "linear":
        return spec.get("stop")
    if kind == "union":
        ends = [schedule_end(p) for p in schedule.parts]
        return None if any(e is None for e in ends) else max(ends)
    return None


class OnlineTracker:
    """Keeps the waiting-time vectors of ``spec`` for ``model`` (trainable tensors in ``layout`` order) and
    measures the sums; ``metadata`` is the archive's ``/online``."""

    def __init__(self, spec: Any, model: torch.nn.Module, layout: Layout, schedule: Any, group: Any = None):
        from trajkit.online import TwoTime

        if not isinstance(spec, TwoTime):
            raise TrajkitError(f"Recorder: online= takes a trajkit.online.TwoTime, got {type(spec).__name__}")
        last = schedule_end(schedule)
        if last is not None and spec.waiting_times[-1] > last:
            raise TrajkitError(f"Recorder online: waiting time {spec.waiting_times[-1]} is after the run's last step "
                               f"{last} (the schedule's end); use waiting times <= {last} or extend the schedule")
        sel = select_columns(layout, spec.select, "Recorder online select")
        params = [p for p in model.parameters() if p.requires_grad]
        chosen = [(p, e) for p, e in zip(params, layout, strict=True)
                  if sel.within(e["offset"], e["offset"] + e["size"])]
        layers = sorted({e["layer"] for _, e in chosen})
        pos = {layer: i for i, layer in enumerate(layers)}
        self.spec = spec
        self.steps = spec.steps()
        self.device = params[0].device
        self.group = group
        rank = 0 if group is None else torch.distributed.get_rank(group)
        here = [(p, e) for p, e in chosen if group is None or distributed.counts_here(p, rank)]
        self._tensors = [(p, pos[e["layer"]]) for p, e in here]
        self._names = [e["name"] for _, e in here]
        self._n_local = int(sum(distributed.local_flat(p).numel() for p, _ in self._tensors))
        self.n_cols = int(sum(e["size"] for _, e in chosen))
        per_layer_cols = [0] * len(layers)
        for _, e in chosen:
            per_layer_cols[pos[e["layer"]]] += int(e["size"])
        self._dtype = params[0].dtype
        self.reference = self._placement(spec.reference)
        self._tw_index = {tw: k for k, tw in enumerate(spec.waiting_times)}
        self._lags = frozenset((0, *spec.lags))
        self._max_lag = max(spec.lags)
        self._refs: dict[int, tuple[torch.Tensor, float]] = {}
        # CPU float32/float64: the compiled pair loop over a bank of rows (see _CpuBank)
        self._bank = (_CpuBank(self._tensors, _max_alive(spec.waiting_times, self._max_lag), self._dtype)
                      if self.device.type == "cpu" and self._dtype in (torch.float32, torch.float64) else None)
        self._reduce = spec.reduce if spec.reduce is not None else _identity
        self._writer: OnlineWriter | None = None
        self._resume: Any = None   # the committed rows of the archive a resumed run continues
        self.metadata = {"waiting_times": list(spec.waiting_times), "lags": list(spec.lags), "select": spec.select,
                         "epsilon": spec.epsilon, "epsilon_factor": None if spec.epsilon else spec.epsilon_factor,
                         "n_cols": self.n_cols, "layers": layers, "n_cols_per_layer": per_layer_cols,
                         "per_layer": bool(spec.per_layer), "reference": self.reference, "sums": list(SUMS)}

    def _placement(self, reference: str) -> str:
        if reference != "auto":
            return reference
        if self.device.type != "cuda":
            return "device"
        alive = _max_alive(self.spec.waiting_times, max(self.spec.lags))
        need = alive * self._n_local * torch.empty((), dtype=self._dtype).element_size()
        free, _ = torch.cuda.mem_get_info(self.device)
        return "device" if need <= free // 2 else "host"

    def attach_existing(self, path: Path) -> bool:
        """For a run that continues the archive at ``path``: check that its ``/online`` measured what this
        spec measures and read its committed rows (kept for :meth:`open` and :meth:`resume_at`). True when
        there are committed rows."""
        from trajkit.archive.online import online_rows
        from trajkit.archive.reader import open_archive

        arch = open_archive(path)
        have = arch.metadata.get("online")
        if not have:
            raise TrajkitError(f"{path}: the archive was recorded without online observables, so a run "
                               "continuing it cannot add online=; leave online= out or record to a new path")
        differ = [k for k in RESUME_KEYS if have.get(k) != self.metadata[k]]
        if differ:
            shown = "; ".join(f"{k}: archive {have.get(k)!r}, now {self.metadata[k]!r}" for k in differ)
            raise TrajkitError(f"{path}: cannot resume: online= differs from the archive's /online ({shown}); "
                               "pass the run's original TwoTime or record to a new path")
        self._resume = online_rows(arch)
        return self._resume.n_rows > 0

    def open(self, root: Path, fsync: bool) -> None:
        """Create ``online/`` in the archive at ``root`` (continue it after :meth:`attach_existing`)."""
        self._writer = OnlineWriter(root, len(self.metadata["layers"]) if self.spec.per_layer else None, fsync,
                                    existing=None if self._resume is None else self._resume.step)

    @torch.no_grad()
    def resume_at(self, step: int, path: Path) -> None:
        """The first step of a run continuing the archive (after :meth:`attach_existing`): drop the rows
        measured at ``step`` or later, and take back each waiting time still measured from ``step`` on —
        w(tw) from the snapshot at tw (stored losslessly: the archive's dtype is the parameters'), ε from
        its committed rows — so the run measures on as if it had not stopped."""
        rows, self._resume = self._resume, None
        if rows is None:
            return
        kept = self._read_back(step, path, rows)   # checked and read before anything is dropped
        if self._writer is not None:
            self._writer.truncate(step)
        for j, (flat, eps) in kept.items():
            self._hold(j, flat, eps)

    def _read_back(self, step: int, path: Path, rows: Any) -> dict[int, tuple[torch.Tensor, float]]:
        """w(tw) and ε of every waiting time still measured from ``step`` on, read from the archive."""
        tws = self.spec.waiting_times
        alive = [j for j, tw in enumerate(tws) if tw < step <= tw + self._max_lag]
        if not alive:
            return {}
        from trajkit.archive.reader import open_archive

        arch = open_archive(path)
        row_of = {int(s): i for i, s in enumerate(arch.steps)}
        missing = [tws[j] for j in alive if tws[j] not in row_of]
        if missing:
            raise TrajkitError(
                f"{path}: cannot resume online observables at step {step}: waiting time(s) {missing} are still "
                f"measured from there on, but the archive has no snapshot of w(tw) at them; put the waiting "
                f"times in the snapshot schedule (schedule | schedules.explicit(waiting_times)), "
                f"resume at a step no waiting time is measured past, or record to a new path")
        want = str(self._dtype).removeprefix("torch.")
        if arch.storage_dtype != want:
            raise TrajkitError(f"{path}: cannot resume online observables: the snapshots are stored as "
                               f"{arch.storage_dtype}, the parameters are {want}, so w(tw) cannot be read back "
                               f"exactly; record online runs to resume with dtype={want!r}")
        where = {e["name"]: e for e in arch.metadata["layout"]}
        absent = [n for n in self._names if n not in where]
        if absent:
            raise TrajkitError(f"{path}: cannot resume online observables: tensor(s) {absent[:3]} of the online "
                               "selection are not in the archive's recorded subset (select=); record online "
                               "runs to resume with a select= that keeps them")
        kept = {}
        for j in alive:
            eps = rows.epsilon[(rows.tw_step == tws[j]) & (rows.step < step)]
            if eps.size == 0:
                raise TrajkitError(f"{path}: cannot resume online observables: no committed row of waiting time "
                                   f"{tws[j]} (its ε is unknown); run `trajkit validate` on the archive")
            i = row_of[tws[j]]
            parts = []
            for (p, _), name in zip(self._tensors, self._names, strict=True):
                a, b = distributed.local_interval(p, name)
                off = int(where[name]["offset"])
                parts.append(np.asarray(arch.params[i, off + a:off + b]))
            flat = torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0)).to(self._dtype)
            kept[j] = (self._place(flat), float(eps[0]))
        return kept

    @torch.no_grad()
    def measure(self, step: int) -> None:
        """At a step of :attr:`steps`: keep w(step) if it is a waiting time, then measure every waiting time
        whose grid has ``step``, and commit the rows."""
        k = self._tw_index.get(step)
        if k is not None:
            self._hold(k, *self._keep())
        tws = self.spec.waiting_times
        due = [j for j in sorted(self._refs) if step - tws[j] in self._lags]
        if due:
            if self._bank is not None:
                sums = self._bank.sums(due, [self._refs[j][1] for j in due], len(self.metadata["layers"]))
            else:
                sums = torch.stack([self._sums(*self._refs[j]) for j in due])
            sums = self._reduce(distributed.all_reduce_sums(sums, self.group))
            host = sums.cpu().numpy()
            if self._writer is not None:   # rank 0's tracker (the only one opened) writes
                self._writer.append(np.asarray([tws[j] for j in due]), step,
                                    np.asarray([self._refs[j][1] for j in due]), host)
        for j in [j for j in self._refs if step >= tws[j] + self._max_lag]:
            del self._refs[j]
            if self._bank is not None:
                self._bank.drop(j)

    def close(self) -> None:
        if self._bank is not None:
            self._bank.close()
        if self._writer is not None:
            self._writer.close()

    def _keep(self) -> tuple[torch.Tensor, float]:
        parts = [distributed.local_flat(p) for p, _ in self._tensors]
        flat = torch.cat(parts) if parts else torch.zeros(0, dtype=self._dtype, device=self.device)
        if self.spec.epsilon is not None:
            eps = float(self.spec.epsilon)
        elif self.group is None:
            x = flat.to(torch.float64)
            eps = float(torch.sqrt(((x - x.mean()) ** 2).mean())) / float(self.spec.epsilon_factor)
            del x
        else:
            eps = self._global_std(flat) / float(self.spec.epsilon_factor)
        return self._place(flat), eps

    def _place(self, flat: torch.Tensor) -> torch.Tensor:
        """A kept vector where ``reference`` says: pinned host memory for a CUDA model's ``host``, else the
        parameters' device."""
        if self.reference == "host" and self.device.type != "cpu":
            host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            host.copy_(flat)
            return host
        return flat.to(self.device)

    def _hold(self, k: int, flat: torch.Tensor, eps: float) -> None:
        """Keep w(tw) of waiting time ``k`` (in the CPU bank when there is one) with its cutoff."""
        if self._bank is not None:
            self._bank.keep(k, flat)
            flat = flat[:0]   # the bank holds the vector
        self._refs[k] = (flat, eps)

    def _global_std(self, flat: torch.Tensor) -> float:
        """std of the selected elements over every rank's part (one all-reduce of ``[n, Σw, Σw²]``)."""
        x = flat.to(torch.float64)
        moments = torch.stack([torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device), x.sum(),
                               (x * x).sum()])
        n, s1, s2 = distributed.all_reduce_sums(moments, self.group).tolist()
        if int(n) != self.n_cols:
            raise TrajkitError(f"Recorder online: the ranks' parts of the selected parameters hold {int(n)} "
                               f"elements, the selection has {self.n_cols}; shard the parameters without "
                               "replicating a block on several ranks of one mesh dimension")
        mean = s1 / n
        return float(np.sqrt(max(s2 / n - mean * mean, 0.0)))

    def _sums(self, ref: torch.Tensor, eps: float) -> torch.Tensor:
        """float64 ``[6, L]``: :data:`~trajkit.archive.online.SUMS` per layer between ``ref`` and now."""
        acc = torch.zeros(len(SUMS), len(self.metadata["layers"]), dtype=torch.float64, device=self.device)
        off = 0
        for p, layer in self._tensors:
            flat = distributed.local_flat(p)
            n = flat.numel()
            for c0 in range(0, n, CHUNK):
                c1 = min(n, c0 + CHUNK)
                b = flat[c0:c1].to(torch.float64)
                a = ref[off + c0:off + c1].to(device=self.device, dtype=torch.float64, non_blocking=True)
                d = b - a
                d2 = d * d
                acc[:, layer] += torch.stack([(a * b).sum(), d2.sum(), (d2 * d2).sum(),
                                              (d.abs() < eps).sum().to(torch.float64), (a * a).sum(),
                                              (b * b).sum()])
            off += n
        return acc


class _CpuBank:
    """The waiting-time vectors of a CPU run as rows of one array, measured by the compiled pair loop.

    Row 0 takes the current parameters at each measured step (one copy); rows ``1..m`` hold the ``m``
    vectors kept now, compacted (a dropped row is replaced by the last one). :meth:`sums` runs
    :func:`trajkit.pairloop.pair_tiles` — the loop the analysis kernels run on archives — on rows ``0..m``
    once per layer's column range: one pass reads each kept vector once, promotes to float64 in cache-sized
    tiles and gives Σa·b, Σd², Σd⁴, #{|d| < ε} per due pair and Σx² per row, with no temporaries the size of
    the model (the torch path makes several per waiting time). The columns are split over torch's CPU
    threads (the loop releases the GIL)."""

    def __init__(self, tensors: list[tuple[torch.Tensor, int]], max_alive: int, dtype: torch.dtype):
        self._tensors = tensors
        self._dtype = "float64" if dtype == torch.float64 else "float32"
        self._cap = max_alive + 2   # row 0, the kept vectors, and one due to go at the step a new one comes
        self._n = int(sum(distributed.local_flat(p).numel() for p, _ in tensors))
        ranges: list[list[int]] = []   # [c0, c1, layer] of consecutive tensors of one layer
        off = 0
        for p, layer in tensors:
            n = distributed.local_flat(p).numel()
            if ranges and ranges[-1][2] == layer and ranges[-1][1] == off:
                ranges[-1][1] = off + n
            else:
                ranges.append([off, off + n, layer])
            off += n
        self._ranges = [tuple(r) for r in ranges if r[1] > r[0]]
        self._rows: dict[int, int] = {}        # waiting-time index -> bank row
        self._X: np.ndarray | None = None      # [cap, n], allocated at the first kept vector
        self._pool = None

    def keep(self, k: int, flat: torch.Tensor) -> None:
        if self._X is None:
            self._X = np.empty((self._cap, max(self._n, 1)), dtype=self._dtype)
        row = len(self._rows) + 1
        if row >= self._X.shape[0]:   # more alive than planned: grow (never expected; kept for safety)
            self._X = np.concatenate([self._X, np.empty_like(self._X[:1])])
        torch.from_numpy(self._X[row, : self._n]).copy_(flat)
        self._rows[k] = row

    def drop(self, k: int) -> None:
        row = self._rows.pop(k)
        last = len(self._rows) + 1
        if row != last:
            j = next(j for j, r in self._rows.items() if r == last)
            self._X[row] = self._X[last]
            self._rows[j] = row

    def sums(self, due: list[int], eps: list[float], n_layers: int) -> torch.Tensor:
        """float64 ``[len(due), 6, L]``: :data:`~trajkit.archive.online.SUMS` per layer, now against each due
        kept vector."""
        from trajkit.pairloop import compiled, run_split, tile_cols

        X = self._X
        R = len(self._rows) + 1
        off = 0
        for p, _ in self._tensors:
            part = distributed.local_flat(p)
            torch.from_numpy(X[0, off:off + part.numel()]).copy_(part)
            off += part.numel()
        Xr = X[:R]
        la = np.array([self._rows[j] for j in due], dtype=np.int64)
        lb = np.zeros(len(due), dtype=np.int64)
        e = np.asarray(eps, dtype=np.float64)
        loop, tile = compiled(self._dtype), tile_cols(R)
        threads = max(1, min(torch.get_num_threads(), 8))
        out = np.zeros((len(due), len(SUMS), n_layers))
        for c0, c1, layer in self._ranges:
            if self._pool is None and threads > 1 and c1 - c0 >= 2 * MIN_SPLIT_COLS:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(threads, thread_name_prefix="trajkit-online")
            acc, nrm = run_split(loop, Xr, la, lb, e, c0, c1, threads, tile, MIN_SPLIT_COLS, self._pool)
            out[:, :4, layer] += acc
            out[:, 4, layer] += nrm[la]
            out[:, 5, layer] += nrm[0]
        return torch.from_numpy(out)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._X = None


def _identity(x: Any) -> Any:
    return x


def _max_alive(waiting_times: tuple[int, ...], max_lag: int) -> int:
    """The most waiting-time vectors kept at once (windows ``[tw, tw + max_lag)`` overlapping)."""
    tws = np.asarray(waiting_times)
    return int(max(np.sum((tws <= tw) & (tws + max_lag > tw)) for tw in tws))
