"""Ensembles: ensemble.json and metadata, resume of an interrupted sweep, divergence, init_from, reproduction."""

from __future__ import annotations

import json

import numpy as np
import pytest

import trajkit
from trajkit.archive import create
from trajkit.errors import ConfigError
from trajkit.experiments import config_from_archive, run_experiment

TINY = ['data.name="teacher"', "data.n_train=48", "data.n_test=16", "data.dim=4", "model.hidden=[5]",
        'loss.name="quadratic_hinge"', "run.steps=30", 'snapshots.schedule="linear"', "snapshots.every=5",
        'dynamics.kind="langevin"', "dynamics.lr=0.1", "dynamics.temperature=0.01"]


def test_sweep_writes_ensemble_json_and_metadata(tmp_path):
    out = tmp_path / "ens"
    s = run_experiment(None, out, [*TINY, "run.replicas=2", "sweep.dynamics.temperature=[0.001, 0.01]"], quiet=True)
    doc = json.loads((out / "ensemble.json").read_text())
    assert doc["format"] == "trajkit-ensemble" and doc["version"] == 1
    assert doc["sweep"] == {"dynamics.temperature": [0.001, 0.01]}
    assert [(r["replica"], r["coords"]["dynamics.temperature"], r["status"]) for r in doc["runs"]] == \
        [(0, 0.001, "done"), (1, 0.001, "done"), (0, 0.01, "done"), (1, 0.01, "done")]
    for r in doc["runs"]:
        arch = trajkit.open_archive(out / r["path"])
        m = arch.metadata
        assert m["run_id"] == r["run_id"] and m["ensemble"]["id"] == doc["id"]
        assert m["ensemble"]["replica"] == r["replica"] and m["ensemble"]["coords"] == r["coords"]
        assert m["dynamics"]["temperature"] == r["coords"]["dynamics.temperature"]
        assert m["seed"] == r["replica"] and m["config"]["run"]["seed"] == r["replica"]
        assert m["dataset"]["n_train"] == 48 and m["dataset"]["spec"]["name"] == "teacher"
        assert m["loss"]["name"] == "quadratic_hinge" and m["status"] == "done"
        assert m["schedule"]["kind"] == "linear" and list(arch.steps) == list(range(0, 31, 5))
        assert set(arch.metrics) == {"train_loss", "test_loss", "train_acc", "test_acc", "train_energy"}
        assert arch.trace["step"].tolist() == list(range(30))
    assert s["n_runs"] == 4 and s["n_failed"] == 0


def test_dry_run_writes_nothing_and_estimates_disk_use(tmp_path):
    out = tmp_path / "ens"
    dry = run_experiment(None, out, [*TINY, "run.replicas=2"], quiet=True, dry_run=True)
    assert not out.exists()
    assert [r["snapshots"] for r in dry["runs"]] == [7, 7]
    real = run_experiment(None, out, [*TINY, "run.replicas=2"], quiet=True)
    for d, r in zip(dry["runs"], real["runs"], strict=True):
        assert r["bytes"] == pytest.approx(d["estimated_bytes"], rel=0.05)


def _interrupt(path, step):
    """Leave an archive as a crash after the snapshot before ``step`` would: later rows and trace gone."""
    with create(path, n_params=trajkit.open_archive(path).n_params, resume="allow") as w:
        w.truncate(step)
        w.update_metadata({"status": "running"})


def test_interrupted_sweep_resumes_to_the_uninterrupted_result(tmp_path, tree_digest):
    over = [*TINY, "run.replicas=2", "sweep.dynamics.temperature=[0.001, 0.01]"]
    ref = run_experiment(None, tmp_path / "ref", over, quiet=True)
    out = tmp_path / "ens"
    run_experiment(None, out, over, quiet=True)
    doc = json.loads((out / "ensemble.json").read_text())
    # point 0 finished; point 1 was interrupted with replica 0 at step 20 and replica 1 at step 10
    _interrupt(out / doc["runs"][2]["path"], 25)
    _interrupt(out / doc["runs"][3]["path"], 15)
    for r in doc["runs"][2:]:
        r["status"] = "pending"
    (out / "ensemble.json").write_text(json.dumps(doc))
    assert trajkit.open_archive(out / doc["runs"][3]["path"]).steps[-1] == 10
    finished = {r["path"]: tree_digest(out / r["path"]) for r in doc["runs"][:2]}
    run_experiment(None, out, over, quiet=True)
    for path, digest in finished.items():
        assert tree_digest(out / path) == digest            # finished runs are skipped, untouched
    doc2 = json.loads((out / "ensemble.json").read_text())
    assert [r["status"] for r in doc2["runs"]] == ["done"] * 4
    for a, b in zip(ref["runs"], doc2["runs"], strict=True):   # Langevin resumes exactly
        x, y = trajkit.open_archive(a["path"]), trajkit.open_archive(out / b["path"])
        np.testing.assert_array_equal(x.steps, y.steps)
        np.testing.assert_array_equal(x.params[:, :], y.params[:, :])
        np.testing.assert_array_equal(x.trace["loss"], y.trace["loss"])
        np.testing.assert_array_equal(x.trace["step"], y.trace["step"])


def test_other_experiment_in_out_dir_is_refused(tmp_path, tree_digest):
    out = tmp_path / "ens"
    run_experiment(None, out, TINY, quiet=True)
    before = tree_digest(out)
    with pytest.raises(ConfigError, match=r"holds a different experiment \(dynamics.lr: 0.1 vs 0.2\)"):
        run_experiment(None, out, [*TINY, "dynamics.lr=0.2"], quiet=True)
    assert tree_digest(out) == before
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"is not empty and holds no ensemble\.json"):
        run_experiment(None, tmp_path / "junk", TINY, quiet=True)


def test_out_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep")
    with pytest.raises(ConfigError, match="is a file"):
        run_experiment(None, f, TINY, quiet=True)
    assert f.read_text() == "keep"


def test_diverged_run_is_recorded_and_the_sweep_continues(tmp_path):
    out = tmp_path / "ens"
    s = run_experiment(None, out, [*TINY, 'dynamics.kind="gd"', "dynamics.temperature=0.0", 'loss.name="mse"',
                                   "sweep.dynamics.lr=[0.05, 1e6]"], quiet=True)
    doc = json.loads((out / "ensemble.json").read_text())
    assert [r["status"] for r in doc["runs"]] == ["done", "diverged"]
    assert "diverged" in doc["runs"][1]["reason"] and "step" in doc["runs"][1]["reason"]
    arch = trajkit.open_archive(out / doc["runs"][1]["path"])
    assert arch.metadata["status"] == "diverged" and arch.metadata["status_reason"] == doc["runs"][1]["reason"]
    assert np.isfinite(arch.params[:, :]).all()               # only finite snapshots were written
    assert not np.isfinite(arch.trace["loss"][-1])            # the trace ends at the non-finite loss
    assert arch.n_snapshots < 7
    assert s["n_diverged"] == 1 and s["n_failed"] == 0


def test_init_from_starts_at_the_recorded_snapshot(tmp_path):
    first = run_experiment(None, tmp_path / "sgd", [*TINY, 'dynamics.kind="sgd"', "dynamics.temperature=0.0",
                                                    "dynamics.batch_size=8"], quiet=True)
    src = trajkit.open_archive(first["runs"][0]["path"])
    over = [*TINY, f'run.init_from="{src.path}@20"', "run.replicas=2"]
    s = run_experiment(None, tmp_path / "lang", over, quiet=True)
    for r in s["runs"]:
        arch = trajkit.open_archive(r["path"])
        np.testing.assert_array_equal(arch.params[0, :], src.params[src.row(20), :])
        assert arch.metadata["init_from"] == {"path": src.path, "step": 20, "run_id": src.run_id}
    a, b = (trajkit.open_archive(r["path"]) for r in s["runs"])
    assert not np.array_equal(a.params[-1, :], b.params[-1, :])   # different noise per replica


def test_init_from_with_another_model_is_refused_before_writing(tmp_path):
    first = run_experiment(None, tmp_path / "sgd", TINY, quiet=True)
    out = tmp_path / "lang"
    with pytest.raises(ConfigError, match=r"its model does not match this run's \(hidden: \[5\] vs \[7\]\)"):
        run_experiment(None, out, [*TINY, "model.hidden=[7]", f'run.init_from="{first["runs"][0]["path"]}@last"'],
                       quiet=True)
    assert not out.exists()
    with pytest.raises(ConfigError, match="step 3 is not a snapshot"):
        run_experiment(None, out, [*TINY, f'run.init_from="{first["runs"][0]["path"]}@3"'], quiet=True)
    assert not out.exists()


def test_stored_config_reproduces_the_run(tmp_path):
    s = run_experiment(None, tmp_path / "ens", [*TINY, "run.replicas=3", "run.seed=11"], quiet=True)
    original = trajkit.open_archive(s["runs"][2]["path"])
    cfg = config_from_archive(original.path)
    assert cfg["run"]["seed"] == 13 and cfg["run"]["replicas"] == 1
    again = run_experiment(cfg, tmp_path / "again", quiet=True)
    copy = trajkit.open_archive(again["runs"][0]["path"])
    np.testing.assert_allclose(copy.params[:, :], original.params[:, :], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(copy.steps, original.steps)
    assert copy.metadata["model"]["spec"] == original.metadata["model"]["spec"]


@pytest.mark.slow
def test_sweep_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path):
    """A real crash: SIGKILL the CLI while the second sweep point trains, then rerun the same command."""
    import signal
    import subprocess
    import sys
    import time

    over = [*TINY, "run.steps=3000", "snapshots.every=100", "run.replicas=2",
            "sweep.dynamics.temperature=[0.001, 0.01]"]
    ref = run_experiment(None, tmp_path / "ref", over, quiet=True)
    out = tmp_path / "ens"
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    cmd = [sys.executable, "-c", "from trajkit.cli import main; main()", "record", "--out", str(out), "-q",
           "--config", str(empty), *[a for o in over for a in ("--set", o)]]
    proc = subprocess.Popen(cmd)
    target = out / "temperature=0.01_r01.trajkit"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if trajkit.open_archive(target).n_snapshots >= 14:   # past the first trace hand-over
                break
        except trajkit.TrajkitError:
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    doc = json.loads((out / "ensemble.json").read_text())
    assert [r["status"] for r in doc["runs"]] == ["done", "done", "pending", "pending"]
    assert trajkit.open_archive(target).trace["step"].size >= 1024      # so the resume starts mid-run
    run_experiment(None, out, over, quiet=True)
    doc = json.loads((out / "ensemble.json").read_text())
    assert [r["status"] for r in doc["runs"]] == ["done"] * 4
    for a, b in zip(ref["runs"], doc["runs"], strict=True):
        x, y = trajkit.open_archive(a["path"]), trajkit.open_archive(out / b["path"])
        np.testing.assert_array_equal(x.steps, y.steps)
        np.testing.assert_array_equal(x.params[:, :], y.params[:, :])
        np.testing.assert_array_equal(x.trace["loss"], y.trace["loss"])
