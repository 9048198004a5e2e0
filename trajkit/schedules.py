"""Snapshot schedules: which optimiser steps become snapshots.

A schedule answers ``step in schedule`` in O(1) on the training thread and knows its finite step list
(``schedule.steps(max_step)``). Schedules combine with ``|`` (union) and describe themselves as JSON
(``schedule.spec``) so the archive records how it was sampled; :func:`from_spec` rebuilds one.

>>> from trajkit import schedules
>>> s = schedules.log(1, 1000, 10) | schedules.linear(250)
>>> [k for k in range(1001) if k in s][:6]
[0, 1, 2, 4, 8, 22]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from trajkit.errors import TrajkitError


class Schedule:
    """Base class. Subclasses implement ``__contains__``, ``steps`` and ``spec``."""

    spec: dict[str, Any]

    def __contains__(self, step: int) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def steps(self, max_step: int) -> np.ndarray:
        """Sorted int64 array of the scheduled steps ``<= max_step``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def membership(self) -> Callable[[int], bool]:
        """``step in self`` as a plain callable (the Recorder calls it every step; subclasses may return a
        faster one)."""
        return self.__contains__

    def count(self, max_step: int) -> int:
        """Number of snapshots this schedule takes over steps ``0..max_step``."""
        return int(self.steps(max_step).size)

    def __or__(self, other: Schedule) -> Schedule:
        if not isinstance(other, Schedule):
            return NotImplemented
        parts = [*_parts(self), *_parts(other)]
        return Union(parts)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec.items() if k != "kind")
        return f"{type(self).__name__}({args})"


def _parts(s: Schedule) -> list[Schedule]:
    return list(s.parts) if isinstance(s, Union) else [s]


class Explicit(Schedule):
    """A fixed list of steps."""

    def __init__(self, steps: Iterable[int]):
        arr = np.unique(np.asarray(list(steps), dtype=np.int64))
        if arr.size and arr[0] < 0:
            raise TrajkitError(f"schedules.explicit: steps must be >= 0, got {int(arr[0])}")
        self._steps = arr
        self._set = frozenset(int(s) for s in arr)
        self.spec = {"kind": "explicit", "steps": [int(s) for s in arr]}

    def __contains__(self, step: int) -> bool:
        return step in self._set

    def membership(self) -> Callable[[int], bool]:
        return self._set.__contains__

    def steps(self, max_step: int) -> np.ndarray:
        return self._steps[self._steps <= max_step]


class Log(Explicit):
    """About ``n`` log-spaced steps from ``start`` to ``stop`` (rounded, deduplicated), plus step 0.

    ``steps = unique(round(geomspace(start, stop, n)))``; duplicates at small steps are dropped, so
    fewer than ``n`` may remain — the spec records ``n`` and the list records what was taken.
    """

    def __init__(self, start: int, stop: int, n: int, include_zero: bool = True):
        if not (isinstance(n, int | np.integer) and n >= 1):
            raise TrajkitError(f"schedules.log: n must be a positive integer, got {n!r}")
        if not (0 < start <= stop):
            raise TrajkitError(f"schedules.log: need 0 < start <= stop, got start={start}, stop={stop}")
        pts = np.unique(np.rint(np.geomspace(start, stop, int(n))).astype(np.int64))
        if include_zero:
            pts = np.concatenate([[0], pts])
        super().__init__(pts)
        self.spec = {"kind": "log", "start": int(start), "stop": int(stop), "n": int(n),
                     "include_zero": bool(include_zero)}


class Linear(Schedule):
    """Every ``every`` steps from ``start`` (inclusive) to ``stop`` (inclusive, or unbounded)."""

    def __init__(self, every: int, start: int = 0, stop: int | None = None):
        if not (isinstance(every, int | np.integer) and every >= 1):
            raise TrajkitError(f"schedules.linear: every must be a positive integer, got {every!r}")
        if start < 0 or (stop is not None and stop < start):
            raise TrajkitError(f"schedules.linear: need 0 <= start <= stop, got start={start}, stop={stop}")
        self.every, self.start, self.stop = int(every), int(start), None if stop is None else int(stop)
        self.spec = {"kind": "linear", "every": self.every, "start": self.start, "stop": self.stop}

    def __contains__(self, step: int) -> bool:
        if step < self.start or (self.stop is not None and step > self.stop):
            return False
        return (step - self.start) % self.every == 0

    def steps(self, max_step: int) -> np.ndarray:
        hi = max_step if self.stop is None else min(max_step, self.stop)
        return np.arange(self.start, hi + 1, self.every, dtype=np.int64)


class Union(Schedule):
    """Steps in any of ``parts``."""

    def __init__(self, parts: Iterable[Schedule]):
        self.parts = tuple(parts)
        self.spec = {"kind": "union", "parts": [p.spec for p in self.parts]}

    def __contains__(self, step: int) -> bool:
        return any(step in p for p in self.parts)

    def steps(self, max_step: int) -> np.ndarray:
        return np.unique(np.concatenate([p.steps(max_step) for p in self.parts]))


def log(start: int, stop: int, n: int, include_zero: bool = True) -> Log:
    """About ``n`` log-spaced snapshot steps between ``start`` and ``stop``, plus step 0."""
    return Log(start, stop, n, include_zero)


def linear(every: int, start: int = 0, stop: int | None = None) -> Linear:
    """A snapshot every ``every`` steps from ``start`` to ``stop`` (inclusive; ``None``: forever)."""
    return Linear(every, start, stop)


def explicit(steps: Iterable[int]) -> Explicit:
    """Snapshots exactly at ``steps``."""
    return Explicit(steps)


def from_spec(spec: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from its JSON ``spec`` (as stored in archive metadata)."""
    kind = spec.get("kind")
    if kind == "log":
        return Log(spec["start"], spec["stop"], spec["n"], spec.get("include_zero", True))
    if kind == "linear":
        return Linear(spec["every"], spec.get("start", 0), spec.get("stop"))
    if kind == "explicit":
        return Explicit(spec["steps"])
    if kind == "union":
        return Union(from_spec(p) for p in spec["parts"])
    raise TrajkitError(f"schedule spec: unknown kind {kind!r}; use log, linear, explicit or union")
