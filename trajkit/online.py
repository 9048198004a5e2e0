"""Online two-time observables: measure C, Δ, Q and D4 during training instead of storing dense snapshots.

For models too large to snapshot densely (the DEEP-GLASS protocol), the Recorder keeps the parameter
vector ``a = w(tw)`` of each waiting time and, at every step ``tw + t`` of a grid of lags, computes over
the selected parameters, in float64,

    Σ a·b,  Σ (b−a)²,  Σ (b−a)⁴,  Σ Θ(ε − |b−a|),  Σ a²,  Σ b²        with b = w(tw + t)

(per layer too with ``per_layer=True``), without storing ``b``. The sums go to the archive's ``online/``
arrays (docs/FORMAT.md, "Online two-time observables"); the ``overlaps`` and ``aging`` analyses read them
as they read pair sums of full snapshots, with the same result keys.

>>> import torch, trajkit
>>> from trajkit.online import TwoTime, log_lags
>>> online = TwoTime(waiting_times=[10, 100, 1000], lags=log_lags(5000, 30), epsilon_factor=10)
>>> with trajkit.Recorder("run.trajkit", model, schedule=trajkit.schedules.log(1, 6000, 20),
...                       online=online) as rec:                                          # doctest: +SKIP
...     for k in range(6001):
...         rec.step(k, loss=train_one_step(model))
>>> trajkit.analyze("overlaps", "run.trajkit")                                           # doctest: +SKIP

Where the reference vectors live (``reference``): ``"device"`` keeps them next to the parameters (on the
GPU for a CUDA model: no host traffic), ``"host"`` in pinned host memory (each measurement streams them
back to the device in chunks), ``"auto"`` (default) on the device when all the references alive at the
same time fit in half the device's free memory, else on the host. A CPU model's device *is* the host. The
choice is recorded in the metadata ``/online/reference``.

Cost: one host synchronisation per measured step (the sums are copied to the host to be written) and one
at each waiting time when ε is ``std(w(tw))/F``; none on other steps.

Distributed training: with replicated parameters (DDP) rank 0 measures alone. With sharded parameters
(FSDP2 / DTensor) every rank sums over its own shards and the partial sums ``[m, 6, L]`` are all-reduced
across the ranks once per measured step (plus one all-reduce of three moments at each waiting time whose
ε is ``std(w(tw))/F``); rank 0 writes ``online/``. ``reduce`` is then applied to the reduced device
tensor before it is copied to the host (identity by default).

Resuming (``Recorder(..., online=..., resume="allow")``, a Lightning / Hugging Face checkpoint resume, any
world size): the run measures on exactly as if it had not stopped. At its first step k the rows measured
at k or later are dropped and measured again, and each waiting time still measured from k on is taken
back — w(tw) from the archive's snapshot at tw, ε from its committed rows. So **put the waiting times in
the snapshot schedule** (``schedule | schedules.explicit(waiting_times)``) and store the
snapshots in the parameters' own dtype (the default float32 for a float32 model), or the resume stops at
its first step with a one-line error and the archive keeps every row. The ``TwoTime`` must be the
original run's (its ``reference`` may change).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trajkit.errors import TrajkitError

REFERENCES = ("auto", "device", "host")


def log_lags(max_lag: int, n: int, min_lag: int = 1) -> list[int]:
    """About ``n`` log-spaced integer lags from ``min_lag`` to ``max_lag`` (rounded, duplicates dropped)."""
    if not (isinstance(n, int) and n >= 1 and 1 <= min_lag <= max_lag):
        raise TrajkitError(f"log_lags: need n >= 1 and 1 <= min_lag <= max_lag, got n={n!r}, min_lag={min_lag}, "
                           f"max_lag={max_lag}")
    return np.unique(np.rint(np.geomspace(min_lag, max_lag, n)).astype(np.int64)).tolist()


@dataclass(frozen=True)
class TwoTime:
    """What to measure online (see the module docstring).

    Parameters
    ----------
    waiting_times : optimiser steps t_w (each at or before the schedule's last step).
    lags : positive lags t (e.g. :func:`log_lags`); measured at every ``tw + t`` reached by the run. Lag 0
        (``tw`` itself) is always measured too, as the dense ``overlaps`` grid has it.
    select : parameter subset, as ``Archive.select`` (``all``, ``weights``, ``layer:K``, tensor-name globs).
    epsilon : absolute cutoff ε of Θ(ε − |b−a|); when None, ``ε = std(w(tw)) / epsilon_factor`` over the
        selected parameters at each waiting time (the ``overlaps`` default rule).
    epsilon_factor : F of that rule (default 10).
    per_layer : also keep every sum per layer (``online/<sum>_per_layer``).
    reference : ``"auto"``, ``"device"`` or ``"host"``: where the t_w vectors are kept.
    reduce : called once per measured step on the float64 device tensor of sums ``[m, 6, L]`` (already
        summed over the ranks of a sharded run); returns the tensor to write (identity by default).
    """

    waiting_times: Sequence[int]
    lags: Sequence[int]
    select: str = "all"
    epsilon: float | None = None
    epsilon_factor: float = 10.0
    per_layer: bool = False
    reference: str = "auto"
    reduce: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        tws = _ints(self.waiting_times, "waiting_times", minimum=0)
        lags = _ints(self.lags, "lags", minimum=1)
        if self.epsilon is not None and not (float(self.epsilon) > 0):
            raise TrajkitError(f"TwoTime: epsilon={self.epsilon!r} must be > 0 (or None for std(w(tw))/epsilon_factor)")
        if not (float(self.epsilon_factor) > 0):
            raise TrajkitError(f"TwoTime: epsilon_factor={self.epsilon_factor!r} must be > 0")
        if self.reference not in REFERENCES:
            raise TrajkitError(f"TwoTime: reference={self.reference!r} is not one of {', '.join(REFERENCES)}")
        object.__setattr__(self, "waiting_times", tws)
        object.__setattr__(self, "lags", lags)

    def steps(self) -> frozenset[int]:
        """Every step where something is measured or kept: ``tw + t`` for t in ``{0} ∪ lags``."""
        return frozenset(tw + t for tw in self.waiting_times for t in (0, *self.lags))

    def __repr__(self) -> str:
        eps = f"epsilon={self.epsilon}" if self.epsilon is not None else f"epsilon_factor={self.epsilon_factor}"
        return (f"TwoTime(waiting_times={list(self.waiting_times)}, {len(self.lags)} lags "
                f"{self.lags[0]}..{self.lags[-1]}, select={self.select!r}, {eps}, per_layer={self.per_layer})")


def _ints(values: Any, name: str, minimum: int) -> tuple[int, ...]:
    try:
        arr = np.asarray(list(values))
    except TypeError:
        raise TrajkitError(f"TwoTime: {name} must be a list of integer steps, got {values!r}") from None
    if arr.size == 0 or arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise TrajkitError(f"TwoTime: {name} must be a non-empty list of integer steps, got {values!r}")
    if int(arr.min()) < minimum:
        raise TrajkitError(f"TwoTime: {name} must be >= {minimum}, got {int(arr.min())}")
    return tuple(int(v) for v in np.unique(arr))
