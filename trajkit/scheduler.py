"""Where trajkit's tasks run: a Dask cluster named by ``--scheduler`` / ``scheduler=``, or this process.

:func:`connect` turns what the user gave into a :class:`Cluster` (or None for in-process work):

- ``"tcp://host:port"`` (any Dask address: ``tls://``, ``ws://``, ...) — a running ``dask scheduler``;
  one that does not answer within :func:`scheduler_timeout` seconds (``$TRAJKIT_SCHEDULER_TIMEOUT``,
  default 10) is a one-line :class:`~trajkit.errors.ClusterError` naming it;
- ``"local:N"`` — a ``distributed.LocalCluster`` of N worker processes with one thread each, started
  here and closed when the work is done (N ≥ 1);
- a ``distributed.Client`` — used as it is (never closed by trajkit);
- ``None`` — the active client (``distributed.default_client()``) when this process has made one, as
  ``dask.compute`` does; otherwise in-process. ``"in-process"`` forces in-process work.

Before any task is sent every worker is asked which trajkit it imports; a worker that cannot import it
or has another version is named in one line (:func:`check_workers`). The dashboard link (or, without
bokeh, the scheduler's address) is printed once per scheduler on stderr. distributed is optional
(``pip install 'trajkit[dask]'``); it is imported only here, and only when a cluster is asked for.

Importable from every layer (it imports only :mod:`trajkit.errors` and :mod:`trajkit.version`): the
analysis core and ``trajkit record`` share it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from trajkit.errors import ClusterError
from trajkit.validation import env_seconds

__all__ = ["Cluster", "check_workers", "connect", "scheduler_timeout"]

TIMEOUT_ENV = "TRAJKIT_SCHEDULER_TIMEOUT"
DEFAULT_TIMEOUT = 10.0
IN_PROCESS = "in-process"
_INSTALL = "pip install 'trajkit[dask]'"
#: evaluated by the builtin ``eval`` on each worker: a builtin unpickles on a worker without trajkit
_VERSION_PROBE = "__import__('trajkit.version').version.__version__"
_announced: set[str] = set()


def scheduler_timeout() -> float:
    """Seconds to wait for a scheduler (and its first worker): ``$TRAJKIT_SCHEDULER_TIMEOUT`` or 10."""
    return env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT, ClusterError)


class Cluster:
    """A connected ``distributed.Client`` and what trajkit started for it (closed by :meth:`close`)."""

    def __init__(self, client: Any, address: str, owned: tuple[Any, ...] = ()):
        self.client = client
        self.address = address
        self._owned = owned

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def close(self) -> None:
        """Close the client and the local cluster when trajkit made them; a user's client stays open."""
        for thing in self._owned:
            thing.close()

    def __repr__(self) -> str:
        return f"Cluster({self.address!r}, workers={self.n_workers})"


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ClusterError(f"a Dask scheduler needs dask.distributed, which is not installed; {_INSTALL}") from None
    return distributed


def _active_client() -> Any:
    """The process's default Client when distributed is imported and one exists, else None."""
    if "distributed" not in sys.modules:
        return None
    try:
        return sys.modules["distributed"].default_client()
    except ValueError:
        return None


def _local(spec: str) -> Cluster:
    text = spec.removeprefix("local:")
    n = int(text) if text.isdigit() else -1
    if n < 1:
        raise ClusterError(f"scheduler {spec!r}: a local cluster needs at least one worker; give local:N with "
                           "N >= 1 (e.g. local:2)")
    distributed = _distributed()
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", host="127.0.0.1", silence_logs=logging.ERROR)
    client = distributed.Client(cluster, set_as_default=False)
    return Cluster(client, spec, (client, cluster))


def _remote(address: str, timeout: float) -> Cluster:
    distributed = _distributed()
    try:
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"scheduler {address} did not answer within {timeout:g} s ({type(e).__name__}); "
                           "check the address, start one with `dask scheduler`, or use local:N") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError):
        client.close()
        raise ClusterError(f"scheduler {address} has no workers (none joined within {timeout:g} s); start some "
                           f"with `dask worker {address}`") from None
    return Cluster(client, address, (client,))


def _open(scheduler: Any, timeout: float) -> Cluster | None:
    if scheduler is None:
        client = _active_client()
        return None if client is None else Cluster(client, str(client.scheduler.address))
    if isinstance(scheduler, str):
        if scheduler == IN_PROCESS:
            return None
        if scheduler.startswith("local:"):
            return _local(scheduler)
        if "://" in scheduler:
            return _remote(scheduler, timeout)
        raise ClusterError(f"scheduler {scheduler!r}: give tcp://HOST:PORT of a running Dask scheduler, local:N "
                           f"for N local worker processes, or {IN_PROCESS}")
    distributed = _distributed()
    if isinstance(scheduler, distributed.Client):
        return Cluster(scheduler, str(scheduler.scheduler.address))
    raise ClusterError(f"scheduler={type(scheduler).__name__}: give an address string, local:N or a "
                       "distributed.Client")


def check_workers(cluster: Cluster) -> None:
    """A :class:`ClusterError` naming the first worker that cannot import trajkit or runs another version."""
    from trajkit.version import __version__

    found = cluster.client.run(eval, _VERSION_PROBE, on_error="return")
    for worker in sorted(found):
        got = found[worker]
        if isinstance(got, BaseException):
            raise ClusterError(f"worker {worker} of scheduler {cluster.address} cannot import trajkit "
                               f"({type(got).__name__}: {got}); install trajkit {__version__} on every worker")
        if got != __version__:
            raise ClusterError(f"worker {worker} of scheduler {cluster.address} runs trajkit {got}, this process "
                               f"trajkit {__version__}; install the same version on every worker")


def _announce(cluster: Cluster) -> None:
    """The dashboard link (or the address without a dashboard) on stderr, once per scheduler."""
    key = str(cluster.client.scheduler.address)        # local:N and its Client are one scheduler
    if key in _announced:
        return
    _announced.add(key)
    services = cluster.client.scheduler_info().get("services", {})
    if "dashboard" in services:
        print(f"trajkit: dask dashboard {cluster.client.dashboard_link} ({cluster.n_workers} workers)",
              file=sys.stderr)
    else:
        print(f"trajkit: dask scheduler {cluster.address} ({cluster.n_workers} workers; no dashboard: "
              "pip install bokeh for one)", file=sys.stderr)


@contextmanager
def connect(scheduler: Any, timeout: float | None = None) -> Iterator[Cluster | None]:
    """The :class:`Cluster` for ``scheduler`` (see the module docstring), its workers checked, closed on exit
    when trajkit started it; None for in-process work."""
    cluster = _open(scheduler, scheduler_timeout() if timeout is None else timeout)
    if cluster is None:
        yield None
        return
    try:
        check_workers(cluster)
        _announce(cluster)
        yield cluster
    finally:
        cluster.close()
