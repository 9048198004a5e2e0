"""``trajkit record --out URL``: an ensemble recorded onto object storage (``s3://bucket/prefix/``, any fsspec URL).

The commit protocol stays on local disk (FORMAT.md §5–6): each sweep point is trained into a local
temporary directory — on the worker that runs it under ``--scheduler``, here without one — and its
finished runs (``done`` or ``diverged``) are then published with :func:`trajkit.archive.push.push` (checksums,
root ``zarr.json`` last) to ``URL/<name>.trajkit``
(:func:`~trajkit.experiments.cluster_sweep.publish_point`); the temporary directory is deleted. After each point
the client uploads ``ensemble.json`` to ``URL/ensemble.json``, so an entry says ``done`` only once its
archive is complete at the URL, and the file goes last.

Resuming (rerun the same command): the ensemble.json at the URL is read back and checked to hold the same
experiment; a run whose archive is complete at the URL (its root ``zarr.json`` there, status ``done`` or
``diverged``) is skipped — also when the client died between a worker's push and its ensemble.json update;
any other run (pending, failed, or interrupted: never pushed) is recorded again from scratch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from trajkit.archive import open_archive
from trajkit.archive.ensemble_file import ENSEMBLE_FILE, read_ensemble_file, write_ensemble_file
from trajkit.archive.storage import filesystem, missing_bucket, storage_error
from trajkit.errors import ConfigError, TrajkitError
from trajkit.experiments.cluster_sweep import FINISHED, execute_on_cluster, publish_point
from trajkit.experiments.runner import _prepare_out, _summary, plan_experiment, train_point
from trajkit.scheduler import connect


def record_to_url(config: Any, url: str, overrides: Any, quiet: bool, dry_run: bool, device: str | None,
                  threads: int | None, scheduler: Any, storage_options: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """:func:`~trajkit.experiments.runner.run_ensemble` with ``out`` a URL (module doc); the summary's ``out``
    and run paths are URLs. ``storage_options``: the fsspec options of the URL (endpoint, credentials; without
    them an ``s3://`` URL takes them from the AWS environment), used here and by every worker's push."""
    url = url.rstrip("/")
    fs, path = filesystem(url, storage_options)
    bucket = missing_bucket(fs, path, url)
    if bucket is not None:
        raise ConfigError(f"--out {url}: bucket {bucket!r} does not exist; create it first (aws s3 mb "
                          f"s3://{bucket}) or fix the URL")
    with tempfile.TemporaryDirectory(prefix="trajkit-record-") as tmp:
        plan = plan_experiment(config, Path(tmp) / "ensemble", overrides, device)
        remote = read_ensemble_file(url, storage_options)
        if remote is not None:
            _reconcile(remote, url, storage_options)
            plan.out.mkdir()
            write_ensemble_file(plan.out, remote)
        if dry_run:
            if remote is not None:
                _prepare_out(plan)
            summary = _summary(plan, None, dry_run=True)
        else:
            doc = _prepare_out(plan)
            plan.out.mkdir(exist_ok=True)

            def publish() -> None:
                write_ensemble_file(plan.out, doc)
                try:
                    fs.put_file(str(plan.out / ENSEMBLE_FILE), f"{path}/{ENSEMBLE_FILE}")
                except Exception as e:  # any store failure: one line naming the URL
                    raise storage_error(e, f"{url}/{ENSEMBLE_FILE}") from None

            publish()
            with connect(scheduler) as cluster:
                if cluster is not None:
                    execute_on_cluster(plan, doc, quiet, cluster, train_point, threads, out=url, after=publish,
                                       storage_options=storage_options)
                else:
                    for p in plan.points:
                        todo = [r for r in range(p.replicas)
                                if doc["runs"][p.index * p.replicas + r]["status"] in ("pending", "failed")]
                        if todo:
                            entries = publish_point(train_point, p, url, todo, doc, plan.device, threads,
                                                    storage_options)
                            for r, e in zip(todo, entries, strict=True):
                                doc["runs"][p.index * p.replicas + r] = e
                            publish()
            summary = _summary(plan, doc, dry_run=False)
    summary["out"] = url
    for row in summary["runs"]:
        row["path"] = f"{url}/{row['name']}"
    return summary


def _reconcile(doc: dict[str, Any], url: str, storage_options: dict[str, Any] | None) -> None:
    """Entries of ``doc`` (the ensemble.json at ``url``) made to say what is at the URL: ``done``/``diverged``
    only for a complete archive there (its own status and run id), every other run ``pending``."""
    for e in doc["runs"]:
        state = _remote_state(f"{url}/{e['path']}", storage_options)
        if state is None:
            e.update(status="pending", reason=None, run_id=None)
        else:
            e.update(status=state[0], reason=state[1], run_id=state[2])


def _remote_state(url: str, storage_options: dict[str, Any] | None
                  ) -> tuple[str, str | None, str | None] | None:
    """``(status, reason, run_id)`` of a finished archive at ``url``, or None when none is complete there."""
    try:
        arch = open_archive(url, validate=False, storage_options=storage_options)
    except TrajkitError:
        return None
    meta = arch.metadata
    if meta.get("status") not in FINISHED:
        return None
    return str(meta["status"]), meta.get("status_reason"), meta.get("run_id")
