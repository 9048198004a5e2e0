"""The landscape plugins on real recorded ensembles (trajkit record → archives → analyses), the rebuild of
a run, the model registry hook, and every listed bad input (one-line error, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import trajkit
from trajkit.analysis import hookimpl
from trajkit.analysis.plugins import register_plugin, unregister_plugin
from trajkit.archive import create
from trajkit.errors import AnalysisError, TrajkitError
from trajkit.experiments import rebuild, run_experiment
from trajkit.landscape import apply_permutations, feedforward_spec, random_permutations

BASE = {"model": {"kind": "mlp", "hidden": [16]}, "data": {"name": "digits"},
        "dynamics": {"kind": "sgd", "lr": 0.1, "batch_size": 32},
        "run": {"steps": 200, "replicas": 4, "seed": 0}, "snapshots": {"schedule": "log", "n": 8}}


def _config(**sections):
    cfg = json.loads(json.dumps(BASE))
    for sec, values in sections.items():
        cfg[sec].update(values)
    return cfg


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("landscape") / "ens"
    run_experiment(_config(), out, quiet=True)
    return out


def _runs(ens: Path) -> list[Path]:
    return sorted(ens.glob("*.trajkit"))


def _copy_run(src: Path, dst: Path, params: np.ndarray) -> Path:
    """A new archive holding ``params`` at ``src``'s last step, with ``src``'s model/data/loss metadata."""
    a = trajkit.open_archive(src)
    meta = {k: a.metadata[k] for k in ("model", "dataset", "loss", "dynamics") if k in a.metadata}
    with create(dst, a.n_params, metadata=meta, layout=a.layout) as w:
        w.append(int(a.steps[-1]), params.astype(np.float32))
    return dst


@pytest.fixture(scope="module")
def permuted_copies(ensemble, tmp_path_factory) -> list[Path]:
    """Run 0 and two hidden-unit-permuted copies of it: the same function, three labellings."""
    d = tmp_path_factory.mktemp("perm")
    a = trajkit.open_archive(_runs(ensemble)[0])
    w = np.asarray(a.params[a.n_snapshots - 1:a.n_snapshots, :])[0]
    spec = feedforward_spec(a.layout)
    paths = [_copy_run(_runs(ensemble)[0], d / "p0.trajkit", w)]
    for k in (1, 2):
        wp = apply_permutations(w, a.layout, spec, random_permutations(spec, seed=k))
        paths.append(_copy_run(_runs(ensemble)[0], d / f"p{k}.trajkit", wp))
    return paths


def test_align_archives(permuted_copies, ensemble):
    from trajkit.landscape import align

    aligned, perms, info = align(permuted_copies[0], permuted_copies[1])
    assert info["distance_raw"] > 0.05 and info["distance"] < 1e-6
    w0 = np.asarray(trajkit.open_archive(permuted_copies[0]).params[-1:, :])[0]
    np.testing.assert_allclose(aligned, w0, atol=1e-6)
    assert set(perms) == {"P0"}
    steps = trajkit.open_archive(_runs(ensemble)[0]).steps
    missing = next(s for s in range(1, 200) if s not in steps)
    with pytest.raises(TrajkitError, match="not a snapshot"):
        align(_runs(ensemble)[0], _runs(ensemble)[1], step=missing)


def test_rebuild_reproduces_the_recorded_losses(ensemble):
    for path in _runs(ensemble)[:2]:
        a = trajkit.open_archive(path)
        rb = rebuild(a)
        assert rb.step == int(a.steps[-1])
        for split in ("train", "test"):
            ev = rb.evaluate(rb.params, split)
            assert ev["loss"][0] == pytest.approx(a.metrics[f"{split}_loss"][-1], rel=1e-5)
            assert ev["accuracy"][0] == pytest.approx(a.metrics[f"{split}_acc"][-1], abs=1e-6)
        x = torch.as_tensor(rb.data.X_train[:5])
        with torch.no_grad():
            direct = rb.module(x)
        W = np.stack([rb.params, rb.params * 0.5])
        batched = rb.loss(W)
        assert batched[0] == pytest.approx(a.metrics["train_loss"][-1], rel=1e-5)
        assert batched[1] != pytest.approx(batched[0])
        assert direct.shape == (5, 10)
        step = int(a.steps[2])
        np.testing.assert_array_equal(rebuild(a, step).params, np.asarray(a.params[2:3, :])[0])


def test_minima_on_a_recorded_ensemble(ensemble):
    res = trajkit.analyze("minima", [ensemble], n_clusters=2, shuffles=10)
    w = np.stack([np.asarray(trajkit.open_archive(p).params[-1:, :])[0] for p in _runs(ensemble)]).astype(float)
    want = np.linalg.norm(w[:, None] - w[None], axis=2) / np.sqrt(w.shape[1])
    np.testing.assert_allclose(res["distance"], want, rtol=1e-6)
    iu = np.triu_indices(4, 1)
    assert np.all(res["distance_aligned"][iu] < res["distance"][iu])
    assert res["linkage"].shape == (3, 4)
    assert res["labels"].shape == (4,) and set(res["labels"].tolist()) == {0, 1}
    assert 0 <= res["ultrametricity"] <= 1
    assert res["step"] == 200
    assert res.arrays["pq"].shape == (30,)


def test_permuted_copies_are_one_minimum_with_zero_aligned_barrier(permuted_copies):
    res = trajkit.analyze("minima", permuted_copies, shuffles=5)
    iu = np.triu_indices(3, 1)
    assert np.all(res["distance"][iu] > 0.05)
    np.testing.assert_allclose(res["distance_aligned"], 0.0, atol=1e-6)
    np.testing.assert_allclose(res["q_aligned"], 1.0, atol=1e-6)
    inter = trajkit.analyze("interpolation", permuted_copies, points=9)
    np.testing.assert_allclose(inter["barrier_train_aligned"], 0.0, atol=1e-5)
    np.testing.assert_allclose(inter["barrier_test_aligned"], 0.0, atol=1e-5)
    assert np.all(inter["barrier_train"] > 1e-3)  # the unaligned midpoint is a different network
    assert inter["barrier_train_matrix"].shape == (3, 3)


def test_interpolation_paths_end_at_the_runs_losses(ensemble):
    res = trajkit.analyze("interpolation", [ensemble], pairs="0:1,2:3", points=5)
    assert res["path_train"].shape == (2, 5)
    for i, (a, b) in enumerate([(0, 1), (2, 3)]):
        la = trajkit.open_archive(_runs(ensemble)[a]).metrics["train_loss"][-1]
        lb = trajkit.open_archive(_runs(ensemble)[b]).metrics["train_loss"][-1]
        assert res["path_train"][i, 0] == pytest.approx(la, rel=1e-5)
        assert res["path_train"][i, -1] == pytest.approx(lb, rel=1e-5)
        assert res["path_train_aligned"][i, -1] == pytest.approx(lb, rel=1e-5)  # same function
    assert np.all(np.asarray(res["barrier_train"]) >= 0)
    assert np.isnan(res["barrier_train_matrix"][0, 2])


def test_rugosity_statistics_and_cache(ensemble, tmp_path, tree_digest):
    before = {p.name: tree_digest(p) for p in _runs(ensemble)}
    kw = dict(directions=3, points=7, deltas=[0.01, 0.02], walks=1, walk_steps=12, n_boot=50)
    res = trajkit.analyze("rugosity", [ensemble], cache=str(tmp_path / "cache"), **kw)
    assert res["profiles"].shape == (4, 3, 7) and res["walks"].shape == (4, 2, 1, 13)
    for i, p in enumerate(_runs(ensemble)):
        m = trajkit.open_archive(p).metrics
        assert res["gap"][i] == pytest.approx(m["test_loss"][-1] - m["train_loss"][-1], abs=1e-5)
        assert res["profiles"][i, :, 3] == pytest.approx(m["train_loss"][-1], rel=1e-5)
    assert np.all(res["sharpness"] > 0) and np.all(res["rugosity"] >= 1)
    for s in ("sharpness", "rugosity", "increment_exponent", "correlation_length"):
        assert -1 <= res[f"spearman_{s}"] <= 1 and len(res[f"spearman_{s}_ci"]) == 2
        assert f"pearson_{s}_ci" in res.scalars and f"spearman_{s}_acc" in res.scalars
    assert len(list((tmp_path / "cache").glob("probes-*.npz"))) == 4
    again = trajkit.analyze("rugosity", [ensemble], cache=str(tmp_path / "cache"), **kw)
    np.testing.assert_array_equal(again["walks"], res["walks"])
    fresh = trajkit.analyze("rugosity", [ensemble], **kw)  # same seed without the cache: same probes
    np.testing.assert_allclose(fresh["profiles"], res["profiles"], rtol=1e-6)
    assert {p.name: tree_digest(p) for p in _runs(ensemble)} == before
    with pytest.raises(AnalysisError, match="inside the archive"):
        trajkit.analyze("rugosity", [ensemble], cache=str(_runs(ensemble)[0] / "probes"), **kw)
    assert {p.name: tree_digest(p) for p in _runs(ensemble)} == before


def test_plots_draw(ensemble, permuted_copies):
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    for name, data, kw in (("minima", [ensemble], {"shuffles": 5}),
                           ("interpolation", permuted_copies, {"points": 5}),
                           ("rugosity", [ensemble], {"directions": 2, "points": 5, "walk_steps": 5,
                                                     "n_boot": 20})):
        fig = trajkit.analyze(name, data, **kw).plot()
        assert len(fig.axes) >= 2


# -- third-party models through the trajkit_register_models hook ---------------------------------------------


class TinyNet(torch.nn.Module):
    def __init__(self, width: int = 5):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, width)
        self.fc2 = torch.nn.Linear(width, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _foreign_runs(d: Path, n: int = 3) -> list[Path]:
    from trajkit.archive.layout import layout_from_named_parameters

    paths = []
    for r in range(n):
        torch.manual_seed(r)
        net = TinyNet()
        layout = layout_from_named_parameters(list(net.named_parameters()))
        w = torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy()
        meta = {"model": {"class": "tests.TinyNet", "kwargs": {"width": 5}}, "loss": {"name": "cross_entropy"}}
        with create(d / f"f{r}.trajkit", w.size, metadata=meta, layout=layout) as wr:
            wr.append(10, w)
        paths.append(d / f"f{r}.trajkit")
    return paths


def test_unregistered_model_says_how_to_register(tmp_path, tree_digest):
    paths = _foreign_runs(tmp_path)
    before = [tree_digest(p) for p in paths]
    with pytest.raises(AnalysisError, match=r"tests\.TinyNet.*trajkit_register_models"):
        trajkit.analyze("minima", paths)
    with pytest.raises(AnalysisError, match="trajkit_register_models"):
        rebuild(paths[0])
    assert [tree_digest(p) for p in paths] == before


def test_registered_third_party_model_is_rebuildable_and_aligned(tmp_path):
    paths = _foreign_runs(tmp_path)
    plugin = types.SimpleNamespace()

    @hookimpl
    def trajkit_register_models(register):
        register("tests.TinyNet", factory=lambda spec: TinyNet(**spec),
                 symmetries={"H": [("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1)]})

    plugin.trajkit_register_models = trajkit_register_models
    register_plugin(plugin, "tiny-models")
    try:
        res = trajkit.analyze("minima", paths, shuffles=5)
        iu = np.triu_indices(3, 1)
        assert np.all(res["distance_aligned"][iu] <= res["distance"][iu] + 1e-12)
        rng = np.random.default_rng(0)
        data = {"X_train": rng.standard_normal((20, 64)), "y_train": rng.integers(0, 10, 20),
                "X_test": rng.standard_normal((8, 64)), "y_test": rng.integers(0, 10, 8)}
        rb = rebuild(paths[0], data=data)
        x = torch.as_tensor(data["X_train"], dtype=torch.float32)
        with torch.no_grad():
            want = torch.nn.functional.cross_entropy(rb.module(x), torch.as_tensor(data["y_train"])).item()
        assert rb.loss(rb.params)[0] == pytest.approx(want, rel=1e-5)  # vmap(functional_call) path
        with pytest.raises(AnalysisError, match=r"dataset\.spec"):
            trajkit.analyze("rugosity", paths)
    finally:
        unregister_plugin("tiny-models")


# -- bad input ---------------------------------------------------------------------------------------------


def test_different_architectures_in_one_ensemble(ensemble, tmp_path, tree_digest):
    other = tmp_path / "narrow"
    run_experiment(_config(model={"hidden": [8]}, run={"steps": 20, "replicas": 1}), other, quiet=True)
    tanh = tmp_path / "tanh"
    run_experiment(_config(model={"activation": "tanh"}, run={"steps": 200, "replicas": 1}), tanh, quiet=True)
    runs = _runs(ensemble)
    before = [tree_digest(p) for p in runs]
    with pytest.raises(AnalysisError, match="differ in parameter count"):       # pooled only when asked
        trajkit.analyze("minima", [*runs, *_runs(other)], group_by="none")
    with pytest.raises(AnalysisError, match="different model metadata"):
        trajkit.analyze("minima", [*runs, *_runs(tanh)], group_by="none")
    with pytest.raises(AnalysisError, match="different model metadata"):
        trajkit.analyze("interpolation", [runs[0], *_runs(tanh)], group_by="none")
    with pytest.raises(AnalysisError, match=r"group model\.spec\.activation=tanh \(1 run\): clustering needs at "
                                            r"least 3 runs"):                 # by default: one result per model
        trajkit.analyze("minima", [*runs, *_runs(tanh)])
    assert [tree_digest(p) for p in runs] == before


def test_fewer_than_three_runs_for_clustering(ensemble):
    with pytest.raises(AnalysisError, match="at least 3 runs"):
        trajkit.analyze("minima", _runs(ensemble)[:2])


@pytest.mark.parametrize("radius", [0, -0.5])
def test_radius_must_be_positive_and_is_checked_before_reading(radius, tmp_path):
    with pytest.raises(AnalysisError, match="radius"):
        trajkit.analyze("rugosity", [tmp_path / "does-not-exist.trajkit"], radius=radius)


def test_step_that_is_not_a_snapshot(ensemble):
    steps = trajkit.open_archive(_runs(ensemble)[0]).steps
    missing = next(s for s in range(1, 200) if s not in steps)
    for name in ("minima", "interpolation", "rugosity"):
        with pytest.raises(TrajkitError, match=f"step {missing} is not a snapshot"):
            trajkit.analyze(name, [ensemble], step=missing)
    with pytest.raises(TrajkitError, match="not a snapshot"):
        rebuild(_runs(ensemble)[0], missing)


def test_cli_end_to_end_and_bad_input(ensemble, tmp_path, tree_digest):
    exe = [str(Path(sys.executable).parent / "trajkit")]
    out = tmp_path / "out"
    proc = subprocess.run([*exe, "analyze", "--plugin", "minima", "-p", "shuffles=5", str(ensemble),
                           "--out", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert 0 <= doc["scalars"]["ultrametricity"] <= 1
    assert (out / "result.json").exists() and (out / "minima.png").exists()
    before = [tree_digest(p) for p in _runs(ensemble)]
    bad = tmp_path / "bad"
    proc = subprocess.run([*exe, "analyze", "--plugin", "minima", str(_runs(ensemble)[0]), str(_runs(ensemble)[1]),
                           "--out", str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "at least 3 runs" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert not bad.exists()
    assert [tree_digest(p) for p in _runs(ensemble)] == before


# -- one step for every run: schedules may differ (issue 13.9) -------------------------------------------------


def _reschedule(src: Path, dst: Path, steps: list[int]) -> Path:
    """``src``'s run with snapshots at ``steps``: its last snapshot's parameters at its last step (which
    ``steps`` must contain), its first snapshot's parameters at every other step."""
    a = trajkit.open_archive(src)
    first, last = (np.asarray(a.params[i:i + 1, :], dtype=np.float32)[0] for i in (0, a.n_snapshots - 1))
    meta = {k: a.metadata[k] for k in ("model", "dataset", "loss", "dynamics") if k in a.metadata}
    with create(dst, a.n_params, metadata=meta, layout=a.layout) as w:
        for s in sorted(steps):
            w.append(s, last if s == int(a.steps[-1]) else first)
    return dst


@pytest.fixture(scope="module")
def rescheduled(ensemble, tmp_path_factory) -> list[Path]:
    """The four runs, each with its own schedule, all sharing step 200 (their last)."""
    d = tmp_path_factory.mktemp("resched")
    return [_reschedule(p, d / f"s{r}.trajkit", [3 + r, 40 + 7 * r, 200]) for r, p in enumerate(_runs(ensemble))]


def test_landscape_analyses_accept_runs_that_share_the_step(ensemble, rescheduled):
    steps = [trajkit.open_archive(p).steps.tolist() for p in rescheduled]
    assert len({tuple(s) for s in steps}) == 4    # four different schedules
    with pytest.raises(TrajkitError, match="differ in snapshot steps"):
        trajkit.analyze("overlaps", rescheduled)  # the dynamics still need one schedule
    want = trajkit.analyze("minima", [ensemble], shuffles=5)
    got = trajkit.analyze("minima", rescheduled, shuffles=5)
    assert got["step"] == want["step"] == 200
    for key in ("distance", "distance_aligned", "q_aligned", "linkage"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12)
    inter = trajkit.analyze("interpolation", rescheduled, pairs="0:1", points=3)
    ref = trajkit.analyze("interpolation", [ensemble], pairs="0:1", points=3)
    np.testing.assert_allclose(inter["path_train"], ref["path_train"], rtol=1e-12)
    kw = dict(directions=1, points=3, deltas=[0.01, 0.02], walks=1, walk_steps=12, n_boot=10)
    rug = trajkit.analyze("rugosity", rescheduled, **kw)
    np.testing.assert_allclose(rug["profiles"], trajkit.analyze("rugosity", [ensemble], **kw)["profiles"],
                               rtol=1e-12)


def test_a_chosen_step_is_taken_in_every_run(ensemble, rescheduled, tmp_path, tree_digest):
    longer = _reschedule(_runs(ensemble)[3], tmp_path / "longer.trajkit", [5, 200, 300])
    runs = [*rescheduled[:3], longer]
    before = [tree_digest(p) for p in runs]
    with pytest.raises(AnalysisError, match=r"runs end at different steps .*: 200, .*longer\.trajkit: 300\); pass "
                                            r"step=S, a snapshot of every run \(the last step every run has is 200\)"):
        trajkit.analyze("minima", runs)
    res = trajkit.analyze("minima", runs, step=200, shuffles=5)
    ref = trajkit.analyze("minima", [ensemble], shuffles=5)
    np.testing.assert_allclose(res["distance"], ref["distance"], rtol=1e-12)
    assert res["step"] == 200
    with pytest.raises(AnalysisError) as e:
        trajkit.analyze("minima", runs, step=47)     # a snapshot of run 1 only (40 + 7)
    msg = str(e.value)
    assert "\n" not in msg and "s0.trajkit: step 47 is not a snapshot (nearest snapshots: 40 and 200)" in msg
    assert "pass step=S, a snapshot of every run (the last step every run has is 200)" in msg
    assert [tree_digest(p) for p in runs] == before


def test_runs_of_different_architectures_are_refused_whatever_their_schedules(ensemble, rescheduled, tmp_path):
    narrow = tmp_path / "narrow"
    run_experiment(_config(model={"hidden": [8]}, run={"steps": 200, "replicas": 1},
                           snapshots={"schedule": "log", "n": 4}), narrow, quiet=True)
    with pytest.raises(AnalysisError, match="differ in parameter count"):
        trajkit.analyze("minima", [*rescheduled, *_runs(narrow)])
    with pytest.raises(AnalysisError, match="differ in parameter count"):
        trajkit.analyze("interpolation", [rescheduled[0], *_runs(narrow)])
