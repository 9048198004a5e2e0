"""Ensemble analyses never pool sweep points silently (trajkit.analysis.grouping).

A real 3-temperature × 4-replica sweep recorded with `trajkit record`: chi4, overlaps and aging on the
ensemble directory give one result per temperature, each equal to the analysis of that temperature's runs
alone; group_by=none pools and says so; grouped results save, load and plot one subfigure per group."""

from __future__ import annotations

import json
import warnings

import matplotlib
import numpy as np
import pytest
from click.testing import CliRunner

import trajkit
from trajkit import synthetic
from trajkit.analysis import grouping
from trajkit.analysis.ensemble import open_ensemble
from trajkit.analysis.grouping import GroupingNotice
from trajkit.analysis.plugins import register_plugin, unregister_plugin
from trajkit.analysis.result import load_result
from trajkit.cli import cli
from trajkit.errors import AnalysisError

matplotlib.use("Agg")
TEMPS = [1e-4, 1e-3, 1e-2]
CONFIG = """
[model]
kind = "mlp"
hidden = [8]
[data]
name = "digits"
[loss]
name = "cross_entropy"
[dynamics]
kind = "langevin"
lr = 0.1
[run]
steps = 40
seed = 0
replicas = 4
[snapshots]
schedule = "log"
n = 10
[sweep]
"dynamics.temperature" = [1e-4, 1e-3, 1e-2]
"""
ANALYSES = {
    "chi4": {"n_waiting_times": 3, "n_boot": 20},
    "overlaps": {"n_waiting_times": 3},
    "aging": {"n_waiting_times": 3, "n_boot": 10},
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The recorded sweep directory and, per temperature, the paths of its four runs (read from ensemble.json)."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "sweep.toml").write_text(CONFIG)
    res = CliRunner().invoke(cli, ["record", "--config", str(root / "sweep.toml"), "--out", str(root / "ens"), "-q"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads((root / "ens" / "ensemble.json").read_text())
    by_t = {t: [str(root / "ens" / r["path"]) for r in doc["runs"] if r["coords"]["dynamics.temperature"] == t]
            for t in TEMPS}
    assert [len(v) for v in by_t.values()] == [4, 4, 4]
    return root / "ens", by_t


def _assert_same(got, want):
    """Every array and scalar of ``want`` equal in ``got`` (NaN = NaN)."""
    assert set(got.arrays) == set(want.arrays)
    for k, a in want.arrays.items():
        assert got.dims[k] == want.dims[k], k
        np.testing.assert_array_equal(got.arrays[k], a, err_msg=k)
    for d, c in want.coords.items():
        np.testing.assert_array_equal(got.coords[d], c, err_msg=d)
    assert set(got.scalars) == set(want.scalars)
    for k, v in want.scalars.items():
        np.testing.assert_array_equal(np.asarray(got.scalars[k], dtype=object if isinstance(v, str) else None),
                                      np.asarray(v, dtype=object if isinstance(v, str) else None), err_msg=k)


@pytest.mark.parametrize("name", list(ANALYSES))
def test_one_result_per_temperature_equal_to_each_temperature_alone(sweep, name):
    root, by_t = sweep
    r = trajkit.analyze(name, [root], **ANALYSES[name])
    assert r.is_grouped and r.n_groups == 3
    assert r.coords["group"].tolist() == [f"dynamics.temperature={t!r}" for t in TEMPS]
    np.testing.assert_array_equal(r.arrays["group.dynamics.temperature"], TEMPS)
    assert r.grouping["by"] == ["dynamics.temperature"]
    assert r.scalars["replicas"] == [4, 4, 4]
    for i, t in enumerate(TEMPS):
        alone = trajkit.analyze(name, by_t[t], **ANALYSES[name])
        assert not alone.is_grouped and alone.scalars["replicas"] == 4
        for k, a in alone.arrays.items():                    # the stacked arrays themselves, row i
            assert r.dims[k] == ("group", *alone.dims[k])
            np.testing.assert_array_equal(r.arrays[k][i], a, err_msg=k)
        _assert_same(r.group(i), alone)
        _assert_same(r.group(f"dynamics.temperature={t!r}"), alone)
        runs = {trajkit.open_archive(p).run_id for p in by_t[t]}
        assert set(r.grouping["runs"][i]) == runs == set(r.group(i).provenance["run_ids"])


def test_chi4_pooled_only_when_asked_and_then_stated(sweep):
    root, by_t = sweep
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pooled = trajkit.analyze("chi4", [root], group_by="none", **ANALYSES["chi4"])
    notices = [str(w.message) for w in caught if issubclass(w.category, GroupingNotice)]
    assert len(notices) == 1 and "\n" not in notices[0]
    assert "chi4: pooling 12 runs of 3 sweep points (dynamics.temperature=0.0001;" in notices[0]
    labels = [f"dynamics.temperature={t!r}" for t in TEMPS]
    assert not pooled.is_grouped and pooled.scalars["replicas"] == 12
    assert pooled.scalars["pooled_groups"] == labels and pooled.grouping["pooled"] == labels
    # the pooled chi4 is the variance over all 12 runs: not the per-temperature one
    grouped = trajkit.analyze("chi4", [root], **ANALYSES["chi4"])
    assert not np.allclose(pooled.arrays["chi4"], grouped.arrays["chi4"][0], equal_nan=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GroupingNotice)       # one sweep point: nothing pooled, nothing said
        alone = trajkit.analyze("chi4", by_t[TEMPS[0]], group_by="none", **ANALYSES["chi4"])
    assert "pooled_groups" not in alone.scalars


def test_grouped_result_saves_loads_and_plots_a_subfigure_per_group(sweep, tmp_path):
    root, _ = sweep
    r = trajkit.analyze("aging", [root], **ANALYSES["aging"])
    back = load_result(r.save(tmp_path / "aging"))
    assert back.is_grouped and back.grouping["labels"] == r.coords["group"].tolist()
    for k, a in r.arrays.items():
        assert back.dims[k] == r.dims[k]
        np.testing.assert_array_equal(back.arrays[k], a)
    for i in range(3):
        want, got = r.group(i), back.group(i)
        assert set(got.arrays) == set(want.arrays)
        for k in want.arrays:
            np.testing.assert_array_equal(got.arrays[k], want.arrays[k])
        assert got.scalars["regime"] == want.scalars["regime"]
    table = (tmp_path / "aging" / "group.csv").read_text().splitlines()
    assert table[0].startswith("group,group.dynamics.temperature,") and "regime" in table[0] and len(table) == 4
    fig = back.plot()
    assert len(fig.subfigs) == 3
    for sub, t in zip(fig.subfigs, TEMPS, strict=True):
        assert f"dynamics.temperature={t!r}" in sub._suptitle.get_text()
        assert sub.axes, "each group's subfigure has the analysis's panels"


def test_cli_prints_one_value_per_group(sweep):
    root, _ = sweep
    res = CliRunner().invoke(cli, ["analyze", "--plugin", "chi4", "-p", "n_waiting_times=3", "-p", "n_boot=20",
                                   str(root)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "3 groups by dynamics.temperature" in res.output and "  replicas = [4, 4, 4]" in res.output


STEPS = np.unique(np.concatenate([[0], np.rint(np.geomspace(1, 2000, 25))])).astype(np.int64)


def _runs(temps_replicas, steps_of=lambda t: STEPS, extra=None, n=200):
    runs = []
    for t, reps in temps_replicas:
        for r in range(reps):
            steps = steps_of(t)
            coords = {"dynamics.temperature": t, **((extra or {}).get(t, {}))}
            w = synthetic.langevin_flat(steps, n, t, 0.1, 100, seed=r + int(1e5 * t))
            runs.append({"steps": steps, "params": w, "replica": r, "coords": coords,
                         "metadata": {"dynamics": {"kind": "langevin", "lr": 0.1, "temperature": t}}})
    return runs


def test_different_waiting_time_grids_are_aligned_on_the_union_with_masks(tmp_path):
    short = STEPS[STEPS <= 300]
    root = synthetic.write_ensemble(tmp_path / "ens", _runs([(1e-3, 2), (1e-2, 2)],
                                                            steps_of=lambda t: short if t == 1e-2 else STEPS))
    r = trajkit.analyze("overlaps", [root], n_waiting_times=3, epsilon=0.01)
    alone = [trajkit.analyze("overlaps", sorted((root).glob(f"*temperature{t:g}_*")), n_waiting_times=3, epsilon=0.01)
             for t in (1e-3, 1e-2)]
    np.testing.assert_array_equal(r.coords["step"], STEPS)          # the union of the two schedules
    union_tw = np.union1d(alone[0].coords["tw_step"], alone[1].coords["tw_step"])
    np.testing.assert_array_equal(r.coords["tw_step"], union_tw)
    np.testing.assert_array_equal(r.arrays["group_mask.step"][1], np.isin(STEPS, short))
    msd = r.arrays["msd"][1]                                         # NaN where group 1 has no row/column
    assert np.all(np.isnan(msd[~r.arrays["group_mask.tw_step"][1]]))
    assert np.all(np.isnan(msd[:, ~r.arrays["group_mask.step"][1]]))
    for i in range(2):
        view = r.group(i)
        for k, a in alone[i].arrays.items():
            np.testing.assert_array_equal(view.arrays[k], a, err_msg=k)
        np.testing.assert_array_equal(view.coords["tw_step"], alone[i].coords["tw_step"])


def test_a_group_that_cannot_be_analysed_is_named_in_one_line(tmp_path):
    root = synthetic.write_ensemble(tmp_path / "ens", _runs([(1e-3, 3), (1e-2, 1)]))
    with pytest.raises(AnalysisError) as e:
        trajkit.analyze("chi4", [root], n_waiting_times=3, n_boot=10)
    msg = str(e.value)
    assert "\n" not in msg
    assert "group dynamics.temperature=0.01 (1 run): chi4 needs at least 2 replicas" in msg
    assert msg.endswith("the inputs span 2 sweep points: dynamics.temperature=0.001 (3 runs), "
                        "dynamics.temperature=0.01 (1 run); analyse one of them (pass only its runs) or pool them "
                        "with -p group_by=none")
    # overlaps works per group; the one-replica group has no inter-replica overlap and says so
    r = trajkit.analyze("overlaps", [root], n_waiting_times=3, epsilon=0.01)
    assert r.grouping["absent"] == {"replica_overlap": [1]}
    assert "replica_overlap" in r.group(0).arrays and "replica_overlap" not in r.group(1).arrays


class _ShapeShifter:
    """A throwaway plugin whose result has other dims in different groups: the core refuses to stack it."""

    @staticmethod
    @trajkit.analysis.hookimpl
    def trajkit_register_analyses(register):
        from trajkit.analysis import Analysis, Result

        class ShapeShifter(Analysis):
            name = "shape-shifter"
            version = "1.0"
            description = "dims depend on the number of runs"
            needs = "ensemble"

            def compute(self, data, params, ctx):
                dims = ("a",) if len(data) == 1 else ("b",)
                return Result(arrays={"x": (np.zeros(2), dims)})

        register(ShapeShifter)


def test_results_that_cannot_be_aligned_are_refused_listing_the_groups(tmp_path):
    root = synthetic.write_ensemble(tmp_path / "ens", _runs([(1e-3, 2), (1e-2, 1)]))
    register_plugin(_ShapeShifter, "shape-shifter")
    try:
        with pytest.raises(AnalysisError) as e:
            trajkit.analyze("shape-shifter", [root])
        msg = str(e.value)
        assert "\n" not in msg and "array 'x' has dims ('b',) in one group and ('a',) in another" in msg
        assert "the inputs span 2 sweep points: dynamics.temperature=0.001 (2 runs), dynamics.temperature=0.01 " \
               "(1 run); analyse one of them (pass only its runs) or pool them with -p group_by=none" in msg
        with pytest.warns(GroupingNotice, match="shape-shifter: pooling 3 runs of 2 sweep points"):
            pooled = trajkit.analyze("shape-shifter", [root], group_by="none")
        assert pooled.scalars["pooled_groups"] == ["dynamics.temperature=0.001", "dynamics.temperature=0.01"]
    finally:
        unregister_plugin("shape-shifter")


def test_sweep_points_come_from_coords_or_metadata_not_seeds(tmp_path):
    # two separate recordings of one point (other ensemble ids, seeds, replica numbers): one group
    a = synthetic.write_ensemble(tmp_path / "a", _runs([(1e-3, 2)]))
    b = synthetic.write_ensemble(tmp_path / "b", _runs([(1e-3, 2)]))
    assert len(grouping.plan_groups(open_ensemble([a, b], check=False))) == 1
    # no ensemble.coords at all: the differing dynamics metadata makes the points
    paths = []
    for i, lr in enumerate([0.1, 0.1, 0.05, 0.05]):
        w = synthetic.brownian(STEPS, 50, 1e-3, seed=i)
        paths.append(synthetic.write_archive(tmp_path / f"lr{i}.trajkit", STEPS, w,
                                             metadata={"seed": i, "dynamics": {"kind": "sgd", "lr": lr}}))
    groups = grouping.plan_groups(open_ensemble(paths, check=False))
    assert [g.label for g in groups] == ["dynamics.lr=0.05", "dynamics.lr=0.1"]
    assert [len(g.ensemble) for g in groups] == [2, 2]
    # the coordinate is preferred to the metadata key it duplicates
    c = synthetic.write_ensemble(tmp_path / "c", _runs([(1e-3, 1), (1e-2, 1)]))
    assert [g.label for g in grouping.plan_groups(open_ensemble(c, check=False))] == \
        ["dynamics.temperature=0.001", "dynamics.temperature=0.01"]


def test_explicit_key_states_the_points_it_mixes(tmp_path):
    extra = {1e-3: {"dynamics.lr": 0.1}, 1e-2: {"dynamics.lr": 0.1}}
    runs = _runs([(1e-3, 2), (1e-2, 2)], extra=extra) + [
        dict(run, coords={**run["coords"], "dynamics.lr": 0.05}) for run in _runs([(1e-3, 2)])]
    root = synthetic.write_ensemble(tmp_path / "ens", runs)
    with pytest.warns(GroupingNotice, match=r"group_by=dynamics.temperature pools runs of different sweep points"):
        r = trajkit.analyze("overlaps", [root], group_by="dynamics.temperature", n_waiting_times=2, epsilon=0.01)
    assert r.coords["group"].tolist() == ["dynamics.temperature=0.001", "dynamics.temperature=0.01"]
    assert r.scalars["replicas"] == [4, 2]
    assert r.scalars["pooled_groups"][0] == ["dynamics.temperature=0.001, dynamics.lr=0.05",
                                             "dynamics.temperature=0.001, dynamics.lr=0.1"]
    assert r.scalars["pooled_groups"][1] == []
    auto = trajkit.analyze("overlaps", [root], n_waiting_times=2, epsilon=0.01)
    assert auto.n_groups == 3 and "pooled_groups" not in auto.scalars


def test_an_analysis_grouping_itself_is_left_alone_but_pooling_is_stated(tmp_path):
    root = synthetic.write_ensemble(tmp_path / "ens", _runs([(1e-3, 2), (1e-2, 2)]))
    r = trajkit.analyze("relaxation", [root], waiting_times=[0], epsilon=0.01, n_boot=0)
    assert not r.is_grouped and r.coords["temperature"].tolist() == [1e-3, 1e-2]   # its own grouping
    with pytest.warns(GroupingNotice):
        pooled = trajkit.analyze("relaxation", [root], waiting_times=[0], epsilon=0.01, group_by="none")
    assert pooled.scalars["pooled_groups"] == ["dynamics.temperature=0.001", "dynamics.temperature=0.01"]


def test_a_groups_analysis_mixing_sweep_points_says_so(sweep):
    root, _ = sweep
    with pytest.warns(GroupingNotice, match=r"loss: group_by=model.n_params mixes runs of different sweep points"):
        mixed = trajkit.analyze("loss", [root], n_boot=0)
    labels = [f"dynamics.temperature={t!r}" for t in TEMPS]
    assert mixed.scalars["groups"] == 1 and mixed.scalars["pooled_groups"] == [labels]
    with warnings.catch_warnings():
        warnings.simplefilter("error", GroupingNotice)
        split = trajkit.analyze("loss", [root], n_boot=0, group_by="dynamics.temperature")
    assert split.scalars["groups"] == 3 and "pooled_groups" not in split.scalars
