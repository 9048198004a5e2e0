"""``model.n_params`` with ``model.depth``: the width whose total parameter count is closest to N."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from trajkit.cli import cli
from trajkit.errors import ConfigError
from trajkit.experiments import run_experiment
from trajkit.experiments.models import count_parameters, width_for_n_params


def _mlp_count(w, depth, D=64, K=10):
    """An MLP with ``depth`` hidden layers of width w and biases: D·w + (d−1)·w² + K·w + (d·w + K)."""
    return D * w + (depth - 1) * w * w + K * w + depth * w + K


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("target", [1000, 5000, 20011])
def test_mlp_width_is_the_closest_count(depth, target):
    model = {"kind": "mlp", "hidden": [1], "bias": True, "activation": "relu", "depth": depth, "n_params": target,
             "width": 1}
    w = width_for_n_params(model, (8, 8), 10)
    widths = np.arange(1, 3000)
    best = widths[np.argmin(np.abs(_mlp_count(widths, depth) - target))]
    assert w == best
    spec = {"kind": "mlp", "in_features": 64, "hidden": [w] * depth, "out_features": 10, "bias": True,
            "activation": "relu"}
    assert count_parameters(spec) == _mlp_count(w, depth)


def test_depth_swept_at_fixed_n_and_reported_in_the_dry_run(tmp_path):
    args = ["model.n_params=5000", "sweep.model.depth=[1, 2, 3]", "run.steps=5"]
    s = run_experiment(None, tmp_path / "out", args, dry_run=True, quiet=True)
    got = {r["coords"]["model.depth"]: (r["width"], r["n_params"]) for r in s["runs"]}
    for depth, (w, n) in got.items():
        assert n == _mlp_count(w, depth)
        assert abs(n - 5000) <= min(abs(_mlp_count(w + d, depth) - 5000) for d in (-1, 1))
    assert got[2] == (42, 4966)           # w² + 76 w + 10: 4966 at w = 42, 5127 at w = 43
    res = CliRunner().invoke(cli, ["record", "--out", str(tmp_path / "out"), "--dry-run", "--config",
                                   str(_toml(tmp_path)), *[x for a in args for x in ("--set", a)]])
    assert res.exit_code == 0, res.output
    assert "model.n_params = 5000 -> width 42 (4966 parameters)" in res.output
    assert not (tmp_path / "out").exists()


def _toml(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nkind = "mlp"\n')
    return p


def test_rnn_width_for_n_params(tmp_path):
    s = run_experiment(None, tmp_path / "o", ['model.kind="rnn"', "model.depth=2", "model.n_params=3000"],
                       dry_run=True, quiet=True)
    row = s["runs"][0]
    spec = {"kind": "rnn", "seq_len": 8, "input_size": 8, "depth": 2, "out_features": 10, "bias": True,
            "activation": "tanh"}
    counts = {w: count_parameters({**spec, "width": w}) for w in range(1, 60)}
    assert row["width"] == min(counts, key=lambda w: (abs(counts[w] - 3000), w))
    assert row["n_params"] == counts[row["width"]]


def test_unreachable_and_cnn_are_refused(tmp_path):
    smallest = _mlp_count(1, 3)           # 89
    with pytest.raises(ConfigError, match=r"model\.n_params = 50 is unreachable with model\.depth = 3: the smallest "
                                          rf"mlp of that depth \(width 1\) has {smallest} parameters") as e:
        run_experiment(None, tmp_path / "o", ["model.n_params=50", "model.depth=3"], quiet=True)
    assert "\n" not in str(e.value) and not (tmp_path / "o").exists()
    res = CliRunner().invoke(cli, ["record", "--config", str(_toml(tmp_path)), "--out", str(tmp_path / "o"),
                                   "--set", "model.n_params=50", "--set", "model.depth=3"])
    assert res.exit_code != 0 and "unreachable" in res.output and "Traceback" not in res.output
    with pytest.raises(ConfigError, match="applies to mlp and rnn"):
        run_experiment(None, tmp_path / "o", ['model.kind="cnn"', "model.n_params=500"], quiet=True)
    assert not (tmp_path / "o").exists()
