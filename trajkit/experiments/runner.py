"""``run_ensemble``: plan a config's sweep, check everything, then train and record every run.

Planning (no file is touched) resolves the config, expands the sweep, builds each point's dataset and
model spec, checks ``init_from`` archives and the device, and estimates disk use; any problem is a
one-line :class:`~trajkit.errors.TrajkitError` before training starts. Execution trains the replicas of
each sweep point together (:mod:`trajkit.experiments.replicas`), writes one archive per replica and keeps
``ensemble.json`` current, so an interrupted sweep resumes where it stopped.

>>> summary = run_ensemble("examples/demo.toml", "demo-out", quiet=True)     # doctest: +SKIP
>>> [r["status"] for r in summary["runs"]][:2]                               # doctest: +SKIP
['done', 'done']
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajkit import schedules
from trajkit.archive import create, open_archive
from trajkit.archive.estimate import METADATA_BYTES, estimate_size
from trajkit.archive.layout import Layout, layout_from_named_parameters
from trajkit.archive.storage import is_url
from trajkit.archive.writer import ArchiveWriter
from trajkit.devices import resolve_device
from trajkit.errors import ConfigError, TrajkitError
from trajkit.experiments import losses
from trajkit.experiments.cluster_sweep import execute_on_cluster
from trajkit.experiments.config import (
    Config,
    config_diff,
    fill_replica,
    load_config,
    point_config,
    replica_config,
    sweep_points,
)
from trajkit.experiments.datasets import Dataset, build_dataset, dataset_spec
from trajkit.experiments.dynamics import Dynamics
from trajkit.experiments.ensemble import load_ensemble, new_ensemble, run_names, save_ensemble
from trajkit.experiments.models import build_model, model_class_name, model_spec
from trajkit.experiments.randomness import derive_seed
from trajkit.experiments.replicas import BatchedReplicas, SequentialReplicas
from trajkit.experiments.training import (
    TrainData,
    gradient_statistics,
    snapshot_metrics,
    snapshot_outcomes,
    train,
    train_energy,
)
from trajkit.record.batch import BatchRecorder, RunEnd
from trajkit.record.gradient_stats import GRADIENT_METRICS
from trajkit.scheduler import connect

METRIC_NAMES = ("train_loss", "test_loss", "train_acc", "test_acc")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class PointPlan:
    """Everything one sweep point needs, checked before anything is written."""

    index: int
    coords: dict[str, Any]
    config: Config
    dataset: Dataset
    spec: dict[str, Any]
    layout: Layout
    n_params: int
    schedule: schedules.Schedule
    snapshot_steps: np.ndarray
    names: list[str]
    init_from: list[dict[str, Any] | None] = field(default_factory=list)
    #: ``{"name", "index", "parent"}`` per replica when the point belongs to a multi-stage protocol
    stage: list[dict[str, Any]] | None = None

    @property
    def steps(self) -> int:
        return int(self.config["run"]["steps"])

    @property
    def replicas(self) -> int:
        return int(self.config["run"]["replicas"])

    def estimated_bytes(self) -> int:
        """Disk use of one run's archive: :func:`trajkit.estimate_size` (params rows in the run's storage
        dtype, 1-D arrays in whole chunks) plus the metadata overhead it leaves out (an upper bound)."""
        metrics = (*(METRIC_NAMES if self.dataset.n_classes is not None else METRIC_NAMES[:2]),
                   "train_energy", *(GRADIENT_METRICS if self.config["metrics"]["gradient_stats"] else ()))
        est = estimate_size(self.layout, schedules.explicit(self.snapshot_steps.tolist()), self.steps,
                            dtype=self.config["run"]["dtype"], metrics=metrics, trace=("loss", "lr"))
        return est.total + METADATA_BYTES[0] + METADATA_BYTES[1] * len(self.layout)


@dataclass
class Plan:
    """The resolved config, the output directory and each sweep point's plan."""

    config: Config
    out: Path
    device: str
    points: list[PointPlan]

    @property
    def n_runs(self) -> int:
        return sum(p.replicas for p in self.points)


# -- planning ------------------------------------------------------------------------------------------------


def make_schedule(cfg: Config) -> schedules.Schedule:
    """The snapshot schedule of ``[snapshots]`` over ``run.steps``; the final step is always included."""
    s, steps = cfg["snapshots"], cfg["run"]["steps"]
    if s["schedule"] == "log":
        sched: schedules.Schedule = schedules.log(s["start"], steps, s["n"])
    elif s["schedule"] == "linear":
        sched = schedules.linear(s["every"], 0, steps)
    else:
        sched = schedules.explicit(s["steps"])
    if steps not in sched:
        sched = sched | schedules.explicit([steps])
    return sched


def check_device(device: str) -> str:
    """``device`` if torch can use it, else a one-line error (:func:`trajkit.devices.resolve_device`)."""
    return resolve_device(device, key="run.device")


def initial_params(spec: dict[str, Any], seed: int) -> torch.Tensor:
    """Flat float32 ``[N]`` initial parameters of the model for replica seed ``seed`` (PyTorch's default
    initialisation drawn from ``derive_seed(seed, "init")``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        model = build_model(spec)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(torch.float32)


def parse_init_from(text: str) -> tuple[str, str]:
    """``"path@STEP"`` → ``(path, "STEP")``; no ``@`` means the last snapshot."""
    if "@" in text:
        path, _, step = text.rpartition("@")
        return path, step
    return text, "last"


def load_init_from(text: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Open the ``init_from`` archive, check its model spec against ``spec`` and read the snapshot."""
    path, step_text = parse_init_from(text)
    try:
        arch = open_archive(path)
    except TrajkitError as e:
        raise ConfigError(f"run.init_from = {text!r}: {e}") from None
    theirs = arch.metadata.get("model", {}).get("spec")
    if theirs != spec:
        diff = next((f"{k}: {theirs.get(k)!r} vs {spec.get(k)!r}" for k in sorted(set(spec) | set(theirs or {}))
                     if (theirs or {}).get(k) != spec.get(k)), "no model.spec in that archive") \
            if isinstance(theirs, dict) else "no model.spec in that archive"
        raise ConfigError(f"run.init_from = {text!r}: its model does not match this run's ({diff}); use an "
                          "archive recorded with the same [model] and data shape")
    if arch.n_snapshots == 0:
        raise ConfigError(f"run.init_from = {text!r}: the archive has no committed snapshots")
    if step_text == "last":
        row = arch.n_snapshots - 1
    else:
        try:
            row = arch.row(int(step_text))
        except TrajkitError:
            raise ConfigError(f"run.init_from = {text!r}: step {step_text} is not a snapshot of that archive "
                              f"(snapshots {int(arch.steps[0])}..{int(arch.steps[-1])}); pick a recorded step "
                              "or @last") from None
    flat = np.asarray(arch.params[row, :])     # float64 rows from a float64 archive, float32 otherwise
    if not np.isfinite(flat).all():
        raise ConfigError(f"run.init_from = {text!r}: that snapshot holds NaN/inf parameters")
    return {"path": str(Path(path).resolve()), "step": int(arch.steps[row]), "run_id": arch.run_id,
            "params": flat}


def plan_experiment(config: str | Path | Config | None, out: str | Path, overrides: Iterable[str] = (),
                    device: str | None = None, datasets: dict[str, Dataset] | None = None) -> Plan:
    """Resolve and check everything a run needs; writes nothing. ``datasets`` caches the built datasets
    across calls (keyed by their spec), e.g. over the stages of a protocol."""
    overrides = list(overrides) + ([f'run.device="{device}"'] if device else [])
    cfg = load_config(config, overrides)
    if cfg.get("stages"):
        raise ConfigError("this config has [[stages]]: plan and run it with trajkit.experiments.run_experiment "
                          "(one ensemble per stage)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a directory for the ensemble")
    coords_list = sweep_points(cfg)
    keys = list(cfg["sweep"])
    names = run_names(coords_list, keys, 1)
    datasets = {} if datasets is None else datasets
    points = []
    dev = None
    for i, coords in enumerate(coords_list):
        pcfg = point_config(cfg, coords)
        dev = check_device(pcfg["run"]["device"])
        dspec = dataset_spec(pcfg["data"])
        key = repr(sorted(dspec.items()))
        if key not in datasets:
            datasets[key] = build_dataset(dspec)
        ds = datasets[key]
        spec = model_spec(pcfg["model"], ds.input_shape, losses.n_outputs(pcfg["loss"]["name"], ds))
        with torch.device("meta"):
            layout = layout_from_named_parameters(list(build_model(spec).named_parameters()))
        n_params = sum(e["size"] for e in layout)
        sched = make_schedule(pcfg)
        R = pcfg["run"]["replicas"]
        base = names[i][0].removesuffix("r00.trajkit")
        plan = PointPlan(i, coords, pcfg, ds, spec, layout, n_params, sched, sched.steps(pcfg["run"]["steps"]),
                         [f"{base}r{r:02d}.trajkit" for r in range(R)])
        init = pcfg["run"]["init_from"]
        if init is not None:
            cache: dict[str, dict[str, Any]] = {}
            for r in range(R):
                text = fill_replica(init, r)
                if text not in cache:
                    cache[text] = load_init_from(text, spec)
                plan.init_from.append(cache[text])
        else:
            plan.init_from = [None] * R
        points.append(plan)
    return Plan(cfg, out, dev or "cpu", points)


# -- execution -----------------------------------------------------------------------------------------------


class EnsembleSink:
    """The :class:`~trajkit.experiments.training.ReplicaSink` of one sweep point: every replica's archive
    written through one :class:`~trajkit.record.batch.BatchRecorder` (one slot pool, one writer thread).

    Snapshot metrics are evaluated on the writer thread, from the slot's copy of the parameters, when the
    engine allows it (:attr:`BatchedReplicas.evaluates_off_thread`: built-in models on the CPU) — beside
    training instead of on its thread; otherwise on the training thread, as before. Either way a snapshot
    whose parameters or train loss are not finite ends its run as diverged and is not written.
    """

    def __init__(self, recorder: BatchRecorder, engine: Any, data: TrainData, weight_decay: float = 0.0,
                 gradient_stats: Callable[[int, list[int]], dict[str, np.ndarray]] | None = None):
        self.recorder = recorder
        # off the training thread only from slot copies in the engine's own dtype (archives of the run's dtype)
        self.off_thread = (bool(getattr(engine, "evaluates_off_thread", False))
                           and recorder.archives[0].dtype == str(data.X_train.dtype).removeprefix("torch."))
        self.n_params = recorder.archives[0].n_params
        self.data = data
        self.weight_decay = weight_decay
        self.gradient_stats = gradient_stats
        self._stopped: dict[int, int] = {}

    def _metrics(self, evaluate: Callable[..., Any], flat: np.ndarray, extra: dict[str, np.ndarray]
                 ) -> dict[str, np.ndarray]:
        metrics = snapshot_metrics(evaluate, self.data)
        metrics["train_energy"] = train_energy(metrics["train_loss"], flat, self.weight_decay)
        return {**metrics, **extra}

    def trace(self, run: int, steps: np.ndarray, loss: np.ndarray, lr: float) -> None:
        self.recorder.trace(run, steps, {"loss": loss, "lr": np.full(steps.size, lr)})

    def snapshot(self, step: int, runs: list[int], engine: Any, data: TrainData, epoch: float) -> None:
        params = _param_tensors(engine, data.X_train.dtype)
        extra = self.gradient_stats(step, runs) if self.gradient_stats is not None else {}
        if self.off_thread:
            def finish(rows: np.ndarray) -> list[dict[str, float] | RunEnd]:   # on the writer thread
                flat = torch.from_numpy(rows[:, :self.n_params])
                at = engine.params_from_flat(flat)
                metrics = self._metrics(lambda *a: engine.evaluate(*a, params=at), rows[:, :self.n_params], extra)
                return _ends(step, snapshot_outcomes(step, np.isfinite(rows[:, :self.n_params]).all(axis=1),
                                                     metrics))
            self.recorder.snapshot(step, runs, params, epoch=epoch, finish=finish)
            return
        flat = engine.flat(data.X_train.dtype)
        metrics = self._metrics(engine.evaluate, flat.numpy(), extra)
        finite_rows = torch.isfinite(flat).all(dim=1).numpy()
        results = _ends(step, snapshot_outcomes(step, finite_rows, metrics))
        for run, res in zip(runs, results, strict=True):
            if isinstance(res, RunEnd):
                self._stopped[run] = step
        self.recorder.snapshot(step, runs, params, epoch=epoch, finish=lambda rows: results)

    def diverged(self, run: int, step: int, reason: str) -> None:
        self.recorder.end(run, "diverged", f"diverged: {reason}", step)
        self._stopped[run] = step

    def stopped(self) -> dict[int, int]:
        ended = {run: end.step for run, end in self.recorder.ended().items()}
        return {**ended, **self._stopped}


def _ends(step: int, outcomes: list[dict[str, float] | str]) -> list[dict[str, float] | RunEnd]:
    return [RunEnd("diverged", f"diverged: {o}", step) if isinstance(o, str) else o for o in outcomes]


def _param_tensors(engine: Any, dtype: torch.dtype) -> list[torch.Tensor]:
    """The engine's parameters as stacked tensors ``[R', ...]`` for the slot copies (layout order; the
    sequential engine's flattened in the run's ``dtype``, so a float64 run's rows reach the archive exactly)."""
    return list(engine.params) if isinstance(engine, BatchedReplicas) else [engine.flat(dtype)]


def run_metadata(plan: PointPlan, replica: int, ensemble_id: str, device: str, dyn: Dynamics) -> dict[str, Any]:
    """Archive metadata of one run (``ensemble.coords`` keeps its dotted keys verbatim)."""
    ds = plan.dataset
    rcfg = replica_config(plan.config, replica)
    meta: dict[str, Any] = {
        "seed": rcfg["run"]["seed"],
        "device": device,
        "model": {"spec": plan.spec, "class": model_class_name(build_model_meta(plan.spec))},
        "dataset": {"name": ds.name, "n_train": ds.n_train, "n_test": ds.n_test, "spec": ds.spec,
                    "input_shape": list(ds.input_shape), "n_classes": ds.n_classes},
        "loss": {"name": plan.config["loss"]["name"]},
        "dynamics": dyn.metadata(),
        "optimizer": dyn.optimizer_metadata(),
        "ensemble": {"id": ensemble_id, "replica": replica, "coords": plan.coords},
        "config": rcfg,
        "dtype": plan.config["run"]["dtype"],
        "schedule": plan.schedule.spec,
        "status": "running",
        "status_reason": None,
    }
    init = plan.init_from[replica]
    if init is not None:
        meta["init_from"] = {k: init[k] for k in ("path", "step", "run_id")}
    if plan.stage is not None:
        meta["stage"] = plan.stage[replica]
    return meta


def build_model_meta(spec: dict[str, Any]) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(spec)


def _train_data(ds: Dataset, loss: str, device: str, dtype: torch.dtype = torch.float32) -> TrainData:
    def t(a):
        return torch.as_tensor(a).to(device)

    def f(a):   # inputs and real-valued targets in the run's dtype
        return a.to(dtype) if a.is_floating_point() else a

    ytr, yte = t(ds.y_train), t(ds.y_test)
    classes = ds.n_classes is not None
    return TrainData(loss, f(t(ds.X_train)), f(losses.targets(loss, ytr, ds.n_classes)), ytr if classes else None,
                     f(t(ds.X_test)), f(losses.targets(loss, yte, ds.n_classes)), yte if classes else None)


def _resume_point(plan: PointPlan, out: Path, todo: list[int]) -> tuple[int, dict[int, Any]]:
    """The step the replicas in ``todo`` restart from, and each one's params there (from its archive).

    A replica can restart from snapshot s when its trace covers every step before s; the point restarts
    from the earliest such step over its replicas (0 when one has no archive)."""
    usable: dict[int, int] = {}
    for r in todo:
        path = out / plan.names[r]
        usable[r] = 0
        if path.exists():
            try:
                arch = open_archive(path)
            except TrajkitError:
                shutil.rmtree(path)  # a pending run's archive torn at creation: start it again
                continue
            tsteps = arch.trace.get("step", np.zeros(0, np.int64))
            covered = int(tsteps[-1]) + 1 if tsteps.size else 0
            ok = arch.steps[arch.steps <= covered]
            usable[r] = int(ok[-1]) if ok.size else 0
    start = min(usable.values())
    params: dict[int, Any] = {}
    if start > 0:
        for r in todo:
            arch = open_archive(out / plan.names[r])
            params[r] = torch.from_numpy(np.asarray(arch.params[arch.row(start), :]))   # in the archive's dtype
    return start, params


def train_point(plan: PointPlan, out: Path, todo: list[int], doc: dict[str, Any], device: str,
                progress=None) -> None:
    """Train and record the replicas ``todo`` of one sweep point; updates ``doc`` (ensemble.json)."""
    cfg = plan.config
    dyn = Dynamics.from_config(cfg["dynamics"], plan.dataset.n_train)
    start, resumed = _resume_point(plan, out, todo)
    seeds = [cfg["run"]["seed"] + r for r in todo]
    inits = []
    for r, seed in zip(todo, seeds, strict=True):
        if r in resumed:
            inits.append(resumed[r])
        elif plan.init_from[r] is not None:
            inits.append(torch.from_numpy(plan.init_from[r]["params"]))
        else:
            inits.append(initial_params(plan.spec, seed))
    dtype = DTYPES[cfg["run"]["dtype"]]
    init = torch.stack([v.to(dtype) for v in inits])
    entries = {r: doc["runs"][plan.index * plan.replicas + r] for r in todo}
    writers: list[ArchiveWriter] = []
    recorder: BatchRecorder | None = None
    try:
        for r in todo:
            path = out / plan.names[r]
            if path.exists():
                w = create(path, plan.n_params, layout=plan.layout, resume="allow", direct=None,
                           dtype=cfg["run"]["dtype"])
                w.truncate(start)
                w.update_metadata({"status": "running", "status_reason": None})
            else:
                meta = run_metadata(plan, r, doc["id"], device, dyn)
                w = create(path, plan.n_params, metadata=meta, layout=plan.layout, direct=None,
                           dtype=cfg["run"]["dtype"])
            entries[r]["run_id"] = w.metadata["run_id"]
            writers.append(w)
        if cfg["run"]["vectorize"]:
            with torch.device("meta"):
                module = build_model(plan.spec)
            engine: Any = BatchedReplicas(module, plan.layout, init, device)
        else:
            engine = SequentialReplicas(plan.spec, plan.layout, init, device)
        data = _train_data(plan.dataset, cfg["loss"]["name"], device, dtype)
        recorder = BatchRecorder(writers, _param_tensors(engine, dtype))
        sink = EnsembleSink(recorder, engine, data, dyn.weight_decay, _gradient_stats(cfg, engine, data, seeds, dyn))
        train(engine, dyn, data, seeds, plan.snapshot_steps, plan.steps, sink, start_step=start, progress=progress)
        for i in range(len(todo)):
            recorder.end(i, "done")
        recorder.close()
        for r, (status, reason) in zip(todo, recorder.statuses, strict=True):
            entries[r].update(status=status, reason=reason)
    except KeyboardInterrupt:
        if recorder is not None:
            recorder.close()     # hand over the traces; statuses stay "running"
        for w in writers:
            w.close()
        raise
    except Exception as e:  # record the failure, go on with the sweep
        reason = f"failed: {type(e).__name__}: {e}"
        if recorder is not None:
            recorder.fail(reason)
            for r, (status, why) in zip(todo, recorder.statuses, strict=True):
                entries[r].update(status=status, reason=why)
            return
        for w in writers:
            try:
                w.update_metadata({"status": "failed", "status_reason": reason})
            except Exception:
                pass
            w.close()
        for r in todo:
            entries[r].update(status="failed", reason=reason)


def _gradient_stats(cfg: Config, engine: Any, data: TrainData, seeds: list[int], dyn: Dynamics
                    ) -> Callable[[int, list[int]], dict[str, np.ndarray]] | None:
    """``[metrics] gradient_stats``: the statistics of the engine's rows (``runs`` index ``seeds``) at a step."""
    m = cfg["metrics"]
    if not m["gradient_stats"]:
        return None
    return lambda step, runs: gradient_statistics(engine, data, [seeds[r] for r in runs], step,
                                                  m["gradient_batches"], m["gradient_batch_size"], dyn.lr,
                                                  dyn.effective_batch_size)


def _prepare_out(plan: Plan) -> dict[str, Any]:
    """Create the ensemble directory (or check that an existing one holds this experiment)."""
    out = plan.out
    doc = load_ensemble(out) if out.is_dir() else None
    if doc is None:
        if out.is_dir() and any(out.iterdir()):
            raise ConfigError(f"--out {str(out)!r} exists, is not empty and holds no ensemble.json; choose a new "
                              "or empty directory")
        runs = [{"path": name, "replica": r, "coords": p.coords, "run_id": None, "status": "pending",
                 "reason": None} for p in plan.points for r, name in enumerate(p.names)]
        return new_ensemble(plan.config, runs)
    diff = config_diff(doc.get("config") or {}, plan.config, ignore={"run.device"})
    if diff is None and (doc.get("sweep") or {}) != plan.config["sweep"]:
        diff = f"sweep: {doc.get('sweep')} vs {plan.config['sweep']}"
    if diff is not None or len(doc["runs"]) != plan.n_runs:
        raise ConfigError(f"--out {str(out)!r} holds a different experiment ({diff or 'run count differs'}); "
                          "rerun with the same config to resume it, or choose a new --out")
    return doc


def _summary(plan: Plan, doc: dict[str, Any] | None, dry_run: bool) -> dict[str, Any]:
    rows = []
    for p in plan.points:
        for r, name in enumerate(p.names):
            row: dict[str, Any] = {"name": name, "path": str(plan.out / name), "replica": r, "coords": p.coords,
                                   "steps": p.steps, "snapshots": int(p.snapshot_steps.size),
                                   "n_params": p.n_params, "estimated_bytes": p.estimated_bytes(),
                                   "status": "planned" if dry_run else None, "reason": None}
            if p.config["model"]["n_params"] is not None:   # the width chosen for model.n_params
                row["width"] = p.spec["hidden"][0] if p.spec["kind"] == "mlp" else p.spec["width"]
                row["n_params_target"] = p.config["model"]["n_params"]
            if doc is not None:
                entry = doc["runs"][p.index * p.replicas + r]
                row["status"], row["reason"], row["run_id"] = entry["status"], entry["reason"], entry["run_id"]
                path = plan.out / name
                if path.exists():
                    try:
                        arch = open_archive(path)
                        for m in METRIC_NAMES:
                            vals = arch.metrics.get(m)
                            row[m] = float(vals[-1]) if vals is not None and vals.size else None
                        row["bytes"] = arch.disk_usage()[0]
                        row["last_step"] = int(arch.steps[-1]) if arch.n_snapshots else None
                    except TrajkitError:
                        row["bytes"] = None
            rows.append(row)
    statuses = [r["status"] for r in rows]
    return {"out": str(plan.out), "dry_run": dry_run, "device": plan.device,
            "ensemble_id": doc["id"] if doc else None, "n_runs": len(rows), "runs": rows,
            "estimated_bytes": sum(r["estimated_bytes"] for r in rows),
            "n_failed": statuses.count("failed"), "n_diverged": statuses.count("diverged"),
            "config": plan.config}


def run_ensemble(config: str | Path | Config | None, out: str | Path, overrides: Iterable[str] = (),
                 quiet: bool = False, dry_run: bool = False, device: str | None = None,
                 threads: int | None = None, scheduler: Any = None) -> dict[str, Any]:
    """Record every run of a one-stage experiment config into the ensemble directory ``out``
    (:func:`trajkit.experiments.run_experiment` runs ``[[stages]]`` protocols too).

    ``config`` is a TOML path or a config dict (e.g. an archive's stored ``config``); ``overrides`` are
    ``KEY=VALUE`` strings as for ``--set``; ``device`` overrides ``run.device``; ``threads`` sets torch's
    CPU threads for the duration of the call. With ``dry_run`` nothing is trained or written.
    ``scheduler`` (:mod:`trajkit.scheduler`: ``tcp://host:port``, ``local:N``, a Client, ``in-process``, or
    None for the active Dask client if any) runs each sweep point as one task on a worker
    (:mod:`trajkit.experiments.cluster_sweep`); ``out`` must then be reachable from every worker (a URL
    ``out``: :func:`~trajkit.experiments.run_experiment`, :mod:`trajkit.experiments.url_out`).

    Returns a summary: ``{"out", "runs": [{"name", "path", "replica", "coords", "status", "reason",
    "steps", "snapshots", "n_params", "estimated_bytes", "train_loss", "test_loss", "train_acc", "test_acc",
    "bytes"}], "n_runs", "n_failed", "n_diverged", "estimated_bytes", ...}``.
    """
    if is_url(str(out)):
        raise ConfigError(f"--out {out}: record to a URL with trajkit.experiments.run_experiment (or `trajkit "
                          "record`), which records each point locally and pushes it")
    plan = plan_experiment(config, out, overrides, device)
    if dry_run:
        if plan.out.is_dir():
            _prepare_out(plan)  # report a mismatching existing ensemble in the dry run too
        return _summary(plan, None, dry_run=True)
    with connect(scheduler) as cluster:
        doc = execute(plan, quiet, cluster=cluster, threads=threads)
    return _summary(plan, doc, dry_run=False)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU thread count set to ``threads`` (None: unchanged) for the duration of the block."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def execute(plan: Plan, quiet: bool, skip: Callable[[PointPlan, int], str | None] | None = None,
            cluster: Any = None, threads: int | None = None) -> dict[str, Any]:
    """Create or check ``plan.out`` and train every run of ``plan`` not yet finished; returns ensemble.json.

    ``skip(point, replica)`` may give a reason to mark a pending run ``diverged`` without training it (a
    stage whose parent run diverged). With a ``cluster`` (:func:`trajkit.scheduler.connect`) each sweep
    point runs as one task on a worker (``threads`` there); otherwise here, with torch on ``threads``."""
    doc = _prepare_out(plan)
    if skip is not None:
        for p in plan.points:
            for r in range(p.replicas):
                entry = doc["runs"][p.index * p.replicas + r]
                reason = skip(p, r) if entry["status"] in ("pending", "failed") else None
                if reason is not None:
                    entry.update(status="diverged", reason=reason)
    plan.out.mkdir(parents=True, exist_ok=True)
    save_ensemble(plan.out, doc)
    if cluster is not None:
        execute_on_cluster(plan, doc, quiet, cluster, train_point, threads)
        return doc
    with torch_threads(threads):
        _execute(plan, doc, quiet)
    return doc


def _execute(plan: Plan, doc: dict[str, Any], quiet: bool) -> None:
    from tqdm.auto import tqdm

    total = sum(p.steps for p in plan.points)
    n_runs = plan.n_runs
    done_runs = sum(e["status"] in ("done", "diverged") for e in doc["runs"])
    with tqdm(total=total, unit="step", disable=quiet, dynamic_ncols=True, desc="trajkit record",
              leave=True) as bar:
        bar.set_postfix_str(f"runs {done_runs}/{n_runs}")
        for p in plan.points:
            entries = doc["runs"][p.index * p.replicas:(p.index + 1) * p.replicas]
            todo = [r for r, e in enumerate(entries) if e["status"] in ("pending", "failed")]
            if todo:
                before = bar.n
                try:
                    train_point(p, plan.out, todo, doc, plan.device, progress=bar.update)
                finally:
                    save_ensemble(plan.out, doc)
                bar.update(max(0, before + p.steps - bar.n))
            else:
                bar.update(p.steps)
            done_runs = sum(e["status"] in ("done", "diverged") for e in doc["runs"])
            bar.set_postfix_str(f"runs {done_runs}/{n_runs}")


def config_from_archive(path: str | Path) -> Config:
    """The resolved config stored in a run's archive (``trajkit record --from-archive``)."""
    arch = open_archive(path)
    cfg = arch.metadata.get("config")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the archive holds no 'config' metadata (not recorded by trajkit record)")
    return cfg
