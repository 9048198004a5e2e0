"""The training loop of one group of replicas: steps, snapshots, traces and divergence.

Step ``t`` evaluates the loss at ``w(t)`` on its minibatch (the full training set for gd/langevin) and
updates to ``w(t+1)``; ``trace/loss[t]`` is that loss. A snapshot at step ``s`` records ``w(s)`` (``s = 0``
is the initial state) with full-dataset metrics ``train_loss, test_loss`` and, for classification,
``train_acc, test_acc``. Per-step losses stay on the device and reach the host in blocks (at snapshots
and every ``TRACE_BLOCK`` steps), where a non-finite value stops that replica: it is reported as diverged
with the step and the rest continue. A snapshot whose parameters or train loss are not finite stops its
replica the same way (the snapshot is not written).

Where the trajectory goes is a :class:`ReplicaSink` — one object for the group: the runner's records
every replica through one :class:`~trajkit.record.batch.BatchRecorder` and may evaluate the snapshot
metrics on its writer thread. A list of per-replica :class:`Sink` objects (e.g. :class:`NullSink` in the
benchmarks) is accepted too: the metrics are then evaluated on the training thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from trajkit.experiments.dynamics import Dynamics
from trajkit.experiments.randomness import MinibatchStream, NoiseStream, gradient_sample_indices
from trajkit.record.gradient_stats import GradientMoments, noise_strength

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


class ReplicaSink(Protocol):
    """Where a group of replicas' trajectories go; ``run`` numbers the replicas ``0..R-1`` as given to
    :func:`train` (the engine's rows shift when replicas stop)."""

    def trace(self, run: int, steps: np.ndarray, loss: np.ndarray, lr: float) -> None:
        """Per-step losses ``[k]`` of ``run`` at ``steps`` ``[k]``."""

    def snapshot(self, step: int, runs: list[int], engine: Any, data: TrainData, epoch: float) -> None:
        """Record ``w(step)`` of the engine's rows (row i is ``runs[i]``) with its metrics."""

    def diverged(self, run: int, step: int, reason: str) -> None:
        """``run`` stopped at ``step`` (its trace ends there)."""

    def stopped(self) -> dict[int, int]:
        """Runs the sink itself found diverged so far (run → step); the loop stops training them."""


def snapshot_metrics(evaluate: Callable[..., tuple[Tensor, Tensor | None]], data: TrainData
                     ) -> dict[str, np.ndarray]:
    """Full-dataset metrics ``{train_loss, test_loss[, train_acc, test_acc]}``, each float64 ``[R']``, from
    an engine's ``evaluate(loss, x, target, classes)``."""
    tr_loss, tr_acc = evaluate(data.loss, data.X_train, data.T_train, data.C_train)
    te_loss, te_acc = evaluate(data.loss, data.X_test, data.T_test, data.C_test)
    cols = {"train_loss": tr_loss, "test_loss": te_loss, "train_acc": tr_acc, "test_acc": te_acc}
    return {k: v.to("cpu", torch.float64).numpy() for k, v in cols.items() if v is not None}


def train_energy(train_loss: np.ndarray, flat: np.ndarray, weight_decay: float) -> np.ndarray:
    """``train_energy = L + λ/2 |w|²`` per row: ``train_loss`` ``[R']``, parameters ``flat`` ``[R', N]``."""
    w = np.asarray(flat, dtype=np.float64)
    return np.asarray(train_loss, dtype=np.float64) + 0.5 * weight_decay * np.einsum("rn,rn->r", w, w)


def gradient_statistics(engine: Any, data: TrainData, seeds: Sequence[int], step: int, n_batches: int,
                        batch_size: int, lr: float, train_batch: int) -> dict[str, np.ndarray]:
    """``{grad_mean_norm2, grad_var, noise_D}``, each float64 ``[R']``, of the engine's rows (row i has replica
    seed ``seeds[i]``) over K = ``n_batches`` minibatches of b = ``batch_size`` training samples
    (:func:`~trajkit.experiments.randomness.gradient_sample_indices`; :mod:`trajkit.record.gradient_stats`
    for the definitions; B = ``train_batch`` in noise_D)."""
    b = min(batch_size, data.n_train)
    idx = torch.stack([gradient_sample_indices(s, step, data.n_train, n_batches, b) for s in seeds])  # [R', K, b]
    moments = GradientMoments()
    for k in range(n_batches):
        i = idx[:, k].to(data.X_train.device)
        moments.add(engine.gradients(data.loss, data.X_train[i], data.T_train[i]))
    mean_norm2, var = (t.cpu().numpy() for t in moments.result())
    return {"grad_mean_norm2": mean_norm2, "grad_var": var, "noise_D": noise_strength(lr, var, train_batch)}


def snapshot_outcomes(step: int, finite_rows: np.ndarray, metrics: dict[str, np.ndarray]
                      ) -> list[dict[str, float] | str]:
    """Per engine row, its metrics ``{name: float}`` — or, when its parameters (``finite_rows[i]`` False)
    or train loss are not finite, the reason it diverged at ``step``."""
    out: list[dict[str, float] | str] = []
    for i in range(len(finite_rows)):
        row = {k: float(v[i]) for k, v in metrics.items()}
        if finite_rows[i] and np.isfinite(row["train_loss"]):
            out.append(row)
        else:
            what = "parameters" if not finite_rows[i] else "train loss"
            out.append(f"{what} became non-finite at step {step}")
    return out


class PerReplicaSinks:
    """A :class:`ReplicaSink` over one :class:`Sink` per replica; metrics on the training thread."""

    def __init__(self, sinks: Sequence[Sink]):
        self.sinks = list(sinks)
        self._stopped: dict[int, int] = {}

    def trace(self, run: int, steps: np.ndarray, loss: np.ndarray, lr: float) -> None:
        self.sinks[run].trace(steps, loss, lr)

    def snapshot(self, step: int, runs: list[int], engine: Any, data: TrainData, epoch: float) -> None:
        metrics = snapshot_metrics(engine.evaluate, data)
        flat = engine.flat()
        finite_rows = torch.isfinite(flat).all(dim=1).numpy()
        for i, (run, res) in enumerate(zip(runs, snapshot_outcomes(step, finite_rows, metrics), strict=True)):
            if isinstance(res, str):
                self.sinks[run].diverged(step, res)
                self._stopped[run] = step
            else:
                self.sinks[run].snapshot(step, flat[i], epoch, res)

    def diverged(self, run: int, step: int, reason: str) -> None:
        self.sinks[run].diverged(step, reason)

    def stopped(self) -> dict[int, int]:
        return dict(self._stopped)


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
          steps: int, sinks: Sequence[Sink] | ReplicaSink, start_step: int = 0,
          progress: Callable[[int], None] | None = None) -> list[int | None]:
    """Train ``engine``'s replicas from ``start_step`` to ``steps``; returns, per replica, the step at which
    it diverged as far as the loop knows (None if it finished; a sink that evaluates snapshots on its
    writer may find a late divergence after the loop: its own statuses are final).

    ``seeds[i]`` belongs to the engine's replica i, and so does ``sinks[i]`` when ``sinks`` is a list of
    per-replica sinks; ``snapshot_steps`` are the recorded steps (those ``>= start_step`` are written).
    """
    sink: ReplicaSink = PerReplicaSinks(sinks) if isinstance(sinks, Sequence) else sinks
    n_runs = len(seeds)
    device = data.X_train.device
    snaps = {int(s) for s in snapshot_steps if start_step <= s <= steps}
    n_params = int(engine.flat().shape[1]) if dynamics.noisy else 0
    batches = None if dynamics.full_batch else MinibatchStream(seeds, data.n_train, dynamics.batch_size)
    dtype = data.X_train.dtype
    noise = NoiseStream(seeds, n_params, device, dtype) if dynamics.noisy else None
    active = list(range(n_runs))  # engine row -> run
    outcome: list[int | None] = [None] * n_runs
    loss_buf = torch.empty(len(active), TRACE_BLOCK, device=device, dtype=dtype)
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

    def drop_stopped() -> None:
        stopped = sink.stopped()
        rows = [i for i, run in enumerate(active) if run in stopped]
        for i in rows:
            outcome[active[i]] = stopped[active[i]]
        if rows:
            drop(rows)

    def flush(t: int) -> None:
        k = state["k"]
        if k:
            # a copy: the traces keep these rows until the writer drains them, and loss_buf is reused (a float64
            # CPU buffer would otherwise be handed over as a view)
            values = loss_buf[:, :k].to("cpu", torch.float64, copy=True).numpy()
            step_ids = np.arange(state["start"], state["start"] + k, dtype=np.int64)
            bad_rows = []
            for i, run in enumerate(active):
                finite = np.isfinite(values[i])
                if finite.all():
                    sink.trace(run, step_ids, values[i], dynamics.lr)
                    continue
                j = int(np.argmin(finite))
                sink.trace(run, step_ids[:j + 1], values[i, :j + 1], dynamics.lr)
                sink.diverged(run, int(step_ids[j]), f"loss became {values[i, j]} at step {int(step_ids[j])}")
                outcome[run] = int(step_ids[j])
                bad_rows.append(i)
            if bad_rows:
                drop(bad_rows)
        drop_stopped()
        state["k"], state["start"] = 0, t
        if progress is not None and t > state["reported"]:
            progress(t - state["reported"])
            state["reported"] = t

    def snapshot(t: int) -> None:
        flush(t)
        if not active:
            return
        sink.snapshot(t, list(active), engine, data, epoch(t))
        drop_stopped()

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
