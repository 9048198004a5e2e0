"""``trajkit record --scheduler``: each sweep point (its batched replicas) as one task on a Dask worker.

The client plans and checks the whole sweep as locally, writes ``ensemble.json`` and keeps it current:
one task per sweep point that still has pending or failed runs, each calling the same ``train_point``
as the local loop on a worker, which writes that point's archives under ``--out`` — a directory every
worker can reach (a shared file system; archives are written to local paths, never to a URL). When a
task returns, the client records its runs' entries (status, run id) and saves ``ensemble.json``.

So resuming is the local resume: finished runs are skipped by the client, a partial run is resumed by the
worker from its archive (the last snapshot its trace covers), and a worker that dies mid-point leaves the
same state as a killed local sweep — Dask runs the task again on another worker, which resumes it. A run
is written bit for bit as by a local sweep of the same config when torch uses the same number of CPU
threads (``--threads``; a Dask worker process otherwise starts with the thread count its nanny sets).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trajkit.archive.storage import is_url
from trajkit.experiments.ensemble import save_ensemble
from trajkit.scheduler import Cluster

#: run statuses whose archives are published by ``--out URL`` (FORMAT.md §11)
FINISHED = ("done", "diverged")


def point_task(train: Callable[..., None], point: Any, out: str, todo: list[int], doc: dict[str, Any],
               device: str, threads: int | None, storage_options: dict[str, Any] | None = None
               ) -> list[dict[str, Any]]:
    """On a worker: ``train(point, out, todo, doc, device)`` with ``threads`` torch threads; returns the
    ensemble.json entries of the runs ``todo`` (updated by ``train``). ``out`` a URL: trained in a local
    temporary directory and pushed there (:func:`publish_point`, with ``storage_options``)."""
    if is_url(out):
        return publish_point(train, point, out, todo, doc, device, threads, storage_options)
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        train(point, Path(out), todo, doc, device)
    finally:
        torch.set_num_threads(old)
    return [doc["runs"][point.index * point.replicas + r] for r in todo]


def publish_point(train: Any, point: Any, url: str, todo: list[int], doc: dict[str, Any], device: str,
                  threads: int | None, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train the runs ``todo`` of ``point`` into a local temporary directory and push the finished ones to
    ``url/<name>`` (``storage_options``: the fsspec options of the URL); returns their ensemble.json entries
    (as :func:`point_task`)."""
    from trajkit.archive.push import push

    with tempfile.TemporaryDirectory(prefix="trajkit-point-") as tmp:
        entries = point_task(train, point, tmp, todo, doc, device, threads)
        for r, entry in zip(todo, entries, strict=True):
            local = Path(tmp) / point.names[r]
            if entry["status"] in FINISHED and local.is_dir():
                push(local, f"{url}/{point.names[r]}", storage_options)
    return entries


def execute_on_cluster(plan: Any, doc: dict[str, Any], quiet: bool, cluster: Cluster,
                       train: Callable[..., None], threads: int | None, out: str | None = None,
                       after: Callable[[], None] | None = None,
                       storage_options: dict[str, Any] | None = None) -> None:
    """Run every sweep point of ``plan`` with runs still to do as one :func:`point_task` on ``cluster``,
    writing under ``out`` (default ``plan.out``; a URL: see :mod:`trajkit.experiments.url_out`) and calling
    ``after()`` when a point's entries are saved; ``storage_options`` go with each task to its push."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    out = out or str(plan.out.resolve())
    futures = {}
    for p in plan.points:
        entries = doc["runs"][p.index * p.replicas:(p.index + 1) * p.replicas]
        todo = [r for r, e in enumerate(entries) if e["status"] in ("pending", "failed")]
        if todo:
            fut = cluster.client.submit(point_task, train, p, out, todo, doc, plan.device, threads, storage_options,
                                        pure=False)
            futures[fut] = (p, todo)
    with tqdm(total=len(plan.points), unit="point", disable=quiet, desc=f"trajkit record on {cluster.address}",
              initial=len(plan.points) - len(futures), leave=True) as bar:
        try:
            for fut in as_completed(list(futures), loop=cluster.client.loop):
                p, todo = futures[fut]
                for r, entry in zip(todo, fut.result(), strict=True):
                    doc["runs"][p.index * p.replicas + r] = entry
                save_ensemble(plan.out, doc)
                if after is not None:
                    after()
                bar.update(1)
        except BaseException:
            cluster.client.cancel(list(futures))
            raise
