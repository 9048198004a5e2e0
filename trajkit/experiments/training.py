"""The training loop of one group of replicas: steps, snapshots, traces and divergence.

Step ``t`` evaluates the loss at ``w(t)`` on its minibatch (the full training set for gd/langevin) and
updates to ``w(t+1)``; ``trace/loss[t]`` is that loss. A snapshot at step ``s`` records ``w(s)`` (``s = 0``
is the initial state) with full-dataset metrics ``train_loss, test_loss`` and, for classification,
``train_acc, test_acc``. Per-step losses stay on the device and reach the host in blocks (at snapshots
and every ``TRACE_BLOCK`` steps), where a non-finite value stops that replica: it is reported as diverged
with the step and the rest continue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from trajkit.experiments.dynamics import Dynamics
from trajkit.experiments.randomness import MinibatchStream, NoiseStream

TRACE_BLOCK = 256


class Sink(Protocol):
    """Where one replica's trajectory goes (an archive writer, or nothing in benchmarks)."""

    def trace(self, steps: np.ndarray, loss: np.ndarray, lr: float) -> None: ...

    def snapshot(self, step: int, flat: Tensor, epoch: float, metrics: dict[str, float]) -> None: ...

    def diverged(self, step: int, reason: str) -> None: ...


class NullSink:
    """A sink that drops the trajectory (the 'training without writing' baseline of the benchmarks)."""

    def trace(self, steps: np.ndarray, loss: np.ndarray, lr: float) -> None:
        pass

    def snapshot(self, step: int, flat: Tensor, epoch: float, metrics: dict[str, float]) -> None:
        pass

    def diverged(self, step: int, reason: str) -> None:
        raise RuntimeError(f"benchmark run diverged: {reason}")


@dataclass
class TrainData:
    """Device tensors of one dataset: inputs ``[P, D]``, loss targets, and class indices (or None)."""

    loss: str
    X_train: Tensor
    T_train: Tensor
    C_train: Tensor | None
    X_test: Tensor
    T_test: Tensor
    C_test: Tensor | None

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])


def train(engine, dynamics: Dynamics, data: TrainData, seeds: Sequence[int], snapshot_steps: np.ndarray,
          steps: int, sinks: Sequence[Sink], start_step: int = 0,
          progress: Callable[[int], None] | None = None) -> list[int | None]:
    """Train ``engine``'s replicas from ``start_step`` to ``steps``; returns, per replica, the step at which
    it diverged (None if it finished).

    ``seeds[i]`` and ``sinks[i]`` belong to the engine's replica i; ``snapshot_steps`` are the recorded
    steps (those ``>= start_step`` are written).
    """
    device = data.X_train.device
    snaps = {int(s) for s in snapshot_steps if start_step <= s <= steps}
    n_params = int(engine.flat().shape[1]) if dynamics.noisy else 0
    batches = None if dynamics.full_batch else MinibatchStream(seeds, data.n_train, dynamics.batch_size)
    noise = NoiseStream(seeds, n_params, device) if dynamics.noisy else None
    active = list(range(len(sinks)))  # engine row -> sink index
    outcome: list[int | None] = [None] * len(sinks)
    loss_buf = torch.empty(len(active), TRACE_BLOCK, device=device)
    state = {"k": 0, "start": start_step, "reported": start_step}

    def epoch(t: int) -> float:
        return batches.epoch_of(t) if batches is not None else float(t)

    def drop(rows_out: list[int]) -> None:
        nonlocal loss_buf
        keep = [i for i in range(len(active)) if i not in rows_out]
        engine.keep(keep)
        if batches is not None:
            batches.keep(keep)
        if noise is not None:
            noise.keep(keep)
        loss_buf = loss_buf[keep].contiguous()
        active[:] = [active[i] for i in keep]

    def flush(t: int) -> None:
        k = state["k"]
        if k:
            values = loss_buf[:, :k].to("cpu", torch.float64).numpy()
            step_ids = np.arange(state["start"], state["start"] + k, dtype=np.int64)
            bad_rows = []
            for i, sink_i in enumerate(active):
                finite = np.isfinite(values[i])
                if finite.all():
                    sinks[sink_i].trace(step_ids, values[i], dynamics.lr)
                    continue
                j = int(np.argmin(finite))
                sinks[sink_i].trace(step_ids[:j + 1], values[i, :j + 1], dynamics.lr)
                sinks[sink_i].diverged(int(step_ids[j]), f"loss became {values[i, j]} at step {int(step_ids[j])}")
                outcome[sink_i] = int(step_ids[j])
                bad_rows.append(i)
            if bad_rows:
                drop(bad_rows)
        state["k"], state["start"] = 0, t
        if progress is not None and t > state["reported"]:
            progress(t - state["reported"])
            state["reported"] = t

    def snapshot(t: int) -> None:
        flush(t)
        if not active:
            return
        tr_loss, tr_acc = engine.evaluate(data.loss, data.X_train, data.T_train, data.C_train)
        te_loss, te_acc = engine.evaluate(data.loss, data.X_test, data.T_test, data.C_test)
        cols = {"train_loss": tr_loss, "test_loss": te_loss, "train_acc": tr_acc, "test_acc": te_acc}
        host = {k: v.to("cpu", torch.float64).numpy() for k, v in cols.items() if v is not None}
        flat = engine.flat()
        finite_rows = torch.isfinite(flat).all(dim=1).numpy()
        bad_rows = []
        for i, sink_i in enumerate(active):
            metrics = {k: float(v[i]) for k, v in host.items()}
            if not (finite_rows[i] and np.isfinite(metrics["train_loss"])):
                what = "parameters" if not finite_rows[i] else "train loss"
                sinks[sink_i].diverged(t, f"{what} became non-finite at step {t}")
                outcome[sink_i] = t
                bad_rows.append(i)
                continue
            sinks[sink_i].snapshot(t, flat[i], epoch(t), metrics)
        if bad_rows:
            drop(bad_rows)

    t = start_step
    while active:
        if t in snaps:
            snapshot(t)
            if not active:
                break
        if t >= steps:
            break
        if batches is None:
            x, target = data.X_train, data.T_train
        else:
            idx = batches.indices(t).to(device)
            x, target = data.X_train[idx], data.T_train[idx]
        xi = noise.draw(t) if noise is not None else None
        loss_buf[:, state["k"]] = engine.train_step(dynamics, data.loss, x, target, xi)
        state["k"] += 1
        t += 1
        if state["k"] == TRACE_BLOCK:
            flush(t)
    flush(t)
    return outcome
