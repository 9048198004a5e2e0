"""ensemble.json: one module reads and writes it, against schemas/ensemble.schema.json, atomically."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

import trajkit
from trajkit.archive.ensemble_file import EnsembleFileError, read_ensemble_file, write_ensemble_file
from trajkit.cli import cli
from trajkit.errors import ConfigError
from trajkit.experiments import run_experiment

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "ensemble.schema.json"
TINY = ['data.name="teacher"', "data.n_train=48", "data.n_test=16", "data.dim=4", "model.hidden=[5]",
        'loss.name="quadratic_hinge"', "run.steps=10", 'snapshots.schedule="linear"', "snapshots.every=5",
        "run.replicas=2", "sweep.dynamics.lr=[0.05, 0.1]"]


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    out = tmp_path_factory.mktemp("ens") / "runs"
    run_experiment(None, out, TINY, quiet=True)
    return out


def _validator():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_validates_what_the_runner_writes(ensemble):
    doc = json.loads((ensemble / "ensemble.json").read_text())
    assert list(_validator().iter_errors(doc)) == []
    assert [r["status"] for r in doc["runs"]] == ["done"] * 4 and doc["sweep"] == {"dynamics.lr": [0.05, 0.1]}
    assert read_ensemble_file(ensemble) == doc
    assert not [p for p in ensemble.iterdir() if p.name.startswith(".ensemble.json")]   # no temp file left


def test_schema_validates_a_synthetic_ensemble(tmp_path):
    import numpy as np

    from trajkit.synthetic import write_ensemble

    root = write_ensemble(tmp_path / "syn", [{"steps": [0, 1], "params": np.zeros((2, 3), np.float32),
                                              "coords": {"dynamics.temperature": 0.1}}])
    assert list(_validator().iter_errors(json.loads((root / "ensemble.json").read_text()))) == []


def test_schema_refuses_what_it_should():
    v = _validator()
    good = {"format": "trajkit-ensemble", "version": 1, "id": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
            "config": {}, "sweep": {}, "runs": [{"path": "r00.trajkit", "replica": 0, "coords": {},
                                                 "run_id": None, "status": "pending", "reason": None}]}
    assert list(v.iter_errors(good)) == []
    for broken in ({**good, "runs": [{**good["runs"][0], "status": "finished"}]},
                   {**good, "runs": [{**good["runs"][0], "replica": -1}]},
                   {**good, "runs": [{**good["runs"][0], "path": "/abs.trajkit"}]},
                   {k: v for k, v in good.items() if k != "runs"},
                   {**good, "version": 2}):
        assert list(v.iter_errors(broken)), broken


@pytest.mark.parametrize("corrupt, message", [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: text.replace('"status": "done"', '"status": "finished"', 1),
     "invalid ensemble file at /runs/0/status"),
    (lambda text: text.replace('"trajkit-ensemble"', '"other"'), "not a trajkit ensemble file"),
    (lambda text: text.replace('"version": 1', '"version": 7'), "ensemble format v7 is newer"),
], ids=["truncated", "bad-status", "format", "version"])
def test_a_corrupted_ensemble_json_is_one_line_naming_the_file(ensemble, tmp_path, corrupt, message):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(ensemble, out)
    f = out / "ensemble.json"
    f.write_text(corrupt(f.read_text()))
    for call, cls in ((lambda: read_ensemble_file(out), EnsembleFileError),
                      (lambda: run_experiment(None, out, TINY, quiet=True), ConfigError),
                      (lambda: trajkit.analysis.open_ensemble(out), trajkit.TrajkitError)):
        with pytest.raises(cls) as e:
            call()
        text = str(e.value)
        assert "\n" not in text and text.startswith(str(f)) and message in text
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    res = CliRunner().invoke(cli, ["record", "--config", str(empty), "--out", str(out), "-q",
                                   *[a for o in TINY for a in ("--set", o)]])
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_an_invalid_document_is_never_written(ensemble, tmp_path):
    before = (ensemble / "ensemble.json").read_bytes()
    doc = json.loads(before)
    doc["runs"][0]["status"] = "half-done"
    with pytest.raises(EnsembleFileError, match=r"ensemble\.json: invalid ensemble file at /runs/0/status"):
        write_ensemble_file(ensemble, doc)
    assert (ensemble / "ensemble.json").read_bytes() == before
    assert not [p for p in ensemble.iterdir() if p.name.startswith(".ensemble.json")]
