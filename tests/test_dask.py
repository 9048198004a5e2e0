"""Analyses and sweeps on a Dask cluster: a ``distributed.LocalCluster`` of worker processes and a scheduler
+ workers started as ``dask scheduler`` / ``dask worker`` subprocesses, all on 127.0.0.1 and started here.

Results from the cluster equal the in-process results exactly (same blocks, same per-block arithmetic,
same order of additions); a worker killed with SIGKILL mid-pass changes nothing; bad schedulers and bad
workers are one line naming them; ``trajkit record --scheduler`` writes the same bits as a local sweep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

distributed = pytest.importorskip("distributed", reason="the Dask tests need trajkit[dask] (dask.distributed)")

import trajkit  # noqa: E402
from trajkit import synthetic  # noqa: E402
from trajkit.analysis import Analysis, Result, hookimpl  # noqa: E402
from trajkit.analysis.plugins import register_plugin, unregister_plugin  # noqa: E402
from trajkit.archive import create  # noqa: E402
from trajkit.cli import cli  # noqa: E402
from trajkit.errors import ClusterError  # noqa: E402
from trajkit.experiments import run_experiment  # noqa: E402
from trajkit.scheduler import connect  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).with_name("dask")
STEPS = np.unique(np.round(np.logspace(0, 3, 14)).astype(int))
TINY = ['data.name="teacher"', "data.n_train=48", "data.n_test=16", "data.dim=4", "model.hidden=[5]",
        'loss.name="quadratic_hinge"', "run.steps=30", 'snapshots.schedule="linear"', "snapshots.every=5",
        'dynamics.kind="langevin"', "dynamics.lr=0.1", "dynamics.temperature=0.01", "run.replicas=2",
        "sweep.dynamics.temperature=[0.001, 0.01]"]
ANALYSES = {
    "overlaps": {"n_waiting_times": 3, "epsilon": 0.05},
    "chi4": {"n_waiting_times": 3, "n_boot": 20, "epsilon": 0.05},
    "aging": {"n_waiting_times": 3, "n_boot": 0, "epsilon": 0.05},
    "relaxation": {"waiting_times": [1], "epsilon": 0.05, "n_boot": 0},
}


def _env() -> dict[str, str]:
    """The environment of worker subprocesses: this worktree's trajkit and plugins first on PYTHONPATH."""
    paths = [str(REPO), str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def _worker(address: str, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(DASK), "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                             "--no-dashboard", *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _scheduler() -> tuple[str, subprocess.Popen]:
    port = _free_port()
    proc = subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return f"tcp://127.0.0.1:{port}", proc


@pytest.fixture(scope="module")
def local_cluster():
    """A LocalCluster of 2 worker processes (1 thread each); workers inherit this process's PYTHONPATH."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _env()["PYTHONPATH"]
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       host="127.0.0.1", silence_logs=50)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(2, timeout=60)
        yield client
    finally:
        client.close()
        cluster.close(timeout=30)
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def cli_cluster():
    """``dask scheduler`` + 2 ``dask worker`` subprocesses on 127.0.0.1; yields the scheduler address."""
    address, sched = _scheduler()
    procs = [sched]
    try:
        procs += [_worker(address, _env()) for _ in range(2)]
        with distributed.Client(address, timeout=60, set_as_default=False) as c:
            c.wait_for_workers(2, timeout=60)
        yield address
    finally:
        _stop(procs[1:] + procs[:1])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """2 temperatures × 2 replicas of flat-loss Langevin runs, N = 3000."""
    return synthetic.langevin_flat_ensemble(tmp_path_factory.mktemp("dask") / "ens", STEPS, 3000, [1e-3, 1e-2], 2,
                                            seed=4)


def assert_same_result(a: Result, b: Result) -> None:
    assert sorted(a.arrays) == sorted(b.arrays)
    for k in a.arrays:
        np.testing.assert_array_equal(np.asarray(b.arrays[k]), np.asarray(a.arrays[k]), err_msg=k)
    np.testing.assert_equal(b.scalars, a.scalars)
    for k in a.coords:
        np.testing.assert_array_equal(np.asarray(b.coords[k]), np.asarray(a.coords[k]), err_msg=k)


class BlockSums(Analysis):
    """A third-party analysis that only uses ctx.kernels (pair sums and a Gram matrix) in small blocks."""

    name = "blocksums"
    version = "0.1.0"
    description = "pair sums and Gram matrix of one archive in many small column blocks"
    needs = "archive"

    def compute(self, data, params, ctx):
        T = data.n_snapshots
        pairs = np.array([(a, b) for a in range(0, T, 3) for b in range(a, T)])
        s = ctx.kernels.pair_sums(data, pairs, epsilon=0.05, block_bytes=1 << 16)
        dot, sq = ctx.kernels.gram(data, block_bytes=1 << 15)
        return Result(arrays={k: (s[k], ("pair",)) for k in ("dot", "sq", "quart", "theta")} |
                      {"gram": (dot, ("a", "b")), "sqdist": (sq, ("a", "b"))}, scalars={"n_cols": s["n_cols"]})


class _BlockSumsPlugin:
    @staticmethod
    @hookimpl
    def trajkit_register_analyses(register):
        register(BlockSums)


@pytest.fixture(scope="module")
def blocksums():
    register_plugin(_BlockSumsPlugin, "test-blocksums")
    yield
    unregister_plugin("test-blocksums")


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """One archive of N = 40000 parameters: many 256-column blocks for the kernels' tasks."""
    w = synthetic.brownian(STEPS, 40000, 0.01, init_scale=1.0, seed=2)
    return synthetic.write_archive(tmp_path_factory.mktemp("wide") / "wide.trajkit", STEPS, w)


# -- results equal the in-process path ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_every_dynamics_analysis_on_a_local_cluster_equals_in_process(sweep, local_cluster, name):
    ref = trajkit.analyze(name, [sweep], **ANALYSES[name])
    got = trajkit.analyze(name, [sweep], scheduler=local_cluster, **ANALYSES[name])
    assert_same_result(ref, got)
    info = got.provenance["scheduler"]
    assert info["workers"] == 2 and info["tasks"] >= 4        # at least one task per replica
    assert "scheduler" not in ref.provenance


def test_no_parameter_data_goes_through_the_client(sweep, local_cluster):
    got = trajkit.analyze("overlaps", [sweep], scheduler=local_cluster, **ANALYSES["overlaps"])
    info = got.provenance["scheduler"]
    one_replica = STEPS.size * 3000 * 4                          # bytes of one archive's parameters
    assert info["bytes_to_workers"] < one_replica / 4
    assert info["bytes_from_workers"] < one_replica / 2           # float64 sums and [T, R, R] partials only


LANDSCAPE = {
    "minima": {"shuffles": 5},
    "minima-pairwise": {"shuffles": 5, "align": "pairwise", "select": "weights"},
    "interpolation": {"points": 5, "pairs": "0:1,1:2"},
    "rugosity": {"directions": 2, "points": 5, "deltas": [0.01, 0.02], "walks": 1, "walk_steps": 12, "n_boot": 20},
}


@pytest.fixture(scope="module")
def landscape_ensemble(tmp_path_factory):
    """3 SGD replicas of an MLP (N = 4810 parameters) on digits: the landscape analyses' input."""
    out = tmp_path_factory.mktemp("landscape") / "ens"
    run_experiment({"model": {"kind": "mlp", "hidden": [64]}, "data": {"name": "digits"},
                    "dynamics": {"kind": "sgd", "lr": 0.1, "batch_size": 32},
                    "run": {"steps": 20, "replicas": 3, "seed": 0}, "snapshots": {"schedule": "log", "n": 3}},
                   out, quiet=True, threads=1)
    return out


@pytest.mark.parametrize("case", sorted(LANDSCAPE))
def test_every_landscape_analysis_on_a_local_cluster_equals_in_process(landscape_ensemble, local_cluster, case):
    from trajkit_landscape import common

    name, kw = case.split("-")[0], LANDSCAPE[case]
    ref = trajkit.analyze(name, [landscape_ensemble], **kw)
    common._REBUILT.clear()
    got = trajkit.analyze(name, [landscape_ensemble], scheduler=local_cluster, **kw)
    assert_same_result(ref, got)                                  # exact: the same tasks, the same arithmetic
    info = got.provenance["scheduler"]
    assert info["tasks"] >= 2
    one_run = trajkit.open_archive(sorted(landscape_ensemble.glob("*.trajkit"))[0]).n_params * 4
    assert info["bytes_from_workers"] < one_run                   # no parameter vector came back
    assert info["bytes_to_workers"] < 3 * one_run
    assert not common._REBUILT                                    # the model was rebuilt on the workers only


def test_a_third_party_analysis_gets_per_block_tasks_for_free(wide, local_cluster, blocksums):
    ref = trajkit.analyze("blocksums", wide)
    got = trajkit.analyze("blocksums", wide, scheduler=local_cluster)
    assert_same_result(ref, got)
    assert got.provenance["scheduler"]["tasks"] > 20               # one per column block


def test_an_active_client_is_picked_up(sweep, local_cluster):
    address = local_cluster.scheduler.address
    with distributed.Client(address):                               # the default client now
        got = trajkit.analyze("overlaps", [sweep], **ANALYSES["overlaps"])
        forced = trajkit.analyze("overlaps", [sweep], scheduler="in-process", **ANALYSES["overlaps"])
    assert got.provenance["scheduler"]["address"] == address
    assert "scheduler" not in forced.provenance
    assert_same_result(forced, got)


def test_dask_cli_cluster_and_the_cli_option(sweep, cli_cluster):
    res = CliRunner().invoke(cli, ["analyze", "--plugin", "chi4", "--json", "-p", "n_boot=20", "-p", "epsilon=0.05",
                                   "-p", "n_waiting_times=3", "--scheduler", cli_cluster, str(sweep)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["provenance"]["scheduler"]["address"] == cli_cluster
    announced = [ln for ln in res.stderr.splitlines() if ln.startswith("trajkit: dask ")]
    assert len(announced) == 1, res.stderr                         # the dashboard link or the address, once
    ref = trajkit.analyze("chi4", [sweep], **ANALYSES["chi4"])
    got = trajkit.analyze("chi4", [sweep], scheduler=cli_cluster, **ANALYSES["chi4"])
    assert_same_result(ref, got)
    assert got.provenance["scheduler"]["address"] == cli_cluster


# -- faults ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_worker_killed_mid_pass_changes_nothing(wide, local_cluster, blocksums):
    ref = trajkit.analyze("blocksums", wide)
    pids = local_cluster.run(os.getpid)
    killed: dict[str, object] = {}
    done = threading.Event()

    def kill_one_busy_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not done.is_set():
            busy = [w for w, keys in local_cluster.processing().items() if keys and w in pids]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.update(worker=busy[0], during_pass=not done.is_set())
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_busy_worker)
    killer.start()
    try:
        got = trajkit.analyze("blocksums", wide, scheduler=local_cluster)
    finally:
        done.set()
        killer.join(timeout=60)
    assert killed.get("during_pass"), "the pass ended before a worker could be killed"
    with pytest.raises(ProcessLookupError):
        os.kill(pids[killed["worker"]], 0)
    assert_same_result(ref, got)


def test_a_worker_that_cannot_read_the_archive_is_named(tmp_path, local_cluster):
    root = synthetic.brownian_ensemble(tmp_path / "ens", STEPS, 500, 0.01, 2, init_scale=1.0)
    ens = trajkit.open_ensemble([root])                            # opened here, then moved away
    shutil.move(root, tmp_path / "elsewhere")
    with pytest.raises(ClusterError) as e:
        trajkit.analyze("overlaps", ens, scheduler=local_cluster, n_waiting_times=2, epsilon=0.05)
    text = str(e.value)
    assert "\n" not in text and "cannot read archive" in text and str(root) in text
    assert any(w in text for w in local_cluster.scheduler_info()["workers"])


# -- bad schedulers and workers ----------------------------------------------------------------------------

def test_a_scheduler_that_does_not_answer_is_named_within_the_timeout():
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=rf"scheduler {address} did not answer within 1.5 s"), \
            connect(address, timeout=1.5):
        pass
    assert time.monotonic() - t0 < 30


def test_cli_bad_scheduler_is_one_line(sweep, monkeypatch):
    monkeypatch.setenv("TRAJKIT_SCHEDULER_TIMEOUT", "1")
    address = f"tcp://127.0.0.1:{_free_port()}"
    for bad, words in ((address, f"scheduler {address} did not answer within 1 s"),
                       ("local:0", "a local cluster needs at least one worker"),
                       ("pbs-cluster", "give tcp://HOST:PORT")):
        res = CliRunner().invoke(cli, ["analyze", "--plugin", "overlaps", "--scheduler", bad, str(sweep)])
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 1 and len(lines) == 1 and words in lines[0], res.output


def test_missing_distributed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)          # `import distributed` fails
    with pytest.raises(ClusterError, match=r"pip install 'trajkit\[dask\]'"), connect("local:2"):
        pass


_NO_TRAJKIT = ("import os, sys; sys.path[:] = [p for p in sys.path if not os.path.isfile("
               "os.path.join(p or '.', 'trajkit', '__init__.py'))]; "
               "from distributed.cli.dask_worker import main; main(sys.argv[1:])")


@pytest.mark.slow
def test_workers_without_trajkit_or_with_another_version_are_named(tmp_path, sweep):
    other = tmp_path / "other" / "trajkit"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    (other / "version.py").write_text('__version__ = "0.0.1"\n')
    address, sched = _scheduler()
    procs = [sched]
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        procs.append(subprocess.Popen([sys.executable, "-c", _NO_TRAJKIT, address, "--nthreads", "1", "--host",
                                       "127.0.0.1", "--no-dashboard", "--no-nanny"], env=env, cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with distributed.Client(address, timeout=60, set_as_default=False) as c:
            c.wait_for_workers(1, timeout=60)
            bare = next(iter(c.scheduler_info()["workers"]))
        with pytest.raises(ClusterError, match=rf"worker {bare} of scheduler {address} cannot import trajkit"):
            trajkit.analyze("overlaps", [sweep], scheduler=address, n_waiting_times=2)
        _stop(procs[1:])
        procs.append(_worker(address, {**env, "PYTHONPATH": str(other.parent)}, "--no-nanny"))
        with distributed.Client(address, timeout=60, set_as_default=False) as c:
            deadline = time.monotonic() + 60
            while set(c.scheduler_info()["workers"]) - {bare} == set() and time.monotonic() < deadline:
                time.sleep(0.1)
            while bare in c.scheduler_info()["workers"] and time.monotonic() < deadline:
                time.sleep(0.1)
        with pytest.raises(ClusterError, match=r"runs trajkit 0\.0\.1, this process trajkit "):
            trajkit.analyze("overlaps", [sweep], scheduler=address, n_waiting_times=2)
    finally:
        _stop(procs[1:] + procs[:1])


# -- sweeps on the cluster ---------------------------------------------------------------------------------

def _same_runs(ref: dict, out: Path) -> None:
    doc = json.loads((out / "ensemble.json").read_text())
    assert [r["status"] for r in doc["runs"]] == ["done"] * len(ref["runs"])
    for a, b in zip(ref["runs"], doc["runs"], strict=True):
        x, y = trajkit.open_archive(a["path"]), trajkit.open_archive(out / b["path"])
        np.testing.assert_array_equal(x.steps, y.steps)
        np.testing.assert_array_equal(x.params[:, :], y.params[:, :])
        for k in x.trace:
            np.testing.assert_array_equal(x.trace[k], y.trace[k])
        for k in x.metrics:
            np.testing.assert_array_equal(x.metrics[k], y.metrics[k])


def _interrupt(path: Path, step: int) -> None:
    """Leave an archive as a crash after the snapshot before ``step`` would: later rows and trace gone."""
    with create(path, n_params=trajkit.open_archive(path).n_params, resume="allow") as w:
        w.truncate(step)
        w.update_metadata({"status": "running"})


@pytest.mark.slow
def test_record_on_the_cluster_is_bit_identical_and_resumes(tmp_path, cli_cluster, tree_digest):
    ref = run_experiment(None, tmp_path / "ref", TINY, quiet=True, threads=1)
    out = tmp_path / "ens"
    (tmp_path / "exp.toml").write_text("")                       # every key from TINY's --set overrides
    res = CliRunner().invoke(cli, ["record", "--config", str(tmp_path / "exp.toml"), "--out", str(out), "-q",
                                   "--scheduler", cli_cluster, "--threads", "1",
                                   *[a for s in TINY for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    _same_runs(ref, out)
    doc = json.loads((out / "ensemble.json").read_text())
    _interrupt(out / doc["runs"][2]["path"], 25)               # point 1 interrupted, point 0 finished
    _interrupt(out / doc["runs"][3]["path"], 15)
    for r in doc["runs"][2:]:
        r["status"] = "pending"
    (out / "ensemble.json").write_text(json.dumps(doc))
    finished = {r["path"]: tree_digest(out / r["path"]) for r in doc["runs"][:2]}
    run_experiment(None, out, TINY, quiet=True, threads=1, scheduler=cli_cluster)
    for path, digest in finished.items():
        assert tree_digest(out / path) == digest                   # finished runs skipped, untouched
    _same_runs(ref, out)
