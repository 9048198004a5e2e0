"""Rank programs for tests/test_record_distributed.py: real gloo process groups on 127.0.0.1.

Each rank trains a small MLP (replicated with DDP, or sharded with FSDP2 ``fully_shard``), records it with
``trajkit.Recorder`` and, on rank 0, saves what a single process would need to write the same archive:
the gathered parameter vector and the logged loss of every step (``reference.pt`` in the output folder).
"""

from __future__ import annotations

import datetime
import gc
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import trajkit
from trajkit.record import distributed as tdist

N_IN, N_HID, N_OUT = 6, 9, 4
#: a params chunk of 16 columns: the 103-parameter model's row spans 7 chunks, some split between ranks
SMALL_CHUNK_BYTES = 64


def build_model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(N_IN, N_HID), torch.nn.Tanh(), torch.nn.Linear(N_HID, N_OUT))


def n_params() -> int:
    return sum(p.numel() for p in build_model().parameters())


def precreate_small_chunks(path: Path, dtype: str = "float32") -> None:
    """An empty archive whose params rows are split into 64-byte chunks (16 float32 columns; resumed by the
    Recorder)."""
    from trajkit.archive.layout import layout_from_named_parameters

    layout = layout_from_named_parameters(list(build_model().named_parameters()))
    trajkit.archive.create(path, n_params(), layout=layout, chunk_bytes=SMALL_CHUNK_BYTES, dtype=dtype).close()


def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(8, N_IN, generator=g), torch.randn(8, N_OUT, generator=g)


def gathered(model: torch.nn.Module) -> torch.Tensor:
    """The full parameter vector (a collective for FSDP2 parameters)."""
    parts = [p.full_tensor() if tdist._is_dtensor(p) else p.detach() for p in model.parameters()]
    return torch.cat([t.detach().reshape(-1) for t in parts]).clone()


def train(model, recorders, rank: int, start: int, stop: int, kill_at: int | None = None, sync=()) -> dict:
    """SGD steps ``start..stop-1`` (recording w(start) .. w(stop-1)); returns rank 0's reference record.

    ``sync``: plain (replicated) parameters whose gradients are averaged over the ranks, as DDP would."""
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    ref = {"steps": [], "params": [], "loss": []}
    loss = torch.tensor(float("nan"))
    for k in range(start, stop):
        if kill_at is not None and k == kill_at:
            _arm_kill(rank)
        vec = gathered(model)
        for rec in recorders:
            rec.step(k, loss=loss.detach(), epoch=k / 10)
        ref["steps"].append(k)
        ref["params"].append(vec)
        ref["loss"].append(float(loss.detach()))
        x, y = (t.to(vec.dtype) for t in batch(k, rank))
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        for p in sync:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
        opt.step()
    return ref


def _arm_kill(rank: int) -> None:
    """Rank 1 dies by SIGKILL right after writing its chunks of the next snapshot, before the barrier."""
    if rank != 1:
        return
    original = tdist.RankArchive.write_chunks

    def write_then_die(self, row, chunks):
        original(self, row, chunks)
        os.kill(os.getpid(), signal.SIGKILL)

    tdist.RankArchive.write_chunks = write_then_die


def shard(model: torch.nn.Module) -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    for m in model:
        if isinstance(m, torch.nn.Linear):
            fully_shard(m)
    fully_shard(model)
    return model


# -- scenarios -------------------------------------------------------------------------------------------


def scenario_record(rank: int, world: int, out: Path) -> dict:
    """Disagreeing ranks, then a DDP run, then an FSDP2 run recorded twice (default and 16-column chunks)."""
    result: dict = {"errors": {}}
    sched = trajkit.schedules.explicit([0, 1, 2, 4, 7])
    for what, kwargs, model in (
            ("schedule", {"schedule": trajkit.schedules.linear(every=1 + rank)}, build_model()),
            ("layout", {"schedule": sched}, torch.nn.Linear(3 + rank, 2))):
        try:
            trajkit.Recorder(out / f"bad_{what}.trajkit", model, **kwargs)
        except trajkit.TrajkitError as e:
            result["errors"][what] = (type(e).__name__, str(e))
    sums = torch.tensor([rank + 1.0, 10.0 * (rank + 1)])
    result["sums"] = tdist.all_reduce_sums(sums, dist.group.WORLD).tolist()
    ddp = torch.nn.parallel.DistributedDataParallel(build_model())
    with trajkit.Recorder(out / "ddp.trajkit", ddp, schedule=sched) as rec:
        result["ddp"] = train(ddp, [rec], rank, 0, 9)
        result["ddp_mode"] = (rec._dist.sharded, rec._dist.writes_whole_rows, type(rec._archive).__name__)
    from trajkit.online import TwoTime

    try:   # an online resume of an archive recorded without: only rank 0 tracks (replicated), all must hear
        trajkit.Recorder(out / "ddp.trajkit", ddp, schedule=sched, online=TwoTime(waiting_times=[1], lags=[1]),
                         resume="must")
    except trajkit.TrajkitError as e:
        result["errors"]["online_resume"] = (type(e).__name__, str(e))
    if rank == 0:
        precreate_small_chunks(out / "fsdp_small.trajkit")
    model = shard(build_model())
    with trajkit.Recorder(out / "fsdp.trajkit", model, schedule=sched) as a, \
            trajkit.Recorder(out / "fsdp_small.trajkit", model, schedule=sched, resume="allow") as b, \
            trajkit.Recorder(out / "fsdp_online.trajkit", model, schedule=sched, online=TwoTime(**ONLINE_R)) as c:
        result["fsdp"] = train(model, [a, b, c], rank, 0, 9)
        result["owned"] = b._dist.owned
    result["write_failure"] = _failing_write(model, rank, out / "fsdp_fail.trajkit")
    return result


def _failing_write(model: torch.nn.Module, rank: int, path: Path) -> tuple[str, str] | None:
    """Rank 1's chunk write of the snapshot at step 2 raises OSError; every rank must hear of it."""
    original = tdist.RankArchive.write_chunks

    def failing(self, row, chunks):
        if self.committed == 2:
            raise OSError(28, "No space left on device (injected)")
        original(self, row, chunks)

    tdist.RankArchive.write_chunks = failing
    try:
        with trajkit.Recorder(path, model, schedule=trajkit.schedules.linear(every=1)) as rec:
            train(model, [rec], rank, 0, 5)
    except trajkit.TrajkitError as e:
        return type(e).__name__, str(e)
    finally:
        tdist.RankArchive.write_chunks = original
    return None


#: the online sums of scenario_record's FSDP2 run, resumed by scenario_resume (waiting times 1 and 4 are
#: snapshot steps, so a resumed run reads w(tw) back; both are still measured at the resume step 7)
ONLINE_R = dict(waiting_times=[1, 4], lags=[1, 2, 3, 5, 8], epsilon=0.05, per_layer=True)


def scenario_resume(rank: int, world: int, out: Path) -> dict:
    """Continue the 2-rank FSDP2 archives (the small-chunk one and the online one) with ``world`` ranks
    from their last snapshot to step 14."""
    from trajkit.online import TwoTime

    model = shard(build_model())
    sched = trajkit.schedules.explicit([0, 1, 2, 4, 7, 9, 12])
    with trajkit.Recorder(out / "fsdp_small.trajkit", model, schedule=sched, resume="must") as rec, \
            trajkit.Recorder(out / "fsdp_online.trajkit", model, schedule=sched, online=TwoTime(**ONLINE_R),
                             resume="must") as online:
        start = rec.restore()
        return {"start": start, "online_start": online.last_step, "fsdp": train(model, [rec, online], rank, start, 15),
                "owned": rec._dist.owned}


def scenario_kill(rank: int, world: int, out: Path) -> dict:
    """An FSDP2 run snapshotting every step; rank 1 is SIGKILLed inside the snapshot at step 5."""
    model = shard(build_model())
    try:
        with trajkit.Recorder(out / "killed.trajkit", model, schedule=trajkit.schedules.linear(every=1)) as rec:
            train(model, [rec], rank, 0, 9, kill_at=5)
    except trajkit.TrajkitError as e:
        return {"error": (type(e).__name__, str(e))}
    return {"error": None}


#: online specs of scenario_storage_online: the std(w)/F cutoff with per-layer sums; a fixed ε on a subset
ONLINE_A = dict(waiting_times=[0, 2, 5], lags=[1, 2, 3, 5], per_layer=True)
ONLINE_B = dict(waiting_times=[1, 4], lags=[1, 3, 6], select="2.*", epsilon=0.02)
STORAGE_SCHED = [0, 1, 2, 4, 7, 10]
#: (archive name, storage dtype, model dtype, 64-byte chunks) of scenario_storage_online
STORAGE_RUNS = (("bf16_small", "bfloat16", torch.float32, True), ("f16_small", "float16", torch.float32, True),
                ("bf16", "bfloat16", torch.float32, False), ("f64_small", "float64", torch.float64, True))


def scenario_storage_online(rank: int, world: int, out: Path) -> dict:
    """FSDP2 runs recording online sums (sparse snapshots, beside a dense float32 archive of the same run) and
    snapshots in the storage dtypes (64-byte chunks split between the ranks, and the default one chunk)."""
    from trajkit.online import TwoTime

    result: dict = {}
    sparse = trajkit.schedules.explicit([0, 10])
    sched = trajkit.schedules.explicit(STORAGE_SCHED)
    if rank == 0:
        for name, dtype, _, small in STORAGE_RUNS:
            if small:
                precreate_small_chunks(out / f"{name}.trajkit", dtype)
    model = shard(build_model())
    recs = [trajkit.Recorder(out / "online_a.trajkit", model, schedule=sparse, online=TwoTime(**ONLINE_A)),
            trajkit.Recorder(out / "online_b.trajkit", model, schedule=sparse, online=TwoTime(**ONLINE_B)),
            trajkit.Recorder(out / "dense.trajkit", model, schedule=trajkit.schedules.linear(every=1))]
    for name, dtype, mdtype, small in STORAGE_RUNS:
        if mdtype == torch.float32:
            recs.append(trajkit.Recorder(out / f"{name}.trajkit", model, schedule=sched, dtype=dtype,
                                         resume="allow" if small else "never"))
    result["float32"] = train(model, recs, rank, 0, 11)
    result["owned"] = {str(r.path.name): r._dist.owned for r in recs}
    for r in recs:
        r.close()
    # online ranks that disagree fail together before anything is written
    try:
        trajkit.Recorder(out / "bad_online.trajkit", shard(build_model()), schedule=sparse,
                         online=TwoTime(**{**ONLINE_A, "lags": [1, 2 + rank]}))
    except trajkit.TrajkitError as e:
        result["bad_online"] = (type(e).__name__, str(e))
    # FSDP2 leaving the second Linear's tensors plain (replicated on both ranks, gradients averaged)
    model = build_model()
    from torch.distributed.fsdp import fully_shard

    plain = list(model[2].parameters())
    fully_shard(model[0])
    fully_shard(model, ignored_params=set(plain))
    with trajkit.Recorder(out / "online_mixed.trajkit", model, schedule=sparse, online=TwoTime(**ONLINE_A)) as rec:
        result["mixed"] = train(model, [rec], rank, 0, 11, sync=plain)
        result["mixed_kinds"] = [type(p).__name__ for p in model.parameters()]
    model = shard(build_model().to(torch.float64))
    with trajkit.Recorder(out / "f64_small.trajkit", model, schedule=sched, dtype="float64", resume="allow") as rec:
        result["float64"] = train(model, [rec], rank, 0, 11)
        result["owned"]["f64_small.trajkit"] = rec._dist.owned
    return result


SCENARIOS = {"record": scenario_record, "resume": scenario_resume, "kill": scenario_kill,
             "storage_online": scenario_storage_online}


def _rank_main(rank: int, world: int, port: int, scenario: str, out: str) -> None:
    out_dir = Path(out)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=60))
        torch.set_num_threads(1)
        result = SCENARIOS[scenario](rank, world, out_dir)
    except BaseException:
        result = {"crash": traceback.format_exc()}
    torch.save(result, out_dir / f"rank{rank}.pt")
    del result
    # Modules in reference cycles (DDP's hooks, FSDP2's states) hold the process group until a collection:
    # release it now, while the interpreter is whole. Gloo's worker threads letting go of their last work
    # during interpreter finalization abort the process ("terminate called without an active exception",
    # SIGABRT; pytorch/pytorch#179291) — seen once in CI on rank 1, after its result was saved.
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()
    # The rank's work is saved and its archives closed; skip the interpreter's teardown, the racy part.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario: str, world: int, out: Path, timeout: float = 120.0) -> tuple[list[int | None], list[dict]]:
    """Run ``scenario`` on ``world`` spawned ranks; kill them all past ``timeout`` seconds.

    Returns each rank's exit code (``-9`` for SIGKILL, None if killed at the deadline) and result (or {})."""
    ctx = mp.start_processes(_rank_main, args=(world, free_port(), scenario, str(out)), nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while any(p.is_alive() for p in ctx.processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    codes: list[int | None] = []
    for p in ctx.processes:
        if p.is_alive():
            p.kill()
            p.join()
            codes.append(None)
        else:
            codes.append(p.exitcode)
    results = [torch.load(out / f"rank{r}.pt", weights_only=False) if (out / f"rank{r}.pt").exists() else {}
               for r in range(world)]
    return codes, results
