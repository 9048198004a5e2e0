"""``run_experiment``: one ensemble, or a multi-stage protocol (``[[stages]]``) whose stages run in order.

A protocol's stage ``name`` is an ensemble of its own, ``OUT/<name>/`` (``ensemble.json`` plus one archive
per sweep point and replica), trained with the stage's config (:func:`~trajkit.experiments.config.stage_config`).
Every run of stage k > 0 starts from the last snapshot of its parent — the run of stage k − 1 with the same
replica and the same coordinates on the parent's sweep axes — through ``run.init_from`` (stored in its
config, so ``--from-archive`` reproduces it), and records ``stage = {name, index, parent: {stage, path,
run_id, step}}`` in its metadata. A stage's own sweep axis fans its runs out from the same parent, and
carries on to the later stages. Resuming goes stage by stage: a finished stage's ensemble is checked and
skipped, an interrupted one resumes as any ensemble does; a parent run that diverged gives children
marked ``diverged`` (not trained); a parent run that failed stops the protocol before the next stage.

>>> summary = run_experiment("examples/sgd_polish_langevin.toml", "protocol-out", quiet=True)  # doctest: +SKIP
>>> sorted({r["stage"] for r in summary["runs"]})                                           # doctest: +SKIP
['langevin', 'polish', 'polish_slow', 'sgd']
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trajkit.archive.storage import is_url
from trajkit.errors import ConfigError
from trajkit.experiments.config import Config, fill_replica, load_config, stage_config
from trajkit.experiments.runner import (
    Plan,
    _prepare_out,
    _summary,
    execute,
    load_init_from,
    plan_experiment,
    run_ensemble,
)
from trajkit.experiments.url_out import record_to_url
from trajkit.scheduler import connect


def run_experiment(config: str | Path | Config | None, out: str | Path, overrides: Iterable[str] = (),
                   quiet: bool = False, dry_run: bool = False, device: str | None = None,
                   threads: int | None = None, scheduler: Any = None,
                   storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record every run of an experiment config into ``out`` (one ensemble, or one per ``[[stages]]`` stage).

    ``config`` is a TOML path or a config dict (e.g. an archive's stored ``config``); ``overrides`` are
    ``KEY=VALUE`` strings as for ``--set``; ``device`` overrides ``run.device``; ``threads`` sets torch's
    CPU threads for the duration of the call. With ``dry_run`` nothing is trained or written.
    ``scheduler`` (:mod:`trajkit.scheduler`: ``tcp://host:port``, ``local:N``, a Client, ``in-process``, or
    None for the active Dask client if any) runs each sweep point as one task on a worker, stage by stage;
    ``out`` must then be reachable from every worker. ``out`` may be a URL (``s3://bucket/prefix/``) for a
    one-stage config: each point is recorded locally and pushed there (:mod:`trajkit.experiments.url_out`),
    with ``storage_options`` the fsspec options of that URL (given for a local ``out``: an error).

    Returns a summary: ``{"out", "runs": [{"name", "path", "replica", "coords", "status", "reason",
    "steps", "snapshots", "n_params", "estimated_bytes", "train_loss", "test_loss", "train_acc", "test_acc",
    "bytes"}], "n_runs", "n_failed", "n_diverged", "estimated_bytes", ...}``; for a protocol each run also has
    its ``stage`` and its name is ``<stage>/<archive>``, and ``stages`` lists the stage names.
    """
    overrides = list(overrides) + ([f'run.device="{device}"'] if device else [])
    cfg = load_config(config, overrides)
    if storage_options is not None and not is_url(str(out)):
        raise ConfigError(f"--storage-options: --out {out} is a local directory; the options are for an --out URL "
                          "(s3://bucket/prefix/): drop them or give a URL")
    if not cfg.get("stages") and is_url(str(out)):
        return record_to_url(cfg, str(out), (), quiet, dry_run, None, threads, scheduler, storage_options)
    if not cfg.get("stages"):
        return run_ensemble(cfg, out, quiet=quiet, dry_run=dry_run, threads=threads, scheduler=scheduler)
    if is_url(str(out)):
        raise ConfigError(f"--out {out}: a [[stages]] protocol records to a local directory only; record it there "
                          "and `trajkit push` it to the URL")
    plans = plan_stages(cfg, out)
    if dry_run:
        for plan in plans:
            if plan.out.is_dir():
                _prepare_out(plan)
        return _protocol_summary(cfg, Path(out), plans, [None] * len(plans), dry_run=True)
    docs: list[dict[str, Any] | None] = []
    with connect(scheduler) as cluster:
        for k, plan in enumerate(plans):
            name = cfg["stages"][k]["name"]
            if k == 0:
                for p in plan.points:
                    p.stage = [{"name": name, "index": 0, "parent": None}] * p.replicas
                docs.append(execute(plan, quiet, cluster=cluster, threads=threads))
                continue
            parent, parent_doc = plans[k - 1], docs[k - 1]
            assert parent_doc is not None
            failed = [e["path"] for e in parent_doc["runs"] if e["status"] in ("pending", "failed")]
            if failed:
                raise ConfigError(f"stage {name!r} needs every run of stage {parent.out.name!r} finished, but "
                                  f"{len(failed)} failed (e.g. {failed[0]}; reasons in "
                                  f"{parent.out / 'ensemble.json'}); rerun the same command to retry them")
            statuses = _link_to_parent(plan, parent, parent_doc, name, k)
            docs.append(execute(plan, quiet, skip=lambda p, r, s=statuses: s.get((p.index, r)), cluster=cluster,
                                threads=threads))
    return _protocol_summary(cfg, Path(out), plans, docs, dry_run=False)


def plan_stages(cfg: Config, out: str | Path) -> list[Plan]:
    """Every stage's :class:`~trajkit.experiments.runner.Plan` (into ``out/<name>``), checked before anything
    runs; the links to the parents' archives are made when each stage starts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a directory for the protocol's stages")
    names = [st["name"] for st in cfg["stages"]]
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in names)
        if other:
            raise ConfigError(f"--out {str(out)!r} holds {other[0]!r}, which is no stage of this protocol "
                              f"({', '.join(names)}); choose a new or empty directory")
    datasets: dict[str, Any] = {}
    return [plan_experiment(stage_config(cfg, k), out / name, datasets=datasets) for k, name in enumerate(names)]


def _link_to_parent(plan: Plan, parent: Plan, parent_doc: dict[str, Any], name: str, index: int
                    ) -> dict[tuple[int, int], str]:
    """Point each run of ``plan`` at its parent's last snapshot (``run.init_from``, ``stage`` metadata);
    returns ``{(point, replica): reason}`` for the runs whose parent diverged (they are not trained)."""
    keys = list(parent.config["sweep"])
    by_coords = {_key(p.coords, keys): p for p in parent.points}
    diverged: dict[tuple[int, int], str] = {}
    for p in plan.points:
        pp = by_coords[_key(p.coords, keys)]
        template = str(parent.out / (pp.names[0].removesuffix("r00.trajkit") + "r{replica:02d}.trajkit")) + "@last"
        p.config["run"]["init_from"] = template
        p.init_from, p.stage = [], []
        for r in range(p.replicas):
            entry = parent_doc["runs"][pp.index * pp.replicas + r]
            if entry["status"] != "done":
                diverged[(p.index, r)] = f"parent run {parent.out / entry['path']} {entry['status']}"
                p.init_from.append(None)
                p.stage.append({"name": name, "index": index, "parent": None})
                continue
            init = load_init_from(fill_replica(template, r), p.spec)
            p.init_from.append(init)
            p.stage.append({"name": name, "index": index, "parent": {
                "stage": parent.out.name, "path": init["path"], "run_id": init["run_id"], "step": init["step"]}})
    return diverged


def _key(coords: dict[str, Any], keys: list[str]) -> tuple[str, ...]:
    return tuple(repr(coords[k]) for k in keys)


def _protocol_summary(cfg: Config, out: Path, plans: list[Plan], docs: list[dict[str, Any] | None],
                      dry_run: bool) -> dict[str, Any]:
    rows, device = [], plans[0].device
    for plan, doc in zip(plans, docs, strict=True):
        stage = plan.out.name
        for row in _summary(plan, doc, dry_run)["runs"]:
            rows.append({**row, "stage": stage, "name": f"{stage}/{row['name']}"})
    statuses = [r["status"] for r in rows]
    return {"out": str(out), "dry_run": dry_run, "device": device, "ensemble_id": None,
            "stages": [p.out.name for p in plans], "n_runs": len(rows), "runs": rows,
            "estimated_bytes": sum(r["estimated_bytes"] for r in rows), "n_failed": statuses.count("failed"),
            "n_diverged": statuses.count("diverged"), "config": cfg}

