"""Results: save → load round trip, schema validation, CSV tables, plotting; ensembles and their checks."""

from __future__ import annotations

import csv
import json
import uuid

import numpy as np
import pytest

import trajkit
from trajkit.analysis import Result, open_ensemble
from trajkit.archive.metadata import schema_problems
from trajkit.errors import AnalysisError


def _result() -> Result:
    tw = np.array([10, 100])
    steps = np.array([1, 10, 100, 1000])
    msd = np.array([[np.nan, 0.0, 0.5, 1.5], [np.nan, np.nan, 0.0, 0.7]])
    r = Result(arrays={"msd": (msd, ("tw_step", "step")), "loss": (np.array([3.0, 2.0, 1.0, 0.5]), ("step",)),
                       "q": np.array([0.9, 0.8, 0.7, 0.6])},
               coords={"tw_step": tw, "step": steps},
               scalars={"beta": 0.5, "beta_ci": [0.45, 0.55], "tau": float("nan"), "regime": "simple",
                        "converged": True, "peaks": np.array([1.0, 2.0])},
               params={"waiting_times": [10, 100]},
               provenance={"analysis": "demo", "analysis_version": "1.0", "plugin": "p", "distribution": None,
                           "plugin_version": None, "trajkit_version": trajkit.__version__, "run_ids": ["abc"],
                           "inputs": ["run.trajkit"], "created": "2026-01-01T00:00:00+00:00",
                           "device": "cpu"})
    return r


def test_save_load_round_trip_and_schema(tmp_path):
    r = _result()
    r.save(tmp_path / "res")
    doc = json.loads((tmp_path / "res" / "result.json").read_text())
    assert schema_problems(doc, "result.schema.json") == []
    assert doc["scalars"]["tau"] is None                         # NaN has no JSON form
    back = trajkit.load_result(tmp_path / "res")
    np.testing.assert_array_equal(back.arrays["msd"], r.arrays["msd"])
    assert back.dims["msd"] == ("tw_step", "step") and back.dims["q"] == ("dim_0",)
    np.testing.assert_array_equal(back.coords["step"], [1, 10, 100, 1000])
    assert back.scalars["beta_ci"] == [0.45, 0.55] and back.scalars["regime"] == "simple"
    assert back.scalars["peaks"] == [1.0, 2.0] and back["beta"] == 0.5
    assert back.params == {"waiting_times": [10, 100]} and back.provenance["run_ids"] == ["abc"]


def test_csv_tables(tmp_path):
    _result().save(tmp_path)
    rows = list(csv.reader(open(tmp_path / "step.csv")))
    assert rows[0] == ["step", "loss"] and rows[1] == ["1", "3.0"]
    long = list(csv.reader(open(tmp_path / "msd.csv")))
    assert long[0] == ["tw_step", "step", "value"] and len(long) == 1 + 8
    assert ["100", "1000", "0.7"] in long and ["10", "1", ""] in long
    scal = dict(csv.reader(open(tmp_path / "scalars.csv")))
    assert scal["beta_ci"] == "[0.45, 0.55]" and scal["tau"] == ""


def test_invalid_results_are_refused(tmp_path):
    with pytest.raises(AnalysisError, match="axis 1 \\(step\\) has length 3, coordinate 'step' has 4"):
        Result(arrays={"x": (np.zeros((2, 3)), ("tw_step", "step"))}, coords={"step": np.arange(4)})
    with pytest.raises(AnalysisError, match="name 'bad name' is invalid"):
        Result(scalars={"bad name": 1})
    with pytest.raises(AnalysisError, match="dtype object"):
        Result(arrays={"x": np.array([{}, 1], dtype=object)})
    r = _result()
    r.provenance = {}
    with pytest.raises(AnalysisError, match=r"fails schemas/result\.schema\.json at /provenance"):
        r.save(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnalysisError, match=r"no result\.json"):
        trajkit.load_result(tmp_path / "empty")


def test_generic_plot_returns_a_figure(tmp_path):
    from matplotlib.figure import Figure

    r = _result()
    r.save(tmp_path)
    fig = trajkit.load_result(tmp_path).plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    fig.savefig(tmp_path / "x.png")


def _run(path, steps, n=6, meta=None):
    with trajkit.archive.create(path, n_params=n, metadata=meta) as w:
        for s in steps:
            w.append(s, np.full(n, s, dtype=np.float32))
    return path


def test_ensemble_directory_globs_and_groups(tmp_path):
    d = tmp_path / "sweep"
    d.mkdir()
    runs = []
    for i, temp in enumerate([1e-4, 1e-4, 1e-3]):
        _run(d / f"r{i}.trajkit", [0, 1, 5], meta={"dynamics.temperature": temp})
        runs.append({"path": f"r{i}.trajkit", "replica": i, "coords": {"dynamics.temperature": temp},
                     "run_id": None, "status": "done", "reason": None})
    runs.append({"path": "r3.trajkit", "replica": 3, "coords": {}, "run_id": None, "status": "diverged",
                 "reason": "NaN at step 40"})
    (d / "ensemble.json").write_text(json.dumps({"format": "trajkit-ensemble", "version": 1, "id": str(uuid.uuid4()),
                                                 "config": {}, "sweep": {}, "runs": runs}))
    with pytest.warns(UserWarning, match=r"r3.trajkit \(diverged: NaN at step 40\)"):
        ens = open_ensemble(d)
    assert len(ens) == 3 and list(ens.steps) == [0, 1, 5] and ens.n_params == 6
    groups = ens.groups("dynamics.temperature")
    assert list(groups) == [1e-4, 1e-3] and [len(g) for g in groups.values()] == [2, 1]
    assert len(open_ensemble(str(d / "r*.trajkit"))) == 3
    with pytest.raises(AnalysisError, match=r"has no metadata key 'model\.width'"):
        ens.metadata("model.width")


def test_ensemble_mismatch_names_both_runs(tmp_path):
    a = _run(tmp_path / "a.trajkit", [0, 1, 5])
    b = _run(tmp_path / "b.trajkit", [0, 2, 5])
    c = _run(tmp_path / "c.trajkit", [0, 1, 5], n=7)
    with pytest.raises(AnalysisError, match=r"a.trajkit .* and .*b.trajkit .*row 1 is step 1 vs 2"):
        open_ensemble([a, b])
    with pytest.raises(AnalysisError, match=r"N=6, .*c\.trajkit .* has N=7"):
        open_ensemble([a, c])
    with pytest.raises(AnalysisError, match="glob matches nothing"):
        open_ensemble(str(tmp_path / "zz*.trajkit"))
