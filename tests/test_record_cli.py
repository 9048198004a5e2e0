"""``trajkit record`` end to end through the real click entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import trajkit
from trajkit.cli import cli

CONFIG = """
[model]
kind = "mlp"
hidden = [6]
[data]
name = "pca_parity"
components = 4
n_train = 120
n_test = 40
[loss]
name = "quadratic_hinge"
[dynamics]
kind = "langevin"
lr = 0.05
temperature = 1e-3
[run]
steps = 40
replicas = 2
[snapshots]
schedule = "log"
n = 8
[sweep]
"dynamics.temperature" = [1e-4, 1e-3]
"""


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "exp.toml"
    p.write_text(CONFIG)
    return p


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_record_sweep_prints_summary_and_info_reads_a_run(tmp_path, config):
    out = tmp_path / "ens"
    res = invoke("record", "--config", str(config), "--out", str(out), "--set", "run.seed=3")
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "ensemble.json").read_text())
    assert len(doc["runs"]) == 4 and {r["status"] for r in doc["runs"]} == {"done"}
    for r in doc["runs"]:
        assert r["path"] in res.output
    assert "train_loss" in res.output and "4 runs in" in res.output
    arch = trajkit.open_archive(out / doc["runs"][3]["path"])
    assert arch.metadata["seed"] == 4 and arch.steps[-1] == 40
    info = invoke("info", str(out / doc["runs"][3]["path"]))
    assert info.exit_code == 0 and "langevin" in info.output


def test_quiet_prints_nothing(tmp_path, config):
    res = invoke("record", "--config", str(config), "--out", str(tmp_path / "ens"), "-q", "--set", "run.replicas=1",
                 "--set", "sweep.dynamics.temperature=[1e-3]")
    assert res.exit_code == 0 and res.output == ""


def test_dry_run_lists_runs_and_writes_nothing(tmp_path, config):
    out = tmp_path / "ens"
    res = invoke("record", "--config", str(config), "--out", str(out), "--dry-run")
    assert res.exit_code == 0
    assert "temperature=0.0001_r01.trajkit" in res.output and "estimated disk use" in res.output
    assert "4 runs" in res.output
    assert not out.exists()


def test_from_archive_reproduces_the_run(tmp_path, config):
    out = tmp_path / "ens"
    assert invoke("record", "--config", str(config), "--out", str(out), "-q").exit_code == 0
    run = out / "temperature=0.001_r01.trajkit"
    res = invoke("record", "--from-archive", str(run), "--out", str(tmp_path / "again"), "-q")
    assert res.exit_code == 0
    a, b = trajkit.open_archive(run), trajkit.open_archive(tmp_path / "again" / "r00.trajkit")
    np.testing.assert_allclose(b.params[:, :], a.params[:, :], rtol=1e-5, atol=1e-6)
    assert b.metadata["dynamics"]["temperature"] == 1e-3 and b.metadata["seed"] == 1


def _error_line(res):
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("trajkit: error: "), res.output
    assert "Traceback" not in res.output
    return lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "dynamics.temprature=1"], "did you mean dynamics.temperature?"),
    (["--set", "run.replicas=0"], "run.replicas = 0 is out of range"),
    (["--set", "dynamics.lr=0"], "dynamics.lr = 0.0 is out of range"),
    (["--set", "dynamics.temperature=-1"], "dynamics.temperature = -1.0 is out of range"),
    (["--set", "run.steps=\"many\""], "run.steps must be an integer"),
    (["--set", "sweep.model.widht=[3]"], "did you mean model.width?"),
    (["--set", "model.kind=\"cnn\""], "needs image data"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, config, args, message):
    out = tmp_path / "ens"
    line = _error_line(invoke("record", "--config", str(config), "--out", str(out), *args))
    assert message in line
    assert not out.exists()


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[run]\nstep = 10\n")
    line = _error_line(invoke("record", "--config", str(p), "--out", str(tmp_path / "o")))
    assert "unknown config key run.step; did you mean run.steps?" in line
    assert not (tmp_path / "o").exists()


def test_out_is_a_file(tmp_path, config):
    f = tmp_path / "f"
    f.write_text("x")
    assert "is a file" in _error_line(invoke("record", "--config", str(config), "--out", str(f)))
    assert f.read_text() == "x"


def test_config_and_from_archive_are_exclusive(tmp_path, config):
    assert "exactly one of" in _error_line(invoke("record", "--out", str(tmp_path / "o")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present, so cuda is not an error here")
def test_cuda_without_gpu_is_a_clear_error(tmp_path, config):
    out = tmp_path / "ens"
    line = _error_line(invoke("record", "--config", str(config), "--out", str(out), "--device", "cuda"))
    assert "no CUDA GPU" in line and "--device cpu" in line
    assert not out.exists()


def test_npz_problems_are_named(tmp_path, config):
    np.savez(tmp_path / "d.npz", X_train=np.zeros((5, 3)), y_train=np.zeros(5, int), X_test=np.zeros((2, 3)))
    out = tmp_path / "ens"
    line = _error_line(invoke("record", "--config", str(config), "--out", str(out), "--set", 'data.name="npz"',
                              "--set", f'data.path="{tmp_path / "d.npz"}"'))
    assert "missing array y_test" in line
    assert not out.exists()
