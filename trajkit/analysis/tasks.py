"""Dask execution of analyses: per-archive and per-block tasks that read their own data on the workers.

An analysis run with ``scheduler=`` (``trajkit analyze --scheduler``) gets a :class:`Executor` as
``ctx.executor``. Two things use it, and nothing else changes in a plugin:

- ``ctx.kernels.pair_sums`` / ``ctx.kernels.gram`` send one task per column block of
  :func:`trajkit.analysis.kernels.plan_blocks` (:func:`~trajkit.analysis.kernels.pair_sums_block`,
  :func:`~trajkit.analysis.kernels.gram_block`) and add the float64 partials here in block order — the
  same blocks, the same per-block arithmetic and the same order of additions as in-process, so the sums
  are the same numbers;
- ``ctx.map(fn, *iterables, **kwargs)`` runs ``fn`` once per item (one task per archive, per block, ...)
  and returns the results in item order; in-process it is a plain loop. The built-in dynamics plugins run
  each replica's two-time pass as one task this way.

What crosses the network: an :class:`~trajkit.archive.Archive` argument travels as its path and is
reopened on the worker (read-only, no validation: the client already validated it; a local path made
absolute, so it must name the same file on every worker — a shared file system); other arguments
(pairs, block descriptions, selections, cutoffs) are pickled into each task — never scattered, so a
task can be rerun from the scheduler alone after its worker died. Results come back as they are
(float64 sums, small arrays). No parameter array is read by the client. ``Executor.tasks`` /
``bytes_to_workers`` / ``bytes_from_workers`` count what was sent and received, and end up in
``result.provenance["scheduler"]``.

A worker that cannot read an archive raises one :class:`~trajkit.errors.ClusterError` line naming the
archive and the worker. A worker that dies (killed, out of memory) is handled by Dask: its tasks are
run again on another worker (up to ``distributed.scheduler.allowed-failures`` times), and since every
task is a pure function of its arguments the result is the same.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable
from typing import Any

from trajkit.archive import Archive, open_archive
from trajkit.errors import ClusterError, TrajkitError
from trajkit.scheduler import Cluster


class ArchiveRef:
    """An archive sent to a worker: its path (or URL, with its fsspec ``storage_options``), reopened there by
    :meth:`open`."""

    __slots__ = ("path", "storage_options")

    def __init__(self, path: str, storage_options: dict[str, Any] | None = None):
        self.path = path
        self.storage_options = storage_options

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArchiveRef, (self.path, self.storage_options))

    def open(self) -> Archive:
        try:
            return open_archive(self.path, validate=False, storage_options=self.storage_options)
        except (TrajkitError, OSError) as e:
            raise ClusterError(f"worker {_worker_name()} cannot read archive {self.path}: {_line(e)}") from None

    def __repr__(self) -> str:
        return f"ArchiveRef({self.path!r})"


def _line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split()) if not isinstance(e, TrajkitError) else " ".join(
        str(e).split())


def _worker_name() -> str:
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:
        return f"pid {os.getpid()}"


def _to_refs(value: Any) -> Any:
    if isinstance(value, Archive):
        path = str(value.path)
        return ArchiveRef(path if "://" in path else os.path.abspath(path), getattr(value, "storage_options", None))
    if isinstance(value, list | tuple):
        return type(value)(_to_refs(v) for v in value)
    return value


def _from_refs(value: Any) -> Any:
    if isinstance(value, ArchiveRef):
        return value.open()
    if isinstance(value, list | tuple):
        return type(value)(_from_refs(v) for v in value)
    return value


def _refs_in(value: Any) -> list[str]:
    if isinstance(value, ArchiveRef):
        return [value.path]
    if isinstance(value, list | tuple):
        return [p for v in value for p in _refs_in(v)]
    return []


def run_task(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """On a worker: reopen the archives among the arguments and call ``fn``; a read failure (file gone,
    unmounted, permission) becomes one line naming the archive and the worker."""
    opened = _from_refs(args)
    kw = {k: _from_refs(v) for k, v in kwargs.items()}
    try:
        return fn(*opened, **kw)
    except OSError as e:
        paths = _refs_in(args) + [p for v in kwargs.values() for p in _refs_in(v)]
        where = ", ".join(paths) if paths else "its input"
        raise ClusterError(f"worker {_worker_name()} cannot read archive {where}: {_line(e)}") from None


class Executor:
    """Runs tasks on a :class:`~trajkit.scheduler.Cluster`; results in item order (see the module docstring)."""

    def __init__(self, cluster: Cluster, progress: bool = False):
        self.cluster = cluster
        self.progress = progress
        self.tasks = 0
        self.bytes_to_workers = 0
        self.bytes_from_workers = 0

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], desc: str | None = None,
            **kwargs: Any) -> list[Any]:
        """``[fn(*items, **kwargs) for items in zip(*iterables)]``, each call a task on the cluster."""
        from dask.sizeof import sizeof

        client = self.cluster.client
        items = [_to_refs(tuple(args)) for args in zip(*iterables, strict=True)]
        if not items:
            return []
        shared = {k: _to_refs(v) for k, v in kwargs.items()}
        self.bytes_to_workers += len(pickle.dumps(shared)) + sum(len(pickle.dumps(a)) for a in items)
        futures = [client.submit(run_task, fn, args, shared, pure=False) for args in items]
        self.tasks += len(futures)
        try:
            if self.progress and len(futures) > 1:
                from distributed import as_completed
                from tqdm.auto import tqdm

                bar = tqdm(as_completed(futures, loop=client.loop), total=len(futures), unit="task", leave=False,
                           desc=desc or getattr(fn, "__name__", "tasks"))
                for _ in bar:
                    pass
            results = client.gather(futures)
        except BaseException:
            client.cancel(futures)
            raise
        self.bytes_from_workers += sum(int(sizeof(r)) for r in results)
        return results

    def summary(self) -> dict[str, Any]:
        """What ran where: scheduler address, workers, tasks, bytes sent to / received from the workers."""
        return {"address": self.cluster.address, "workers": self.cluster.n_workers, "tasks": self.tasks,
                "bytes_to_workers": self.bytes_to_workers, "bytes_from_workers": self.bytes_from_workers}

    def __repr__(self) -> str:
        return f"Executor({self.cluster.address!r}, tasks={self.tasks})"
