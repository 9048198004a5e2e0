"""Experiment configs: defaults, ``--set`` parsing, sweep expansion and every bad-input error."""

from __future__ import annotations

import numpy as np
import pytest

from trajkit.errors import ConfigError
from trajkit.experiments import load_config, run_experiment
from trajkit.experiments.config import (
    SCHEMA,
    config_diff,
    parse_override,
    point_config,
    replica_config,
    sweep_points,
)
from trajkit.experiments.datasets import build_dataset


def test_defaults_fill_every_key():
    cfg = load_config(None)
    for sec, keys in SCHEMA.items():
        assert set(cfg[sec]) == set(keys)
    assert cfg["sweep"] == {}
    assert cfg["dynamics"]["kind"] == "sgd" and cfg["run"]["replicas"] == 1


def test_example_config_loads_verbatim():
    cfg = load_config("examples/langevin_digits.toml")
    assert cfg["dynamics"]["temperature"] == 1e-4
    assert cfg["sweep"] == {"dynamics.temperature": [1e-5, 1e-4, 1e-3]}
    assert len(sweep_points(cfg)) == 3


@pytest.mark.parametrize(("text", "key", "value"), [
    ("dynamics.temperature=1e-4", "dynamics.temperature", 1e-4),
    ("run.steps=10", "run.steps", 10),
    ("model.hidden=[64, 64]", "model.hidden", [64, 64]),
    ("data.name=teacher", "data.name", "teacher"),
    ('data.name="teacher"', "data.name", "teacher"),
    ("model.bias=false", "model.bias", False),
])
def test_parse_override_reads_toml_values(text, key, value):
    assert parse_override(text) == (key, value)


def test_overrides_apply_and_int_becomes_float():
    cfg = load_config(None, ["dynamics.lr=1", "sweep.run.seed=[0, 1]", "model.hidden=[]"])
    assert cfg["dynamics"]["lr"] == 1.0 and isinstance(cfg["dynamics"]["lr"], float)
    assert cfg["sweep"] == {"run.seed": [0, 1]}
    assert cfg["model"]["hidden"] == []


def test_sweep_is_cartesian_product_in_listed_order():
    cfg = load_config(None, ['sweep.dynamics.lr=[0.1, 0.2]', 'sweep.model.hidden=[[4], [8, 8], [16]]'])
    pts = sweep_points(cfg)
    assert len(pts) == 6
    assert pts[0] == {"dynamics.lr": 0.1, "model.hidden": [4]}
    assert pts[1] == {"dynamics.lr": 0.1, "model.hidden": [8, 8]}
    assert pts[5] == {"dynamics.lr": 0.2, "model.hidden": [16]}
    pc = point_config(cfg, pts[4])
    assert pc["dynamics"]["lr"] == 0.2 and pc["model"]["hidden"] == [8, 8] and pc["sweep"] == {}


def test_replica_config_is_seed_plus_replica_and_fills_placeholder(tmp_path):
    cfg = load_config(None, ["run.seed=7", "run.replicas=4", f'run.init_from="{tmp_path}/r{{replica:02d}}.trajkit@5"'])
    rc = replica_config(cfg, 3)
    assert rc["run"]["seed"] == 10 and rc["run"]["replicas"] == 1
    assert rc["run"]["init_from"] == f"{tmp_path}/r03.trajkit@5"


BAD = [
    (["model.hiden=[4]"], "unknown config key model.hiden; did you mean model.hidden?"),
    (["modle.kind=\"mlp\""], "unknown section [modle]; did you mean model?"),
    (["run.steps=\"ten\""], "run.steps must be an integer"),
    (["run.steps=10.5"], "run.steps must be an integer"),
    (["model.bias=1"], "model.bias must be true or false"),
    (["dynamics.kind=\"langevin\"", "dynamics.temperature=-1e-3"], "dynamics.temperature = -0.001 is out of range"),
    (["dynamics.lr=0"], "dynamics.lr = 0.0 is out of range: must be > 0"),
    (["dynamics.lr=-0.1"], "dynamics.lr = -0.1 is out of range"),
    (["run.replicas=0"], "run.replicas = 0 is out of range: must be >= 1"),
    (["dynamics.kind=\"adam\""], "dynamics.kind = 'adam' is not one of sgd, gd, langevin"),
    (["sweep.dynamics.temprature=[1e-3]"], "unknown config key 'dynamics.temprature'; did you mean "
                                             "dynamics.temperature?"),
    (["sweep.dynamics.lr=[0.1, -0.1]"], "sweep dynamics.lr = -0.1 is out of range"),
    (["sweep.dynamics.lr=0.1"], "give a non-empty list"),
    (["dynamics.momentum=0.9", "dynamics.kind=\"gd\""], "dynamics.momentum = 0.9 applies to sgd only"),
    (["dynamics.temperature=0.1"], "applies to langevin only"),
    (["data.name=\"npz\""], "data.path is required"),
    (["run.init_from=\"x.trajkit@abc\""], "must be a step number or 'last'"),
    (["run.device=\"tpu\""], "use cpu, cuda or cuda:K"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_config_is_one_line_error_and_nothing_written(tmp_path, overrides, message):
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as e:
        run_experiment(None, out, overrides, quiet=True)
    text = str(e.value)
    assert message in text
    assert "\n" not in text
    assert not out.exists()


def test_unknown_section_in_file_suggests_closest(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[dynamcs]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config section \[dynamcs\]; did you mean dynamics\?"):
        load_config(p)


def test_malformed_toml_and_missing_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[run\nsteps = 1\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(("arrays", "message"), [
    ({"X_train": np.zeros((4, 2)), "y_train": np.zeros(4, int), "X_test": np.zeros((2, 2))}, "missing array y_test"),
    ({"X_train": np.zeros((4, 2)), "y_train": np.zeros(3, int), "X_test": np.zeros((2, 2)),
      "y_test": np.zeros(2, int)}, "X_train has 4 samples but y_train has 3"),
    ({"X_train": np.zeros((4, 2)), "y_train": np.zeros(4, int), "X_test": np.zeros((2, 3)),
      "y_test": np.zeros(2, int)}, "X_train samples have shape (2,) but X_test samples (3,)"),
])
def test_bad_npz_is_reported_before_anything_is_written(tmp_path, arrays, message):
    path = _write_npz(tmp_path / "d.npz", **arrays)
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as e:
        run_experiment(None, out, ['data.name="npz"', f'data.path="{path}"'], quiet=True)
    assert message in str(e.value) and "d.npz" in str(e.value)
    assert not out.exists()


def test_missing_npz_file(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="no such file"):
        run_experiment(None, out, ['data.name="npz"', f'data.path="{tmp_path}/nope.npz"'], quiet=True)
    assert not out.exists()


def test_npz_dataset_round_trip_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    path = _write_npz(tmp_path / "d.npz", X_train=rng.normal(size=(10, 3, 2)), y_train=rng.choice([-1, 1], 10),
                      X_test=rng.normal(size=(4, 3, 2)), y_test=rng.choice([-1, 1], 4))
    ds = build_dataset({"name": "npz", "path": str(path)})
    assert ds.input_shape == (3, 2) and ds.X_train.shape == (10, 6) and ds.n_classes == 2
    assert set(np.unique(ds.y_train)) <= {0, 1}
    assert ds.spec["sha256"]
    np.savez(path, X_train=np.zeros((10, 6)), y_train=np.zeros(10, int), X_test=np.zeros((4, 6)),
             y_test=np.zeros(4, int))
    with pytest.raises(ConfigError, match="the file changed"):
        build_dataset(ds.spec)


def test_every_config_key_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "EXPERIMENTS.md").read_text()
    for sec, keys in SCHEMA.items():
        assert f"### [{sec}]" in doc
        for k in keys:
            assert f"| `{k}` |" in doc, f"{sec}.{k} missing from docs/EXPERIMENTS.md"


def test_config_diff_takes_a_missing_key_as_its_default():
    old = {"run": {"steps": 5}, "metrics": {}}                     # recorded before run.dtype and [metrics]
    assert config_diff(old, {"run": {"steps": 5, "dtype": "float32"}, "metrics": {"gradient_stats": False}}) is None
    assert config_diff(old, {"run": {"steps": 5, "dtype": "float64"}}) == "run.dtype: 'float32' vs 'float64'"
