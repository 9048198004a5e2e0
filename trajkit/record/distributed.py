"""Distributed recording: one archive from the ranks of a ``torch.distributed`` process group.

A :class:`~trajkit.record.Recorder` created on every rank of a process group (by default the default
group, when ``torch.distributed`` is initialised with more than one rank) records the one logical
trajectory into one archive. The archive holds the full, unsharded parameter vector in the layout of the
unwrapped model, so an archive written by 4 ranks reads exactly like one written by 1 process.

- **Replicated parameters** (DDP, or plain tensors): rank 0 records as a single process does — its copy
  of the parameters, its trace (its own minibatch loss), its metrics. The other ranks do no I/O and take
  part in no collective after the Recorder's construction.
- **Sharded parameters** (DTensor parameters, e.g. FSDP2 ``fully_shard``): the columns of each params
  chunk are written by one rank, its *owner* (the rank holding most of the chunk). At a snapshot every
  rank sends the columns it holds of chunks owned by others in one ``all_to_all_single`` (in the
  parameters' own dtype, float32 at least), casts them into its row buffer of the archive's storage dtype
  (as a single process's copy does), writes the
  chunks it owns directly into the archive's ``snapshots/params``, and joins one ``all_reduce`` (the
  snapshot barrier, with a timeout, which also carries the rows' NaN/inf and write-failure flags); rank
  0 then commits the snapshot with the single-process commit protocol. No chunk is written by two ranks,
  a row is committed only once every rank's chunks are written, and a rank killed mid-snapshot leaves the
  row uncommitted (the others fail at the barrier with a one-line error).

Process-group operations, in order: at construction two gathers of small pickled records (every rank's
configuration — layout, schedule, path, options — and the chunks it holds, compared so that ranks that
disagree fail together with a one-line error before anything is written; then rank 0's archive geometry,
or the error that stopped it from opening the archive); at each snapshot, sharded runs only, one
``all_to_all_single`` and one ``all_reduce``; online two-time observables of sharded runs
(:mod:`trajkit.record.online`): one ``all_reduce`` of the partial sums per measured step, and one of three
moments at each waiting time whose cutoff is ``std(w(tw))/F``; nothing on other steps and nothing in
``close``. Every wait
is bounded by :func:`timeout_seconds` (``TRAJKIT_DIST_TIMEOUT``, default 300 s). Collectives run on the
training thread in program order, so a sharded run writes inline.

:func:`all_reduce_sums` is the one reduction other recording features (online observables) use for
per-rank partial sums.
"""

from __future__ import annotations

import bisect
import datetime
import functools
import itertools
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from trajkit.archive import dtypes
from trajkit.archive import format as fmt
from trajkit.archive.writer import ArchiveWriter, write_params_chunks
from trajkit.errors import TrajkitError
from trajkit.record.copier import host_array, host_buffer
from trajkit.validation import env_seconds

#: environment variable: seconds a rank waits for the others at a collective before it fails
TIMEOUT_ENV = "TRAJKIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0


class DistributedError(TrajkitError):
    """Ranks disagree, a rank did not answer in time, or a rank failed to write its part of a snapshot."""


def timeout_seconds() -> float:
    """Seconds to wait for the other ranks (``TRAJKIT_DIST_TIMEOUT``, default 300)."""
    return env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, TrajkitError)


def resolve_group(process_group: Any) -> Any:
    """The process group to record from: ``process_group``, or the default group when ``torch.distributed``
    is initialised; None for a single process (a group of one rank included, and ``process_group=False``:
    this process records alone, e.g. rank 0 of a replicated run whose other ranks create no Recorder)."""
    if process_group is False:
        return None
    initialised = dist.is_available() and dist.is_initialized()
    if process_group is None:
        if not initialised:
            return None
        process_group = dist.group.WORLD
    elif not initialised:
        raise TrajkitError("Recorder: process_group given but torch.distributed is not initialised; call "
                           "torch.distributed.init_process_group first")
    return process_group if dist.get_world_size(process_group) > 1 else None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose parameters are recorded: a DistributedDataParallel wrapper's ``module``."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def class_name(model: torch.nn.Module) -> str:
    """``module.QualName`` of the user's class of ``model`` (FSDP2 ``fully_shard`` swaps in a generated
    ``FSDP<Name>`` subclass, which an archive of the same model from one process would not name)."""
    cls = type(model)
    if "torch.distributed.fsdp" in sys.modules:   # a model cannot be FSDP's before it is imported (3 s)
        from torch.distributed.fsdp import FSDPModule

        if isinstance(model, FSDPModule):
            cls = next(c for c in cls.__mro__ if not issubclass(c, FSDPModule))
    return f"{cls.__module__}.{cls.__qualname__}"


def all_reduce_sums(tensor: torch.Tensor, group: Any) -> torch.Tensor:
    """Sum ``tensor`` (per-rank partial sums, any shape) over the ranks of ``group`` in place and return it;
    a no-op for ``group=None`` (one process). A tensor on another device than the backend's (a CUDA tensor
    with gloo) is reduced through a copy. Bounded by :func:`timeout_seconds`."""
    if group is not None:
        device = _comm_device(group)
        work = tensor if tensor.device == device else tensor.to(device)
        _wait(dist.all_reduce(work, op=dist.ReduceOp.SUM, group=group, async_op=True), "all_reduce_sums")
        if work is not tensor:
            tensor.copy_(work)
    return tensor


def _wait(work: Any, what: str) -> None:
    t = timeout_seconds()
    try:
        work.wait(datetime.timedelta(seconds=t))
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DistributedError(f"distributed recording: {what}: a rank crashed or did not answer within {t:g} s "
                               f"({first}); check the other ranks' logs — every rank must create the Recorder and "
                               f"reach the same snapshots ({TIMEOUT_ENV} sets the wait)") from None


def _comm_device(group: Any) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_gather_objects(obj: Any, group: Any, what: str) -> list[Any]:
    """``all_gather_object`` with a bounded wait (pickled records of a few kB)."""
    device = _comm_device(group)
    world = dist.get_world_size(group)
    data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8).to(device)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    _wait(dist.all_gather(sizes, size, group=group, async_op=True), what)
    n = int(max(s.item() for s in sizes))
    padded = torch.zeros(n, dtype=torch.uint8, device=device)
    padded[:data.numel()] = data
    out = [torch.zeros_like(padded) for _ in range(world)]
    _wait(dist.all_gather(out, padded, group=group, async_op=True), what)
    return [pickle.loads(o[:int(s.item())].cpu().numpy().tobytes()) for o, s in zip(out, sizes, strict=True)]


# -- which rank holds which columns ---------------------------------------------------------------------


def _is_dtensor(p: Any) -> bool:
    if "torch.distributed.tensor" not in sys.modules:   # no DTensor exists before its module is imported
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(p, DTensor)


def local_interval(p: torch.Tensor, name: str) -> tuple[int, int]:
    """``[start, stop)`` of tensor ``p``'s flat (C-order) elements this rank holds: all of a plain tensor,
    the local shard of a DTensor (sharded along its first dimension longer than 1)."""
    n = p.numel()
    if not _is_dtensor(p):
        return 0, n
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if any(pl.is_partial() for pl in p.placements):
        raise TrajkitError(f"Recorder: parameter {name!r} has a Partial placement; reduce it before recording")
    shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    full = tuple(int(s) for s in p.shape)
    sharded = [d for d in range(len(full)) if shape[d] != full[d]]
    if not sharded:
        return 0, n
    d = sharded[0]
    if len(sharded) > 1 or int(np.prod(full[:d], dtype=np.int64)) != 1:
        raise TrajkitError(f"Recorder: parameter {name!r} is sharded as {tuple(p.placements)}, which does not "
                           "give each rank a contiguous block; shard it along its first dimension (Shard(0), "
                           "as FSDP2 fully_shard does)")
    row = int(np.prod(full[d + 1:], dtype=np.int64))
    return int(offset[d]) * row, (int(offset[d]) + int(shape[d])) * row


def local_flat(p: torch.Tensor) -> torch.Tensor:
    """The elements of ``p`` this rank holds, flattened (the DTensor's local shard)."""
    local = p.to_local() if _is_dtensor(p) else p
    return local.detach().reshape(-1)


def counts_here(p: torch.Tensor, rank: int) -> bool:
    """Whether this rank (``rank`` in the recording group) adds ``p``'s local elements to sums over the whole
    vector, so that every element is counted by exactly one rank: a plain (replicated) tensor on rank 0
    only; a DTensor on the ranks at coordinate 0 of every mesh dimension it is replicated over (its shards
    are disjoint)."""
    if not _is_dtensor(p):
        return rank == 0
    coord = p.device_mesh.get_coordinate()
    if coord is None:   # this rank is not in the tensor's mesh
        return False
    return all(c == 0 for c, pl in zip(coord, p.placements, strict=True) if pl.is_replicate())


@dataclass(frozen=True)
class Segment:
    """Columns ``[start, stop)`` of the flat vector: ``provider`` sends them to ``owner``, who writes them."""

    start: int
    stop: int
    provider: int
    owner: int


def plan_segments(holdings: list[list[tuple[int, int]]], n_params: int, chunk_cols: int) -> tuple[list[int],
                                                                                                   list[Segment]]:
    """Assign each params chunk to one rank and say who sends which columns to it.

    ``holdings[r]``: the flat column intervals rank ``r`` holds. Chunk ``j`` (columns ``[jC, (j+1)C)``) is
    owned by the rank holding most of it (ties go to ranks in turn, ``j mod W`` first); each column comes
    from its owner when the owner holds it, else from the lowest rank holding it. Returns (owner per
    chunk, segments split at every chunk and interval boundary).
    """
    world = len(holdings)
    n_chunks = -(-n_params // chunk_cols)
    cuts = {0, n_params, *range(0, n_params, chunk_cols)}
    for ivs in holdings:
        for a, b in ivs:
            cuts.update((a, b))
    bounds = sorted(cuts)
    starts = [sorted(ivs) for ivs in holdings]

    def holders(a: int) -> list[int]:
        out = []
        for r, ivs in enumerate(starts):
            i = bisect.bisect_right(ivs, (a, n_params + 1)) - 1
            if i >= 0 and ivs[i][0] <= a < ivs[i][1]:
                out.append(r)
        return out

    pieces = [(a, b, holders(a)) for a, b in itertools.pairwise(bounds) if a < b]
    held = np.zeros((n_chunks, world), np.int64)
    for a, b, hs in pieces:
        if not hs:
            raise TrajkitError(f"Recorder: no rank holds parameter columns [{a}, {b}); the ranks' shards do not "
                               "cover the model")
        for r in hs:
            held[a // chunk_cols, r] += b - a
    owners = []
    for j in range(n_chunks):
        order = [(j + i) % world for i in range(world)]
        owners.append(max(order, key=lambda r: held[j, r]))
    segments = []
    for a, b, hs in pieces:
        owner = owners[a // chunk_cols]
        segments.append(Segment(a, b, owner if owner in hs else hs[0], owner))
    return owners, segments


# -- the per-rank side of the archive ---------------------------------------------------------------------


@dataclass
class Geometry:
    """What every rank needs of rank 0's archive to write its chunks and to follow its rows."""

    path: str
    chunk_cols: int
    separator: str
    compressor: str | None
    fsync: bool
    direct: bool
    committed: int
    trace_committed: int
    steps: list[int]
    layout: list[dict[str, Any]]
    time: float
    dtype: str


def geometry_of(writer: ArchiveWriter) -> Geometry:
    return Geometry(str(writer.path), writer.chunk_cols, writer.key_separator, writer.compressor, writer.fsync,
                    writer.direct, writer.committed, writer.trace_committed, writer.steps,
                    writer.layout, writer.elapsed(), writer.dtype)


class RankArchive:
    """Stands in for the :class:`~trajkit.archive.writer.ArchiveWriter` on ranks other than 0: the same
    attributes, no lock, no metadata or trace I/O; it only follows the committed row count (so that a
    sharded rank names its chunk files) and writes the params chunks it owns."""

    def __init__(self, geo: Geometry, n_params: int):
        self.path = Path(geo.path)
        self.n_params = n_params
        self.layout = geo.layout
        self.chunk_cols, self.compressor, self.direct = geo.chunk_cols, geo.compressor, geo.direct
        self.committed, self.trace_committed = geo.committed, geo.trace_committed
        self._geo = geo
        self._steps = list(geo.steps)
        self.last_step = self._steps[-1] if self._steps else None

    @property
    def padded_size(self) -> int:
        return -(-self.n_params // self.chunk_cols) * self.chunk_cols

    def elapsed(self) -> float:
        return self._geo.time

    def truncate(self, step: int) -> int:
        keep = bisect.bisect_left(self._steps, step)
        dropped, self.committed, self._steps = self.committed - keep, keep, self._steps[:keep]
        self.last_step = self._steps[-1] if self._steps else None
        return dropped

    def write_chunks(self, row: np.ndarray, chunks: list[int]) -> None:
        g = self._geo
        write_params_chunks(self.path / fmt.PARAMS, self.committed, row, chunks, g.chunk_cols, g.separator,
                            g.compressor, g.fsync, g.direct)

    def commit_row(self, step: int, *args: Any, **kwargs: Any) -> int:
        """Follow rank 0's commit of the row (written by rank 0 once the barrier passed)."""
        k = self.committed
        self.committed, self.last_step = k + 1, step
        self._steps.append(step)
        return k

    def add_trace(self, steps: Any, columns: Any) -> None:
        """Trace rows are rank 0's."""

    def flush(self) -> None:
        """Nothing to flush: rank 0 writes the trace."""

    def update_metadata(self, extra: dict[str, Any]) -> None:
        """Metadata is rank 0's."""

    def close(self) -> None:
        """Nothing to release: rank 0 holds the lock."""


# -- the coordinator -------------------------------------------------------------------------------------


class DistributedRecording:
    """One rank's part of a distributed recording of parameters ``named`` (``[(name, tensor)]``, layout order)
    over ``group``."""

    def __init__(self, group: Any, named: list[tuple[str, torch.Tensor]]):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.params = [p for _, p in named]
        self.sharded = any(_is_dtensor(p) for p in self.params)
        sizes = [p.numel() for p in self.params]
        self._offsets = np.cumsum([0, *sizes]).tolist()
        self.n_params = int(self._offsets[-1])
        self._local = [local_interval(p, n) for n, p in named]
        self._holdings: list[list[tuple[int, int]]] = []
        #: indices of the params chunks this rank writes (sharded runs; set once rank 0's geometry is known)
        self.owned: list[int] = []

    @property
    def writes_whole_rows(self) -> bool:
        """Whether this rank records as a single process would (rank 0 of a replicated run)."""
        return self.rank == 0 and not self.sharded

    @property
    def metadata(self) -> dict[str, Any]:
        return {"world_size": self.world, "backend": str(dist.get_backend(self.group)),
                "parameters": "sharded" if self.sharded else "replicated"}

    def holdings(self) -> list[tuple[int, int]]:
        return [(o + a, o + b) for o, (a, b) in zip(self._offsets, self._local, strict=False) if b > a]

    def agree(self, where: str, config: dict[str, Any]) -> None:
        """Construction, every rank: exchange ``config`` and the columns held; all raise if any rank differs."""
        records = _all_gather_objects({"config": config, "holdings": self.holdings()}, self.group,
                                      f"{where}: comparing the ranks' configurations")
        mine = records[0]["config"]
        for r, rec in enumerate(records[1:], start=1):
            for key in mine:
                if rec["config"].get(key) != mine[key]:
                    raise DistributedError(f"{where}: ranks disagree on the {key} (rank {r} differs from rank 0); "
                                           "create the Recorder on every rank with the same model, schedule and "
                                           "options")
        self._holdings = [rec["holdings"] for rec in records]

    def share_archive(self, writer: ArchiveWriter | None, error: BaseException | None = None) -> RankArchive | None:
        """Construction, every rank, after rank 0 opened the archive (``writer``) or failed (``error``):
        rank 0's geometry reaches every rank (the others get their :class:`RankArchive`), or its error."""
        payload = None
        if self.rank == 0:
            payload = ("error", f"{type(error).__name__}: {error}") if error is not None else geometry_of(writer)
        records = _all_gather_objects(payload, self.group, "sharing the archive's geometry")
        head = records[0]
        if isinstance(head, tuple):
            if self.rank == 0:
                return None  # rank 0 re-raises its own error
            raise DistributedError(f"rank 0 could not open the archive: {head[1]}")
        if self.sharded:
            self._build_plan(head.chunk_cols, head.dtype)
        return None if self.rank == 0 else RankArchive(head, self.n_params)

    def _build_plan(self, chunk_cols: int, dtype: str) -> None:
        owners, segments = plan_segments(self._holdings, self.n_params, chunk_cols)
        me = self.rank
        self.owned = [j for j, o in enumerate(owners) if o == me]
        slot = {j: i for i, j in enumerate(self.owned)}
        #: the owned chunks back to back, in the storage dtype (NaN padding past N, as in a single process)
        self._dtype = dtype
        self._row_t = host_buffer(max(1, len(self.owned)) * chunk_cols, dtype=dtype)
        self._row = host_array(self._row_t)
        #: columns travel in the parameters' dtype (float32 at least), so the one cast into the storage dtype
        #: rounds each value exactly as a single process's copy does
        self._wire = functools.reduce(torch.promote_types, [p.dtype for p in self.params], torch.float32)
        valid = []
        for i, j in enumerate(self.owned):
            valid.append((i * chunk_cols, min(chunk_cols, self.n_params - j * chunk_cols)))
        self._valid = valid

        def pos(c: int) -> int:
            j = c // chunk_cols
            return slot[j] * chunk_cols + c - j * chunk_cols

        def source(s: Segment) -> tuple[int, int, int]:
            i = bisect.bisect_right(self._offsets, s.start) - 1
            lo = s.start - self._offsets[i] - self._local[i][0]
            return i, lo, lo + s.stop - s.start

        by_dest: list[list[tuple[int, int, int]]] = [[] for _ in range(self.world)]
        self._recv: list[list[tuple[int, int]]] = [[] for _ in range(self.world)]
        self._own: list[tuple[tuple[int, int, int], int]] = []
        self._exchange = any(s.provider != s.owner for s in segments)
        for s in segments:
            if s.provider == me and s.owner == me:
                self._own.append((source(s), pos(s.start)))
            elif s.provider == me:
                by_dest[s.owner].append(source(s))
            elif s.owner == me:
                self._recv[s.provider].append((pos(s.start), s.stop - s.start))
        self._send = by_dest
        self._send_sizes = [sum(hi - lo for _, lo, hi in d) for d in by_dest]
        self._recv_sizes = [sum(n for _, n in src) for src in self._recv]

    @torch.no_grad()
    def _gather_row(self) -> None:
        """Fill this rank's owned chunks (``self._row``) from its shards and the others' (one all_to_all)."""
        flats = [local_flat(p) for p in self.params]
        row = self._row_t
        for (i, lo, hi), at in self._own:
            row[at:at + hi - lo].copy_(flats[i][lo:hi])
        if not self._exchange:
            return
        device = _comm_device(self.group)
        parts = [flats[i][lo:hi].to(device, self._wire) for dest in self._send for i, lo, hi in dest]
        send = torch.cat(parts) if parts else torch.zeros(0, dtype=self._wire, device=device)
        recv = torch.empty(sum(self._recv_sizes), dtype=self._wire, device=device)
        _wait(dist.all_to_all_single(recv, send, self._recv_sizes, self._send_sizes, group=self.group,
                                     async_op=True), "exchanging the snapshot's shards")
        recv = recv.cpu()
        at = 0
        for src in self._recv:
            for p, n in src:
                row[p:p + n].copy_(recv[at:at + n])
                at += n

    def snapshot(self, archive: Any, step: int, time: float, epoch: float | None,
                 metrics: dict[str, float], trace: Any) -> None:
        """Every rank, at a scheduled step: replicated runs — nothing here on ranks > 0 (rank 0 records
        through the single-process path); sharded runs — exchange, write owned chunks, barrier, rank 0 commits."""
        if not self.sharded:
            return
        self._gather_row()
        error: Exception | None = None
        try:
            archive.write_chunks(self._row, self.owned)
        except Exception as e:  # reported to every rank through the barrier, then raised
            error = e
        finite = all(dtypes.all_finite(self._row[a:a + n], self._dtype) for a, n in self._valid)
        flags = torch.tensor([0.0 if finite else 1.0, 0.0 if error is None else 1.0], device=_comm_device(self.group))
        _wait(dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group, async_op=True),
              f"{archive.path}: snapshot barrier at step {step}")
        if flags[1].item() > 0:
            why = f" ({type(error).__name__}: {error})" if error is not None else ""
            raise DistributedError(f"{archive.path}: a rank failed to write its chunks of the snapshot at step "
                                   f"{step}{why}; the snapshot is not committed, earlier ones are intact")
        if self.rank == 0 and trace is not None:
            archive.add_trace(trace.steps, trace.resolve())
        archive.commit_row(step, time, epoch, metrics, finite=flags[0].item() == 0)


def open_archive(coord: DistributedRecording | None, make: Any) -> Any:
    """The archive of this rank: ``make()`` (an :class:`ArchiveWriter`) on rank 0 or in a single process,
    a :class:`RankArchive` elsewhere; rank 0's geometry (or its error) is shared with every rank."""
    if coord is None:
        return make()
    if coord.rank != 0:
        return coord.share_archive(None)
    try:
        writer = make()
    except BaseException as e:
        coord.share_archive(None, e)
        raise
    coord.share_archive(writer)
    return writer


@torch.no_grad()
def load_parameters(params: list[torch.Tensor], layout: list[dict[str, Any]], row: np.ndarray) -> None:
    """Copy the flat vector ``row`` ``[N]`` into ``params`` (layout order); a DTensor gets its local shard."""
    for p, e in zip(params, layout, strict=True):
        full = row[e["offset"]:e["offset"] + e["size"]]
        a, b = local_interval(p, e["name"]) if _is_dtensor(p) else (0, e["size"])
        target = p.to_local() if _is_dtensor(p) else p
        src = torch.from_numpy(full[a:b].copy()).reshape(target.shape)
        target.copy_(src.to(target.dtype))
