"""Multi-stage protocols (``[[stages]]``): each stage starts bit for bit where its parent stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import trajkit
from trajkit.cli import cli
from trajkit.errors import ConfigError
from trajkit.experiments import load_config, run_experiment

ROOT = Path(__file__).resolve().parents[1]

PROTOCOL = """
[model]
hidden = [5]
[data]
name = "teacher"
n_train = 60
n_test = 20
dim = 4
[loss]
name = "mse"
[dynamics]
kind = "sgd"
lr = 0.05
batch_size = 10
[run]
steps = 12
replicas = 2
[snapshots]
schedule = "linear"
every = 4
[sweep]
"dynamics.weight_decay" = [0.0, 0.01]

[[stages]]
name = "sgd"

[[stages]]
name = "polish"
steps = 6
[stages.dynamics]
kind = "gd"

[[stages]]
name = "polish_slow"
steps = 6
[stages.dynamics]
kind = "gd"
lr = 0.005

[[stages]]
name = "langevin"
steps = 8
[stages.dynamics]
kind = "langevin"
[stages.sweep]
"dynamics.temperature" = [1e-4, 1e-3]
"""


def _write(tmp_path, text=PROTOCOL) -> Path:
    p = tmp_path / "protocol.toml"
    p.write_text(text)
    return p


def _archives(out: Path, stage: str) -> dict[tuple, trajkit.Archive]:
    """``{(weight_decay, temperature or None, replica): archive}`` of one stage."""
    doc = json.loads((out / stage / "ensemble.json").read_text())
    out_map = {}
    for e in doc["runs"]:
        c = e["coords"]
        out_map[(c["dynamics.weight_decay"], c.get("dynamics.temperature"), e["replica"])] = \
            trajkit.open_archive(out / stage / e["path"])
    return out_map


def test_each_stage_starts_bit_for_bit_from_its_parents_last_snapshot(tmp_path):
    out = tmp_path / "out"
    s = run_experiment(_write(tmp_path), out, quiet=True, threads=1)
    assert s["stages"] == ["sgd", "polish", "polish_slow", "langevin"]
    assert s["n_runs"] == 4 + 4 + 4 + 8 and {r["status"] for r in s["runs"]} == {"done"}
    runs = {st: _archives(out, st) for st in s["stages"]}
    for parent, child in (("sgd", "polish"), ("polish", "polish_slow"), ("polish_slow", "langevin")):
        for (wd, _, r), arch in runs[child].items():
            par = runs[parent][(wd, None, r)]
            np.testing.assert_array_equal(arch.params[0, :], par.params[par.n_snapshots - 1, :])
            meta = arch.metadata
            assert meta["stage"]["name"] == child
            assert meta["stage"]["parent"] == {"stage": parent, "path": str(Path(par.path).resolve()),
                                               "run_id": par.run_id, "step": int(par.steps[-1])}
            assert meta["init_from"]["run_id"] == par.run_id
            assert meta["dynamics"]["weight_decay"] == wd
    assert runs["sgd"][(0.0, None, 0)].metadata["stage"] == {"name": "sgd", "index": 0, "parent": None}
    assert runs["polish"][(0.0, None, 1)].metadata["dynamics"]["kind"] == "gd"
    slow = runs["polish_slow"][(0.01, None, 0)].metadata
    assert slow["dynamics"]["lr"] == 0.005 and slow["stage"]["index"] == 2
    lang = runs["langevin"][(0.01, 1e-3, 1)]
    assert lang.metadata["dynamics"]["temperature"] == 1e-3 and int(lang.steps[-1]) == 8
    assert int(runs["polish"][(0.0, None, 0)].steps[-1]) == 6
    # the two temperatures fan out from the same parent and then differ (the noise)
    a, b = runs["langevin"][(0.0, 1e-4, 0)], runs["langevin"][(0.0, 1e-3, 0)]
    np.testing.assert_array_equal(a.params[0, :], b.params[0, :])
    assert not np.array_equal(a.params[a.n_snapshots - 1, :], b.params[b.n_snapshots - 1, :])
    # a stage run reproduces from its own stored config (its init_from is the parent's archive)
    again = run_experiment(lang.metadata["config"], tmp_path / "again", quiet=True, threads=1)
    np.testing.assert_array_equal(trajkit.open_archive(again["runs"][0]["path"]).params[:, :], lang.params[:, :])


@pytest.mark.slow
def test_resume_goes_stage_by_stage(tmp_path):
    out = tmp_path / "out"
    cfg = _write(tmp_path)
    run_experiment(cfg, out, quiet=True, threads=1)
    before = {p: p.stat().st_mtime_ns for st in ("sgd", "polish") for p in (out / st).rglob("*")
              if p.is_file() and p.name != "ensemble.json"}
    finished = _archives(out, "langevin")
    ids = {k: a.run_id for k, a in _archives(out, "polish_slow").items()}
    for p in sorted((out / "langevin").rglob("*"), reverse=True):      # the last stage was interrupted:
        p.unlink() if p.is_file() else p.rmdir()                        # its folder is gone
    doc = json.loads((out / "polish_slow" / "ensemble.json").read_text())
    doc["runs"][0]["status"] = "pending"                                 # and one run of the stage before
    (out / "polish_slow" / "ensemble.json").write_text(json.dumps(doc))
    s = run_experiment(cfg, out, quiet=True, threads=1)
    assert {r["status"] for r in s["runs"]} == {"done"}
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before                                                # finished stages skipped
    resumed = _archives(out, "polish_slow")
    assert {k: a.run_id for k, a in resumed.items()} == ids               # resumed in place, not recreated
    for k, arch in _archives(out, "langevin").items():
        np.testing.assert_array_equal(arch.params[:, :], finished[k].params[:, :])
        assert arch.metadata["stage"]["parent"]["run_id"] == ids[(k[0], None, k[2])]


def test_example_protocol_and_its_dry_run(tmp_path):
    example = ROOT / "examples" / "sgd_polish_langevin.toml"
    cfg = load_config(example)
    assert [st["name"] for st in cfg["stages"]] == ["sgd", "polish", "polish_slow", "langevin"]
    assert cfg["dynamics"]["batch_size"] == 100
    assert cfg["stages"][2]["dynamics"]["lr"] == pytest.approx(cfg["dynamics"]["lr"] / 10)
    res = CliRunner().invoke(cli, ["record", "--config", str(example), "--out", str(tmp_path / "o"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "langevin/temperature=0.001_r03.trajkit" in res.output and "sgd/r00.trajkit" in res.output
    assert "24 runs" in res.output and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_example_protocol_runs_scaled_down(tmp_path):
    s = run_experiment(ROOT / "examples" / "sgd_polish_langevin.toml", tmp_path / "o",
                       ["run.replicas=1", "data.n_train=200", "run.steps=200", "snapshots.n=8",
                        "metrics.gradient_batches=4"], quiet=True, threads=1)
    assert {r["status"] for r in s["runs"]} == {"done"} and s["n_runs"] == 6
    lang = trajkit.open_archive(next(r["path"] for r in s["runs"] if r["stage"] == "langevin"))
    assert lang.metadata["stage"]["parent"]["stage"] == "polish_slow"
    assert np.isfinite(lang.metrics["noise_D"]).all()


@pytest.mark.parametrize(("stage", "match"), [
    ('[stages.model]\nhidden = [7]\n', r"cannot change the architecture \(\[model\]\)"),
    ('[stages.sweep]\n"model.hidden" = [[3], [4]]\n', r"sweep 'model.hidden'.*cannot change the architecture"),
    ('[stages.data]\nn_train = 30\n', r"cannot change \[data\]"),
    ('[stages.run]\nreplicas = 3\n', r"unknown stage key 'run'"),
    ('[stages.dynamics]\nweight_decay = 0.1\n', r"dynamics\.weight_decay is set by the stage and swept"),
    ('[stages.dynamics]\nkind = "gd"\nmomentum = 0.5\n', r"stages\[1\] \('bad'\): dynamics\.momentum = 0\.5"),
    ('[stages.sweep]\n"dynamics.weight_decay" = [0.1]\n', r"already swept"),
])
def test_bad_stages_are_refused_before_anything_is_written(tmp_path, stage, match):
    text = PROTOCOL.split("[[stages]]\nname = \"polish\"")[0] + f'[[stages]]\nname = "bad"\n{stage}'
    with pytest.raises(ConfigError, match=match) as e:
        run_experiment(_write(tmp_path, text), tmp_path / "out", quiet=True)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
    res = CliRunner().invoke(cli, ["record", "--config", str(tmp_path / "protocol.toml"), "--out",
                                   str(tmp_path / "out")])
    assert res.exit_code != 0 and "Traceback" not in res.output and not (tmp_path / "out").exists()


def test_an_out_dir_with_other_content_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"holds 'notes\.txt', which is no stage of this protocol"):
        run_experiment(_write(tmp_path), out, quiet=True)
    assert os.listdir(out) == ["notes.txt"]
