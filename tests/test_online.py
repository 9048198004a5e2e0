"""Online two-time observables (trajkit.online.TwoTime): the sums measured during a seeded run equal what the
pair kernels and the ``overlaps`` analysis compute from a dense archive of the same run; ``overlaps`` and
``aging`` read them with the same result keys; the ``online/`` arrays validate; bad inputs write nothing."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import trajkit
from trajkit.analysis import kernels
from trajkit.analysis.online import uses_online
from trajkit.archive import validate
from trajkit.archive.online import SUMS, online_rows
from trajkit.errors import AnalysisError, TrajkitError
from trajkit.online import TwoTime, log_lags

STEPS = 120
SPEC = TwoTime(waiting_times=[0, 10, 20], lags=log_lags(100, 8), per_layer=True)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def _train(path, schedule, online=None, seed=0, **kw) -> None:
    """A real seeded full-batch gradient-descent run, recorded at ``schedule`` with optional online sums
    (the update by hand: torch.optim's first use imports torch._dynamo, seconds on a loaded machine)."""
    model = _model()
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(64, 8, generator=g), torch.randn(64, 2, generator=g)
    _descend(model, x, y, [trajkit.Recorder(path, model, schedule=schedule, online=online, **kw)], STEPS, 0.05)


def _gd_step(model, x, y, lr) -> None:
    """One full-batch gradient-descent step on the squared error."""
    model.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad


def _descend(model, x, y, recs, steps, lr, start=0) -> None:
    """Full-batch gradient descent up to step ``steps``, every recorder in ``recs`` stepped at each from
    ``start`` (the model holds w(start): step 0, the initialisation, or a restored snapshot) and used as a
    context manager (closed at the end)."""
    with contextlib.ExitStack() as stack:
        for rec in recs:
            stack.enter_context(rec)
        for k in range(start, steps + 1):
            if k > start:
                _gd_step(model, x, y, lr)
            for rec in recs:
                rec.step(k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same seeded run twice: online sums with 3 sparse snapshots, and dense snapshots at every
    step the online grid measures (two replicas of each, seeds 0 and 1)."""
    d = tmp_path_factory.mktemp("online")
    dense_sched = trajkit.schedules.explicit(sorted(SPEC.steps() | {STEPS}))
    out = {"online": [], "dense": []}
    for seed in (0, 1):
        _train(d / f"on{seed}.trajkit", trajkit.schedules.log(1, STEPS, 2), SPEC, seed=seed)
        _train(d / f"dense{seed}.trajkit", dense_sched, seed=seed)
        out["online"].append(d / f"on{seed}.trajkit")
        out["dense"].append(d / f"dense{seed}.trajkit")
    return out


def test_online_sums_equal_the_pair_kernels_on_dense_snapshots(runs):
    on, dense = trajkit.open_archive(runs["online"][0]), trajkit.open_archive(runs["dense"][0])
    rows = online_rows(on)
    # every (tw, tw + t) of the grid that the run reached, lag 0 included
    want = sorted((tw, tw + t) for tw in SPEC.waiting_times for t in (0, *SPEC.lags) if tw + t <= STEPS)
    assert sorted(zip(rows.tw_step.tolist(), rows.step.tolist(), strict=True)) == want
    pairs = np.stack([np.searchsorted(dense.steps, rows.tw_step), np.searchsorted(dense.steps, rows.step)], axis=1)
    ref = kernels.pair_sums(dense, pairs, epsilon=rows.epsilon, per_layer=True)
    for name in SUMS:
        np.testing.assert_allclose(rows.sums[name], ref[name], rtol=1e-6, atol=0)
        np.testing.assert_allclose(rows.per_layer[name], ref[f"{name}_per_layer"], rtol=1e-6, atol=1e-300)
    assert rows.sums["sq"][rows.step == rows.tw_step].tolist() == [0.0] * 3      # lag 0: no motion
    # ε = std(w(tw)) / 10 over all parameters, as the overlaps default
    for tw, eps in zip(rows.tw_step, rows.epsilon, strict=True):
        w = dense.params[int(np.searchsorted(dense.steps, tw)), :].astype(np.float64)
        assert eps == pytest.approx(np.std(w) / 10.0, rel=1e-12)
    assert on.metadata["online"]["reference"] == "device"
    assert on.metadata["online"]["n_cols"] == on.n_params == 178


def test_overlaps_from_online_sums_equal_overlaps_from_dense_snapshots(runs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        on = trajkit.analyze("overlaps", runs["online"], waiting_times=[10, 20])
        de = trajkit.analyze("overlaps", runs["dense"], waiting_times=[10, 20])
    assert sorted(on.arrays) == sorted(de.arrays) and sorted(on.scalars) == sorted(de.scalars)
    assert on.coords["tw_step"].tolist() == de.coords["tw_step"].tolist() == [10, 20]
    cols = np.searchsorted(de.coords["step"], on.coords["step"])
    assert (de.coords["step"][cols] == on.coords["step"]).all()
    for name in ("overlap", "overlap_normalized", "msd", "self_overlap", "d4", "participation", "alpha2",
                 "msd_sem", "overlap_sem"):
        a, d = on.arrays[name], de.arrays[name][:, cols]
        measured = np.isfinite(a)
        assert measured.sum() >= 2 * len(SPEC.lags) - 2
        np.testing.assert_allclose(a[measured], d[measured], rtol=1e-6, atol=1e-12)
    assert np.isnan(on.arrays["disp_hist"]).all() and np.isnan(on.arrays["replica_overlap"]).all()


def test_lag_mode_from_online_sums_averages_the_waiting_times_as_origins(runs):
    """mode=lag on online sums: the origins are the recorded waiting times, the lags the recorded ones; each
    curve equals the mean over origins of the dense snapshots' waiting-mode values at (tw, tw + lag), and
    χ4 the pooled variance over replicas × origins of Q from the dense snapshots' pair kernels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        on = trajkit.analyze("overlaps", runs["online"], mode="lag")
        de = trajkit.analyze("overlaps", runs["dense"], waiting_times=[0, 10, 20])
        late = trajkit.analyze("overlaps", runs["online"], mode="lag", origin_min_step=10)
        chi = trajkit.analyze("chi4", runs["online"], mode="lag", n_boot=2)
    assert on.coords["lag"].tolist() == list(SPEC.lags)   # every recorded lag reached from some origin
    steps = de.coords["step"].tolist()
    for name in ("msd", "self_overlap", "overlap_normalized", "d4", "alpha2"):
        for i, lag in enumerate(SPEC.lags):
            cells = [de.arrays[name][k, steps.index(tw + lag)] for k, tw in enumerate(SPEC.waiting_times)
                     if tw + lag <= STEPS]
            assert on.arrays["n_pairs"][i] == len(cells)
            assert on.arrays[name][i] == pytest.approx(np.mean(cells), rel=1e-6, abs=1e-12), (name, lag)
    assert late.arrays["n_pairs"].tolist() == [2 if lag <= STEPS - 20 else 1 for lag in SPEC.lags]
    # χ4 = N var(Q) over the samples (replica, origin) of each lag, Q from the dense pair kernels
    n = trajkit.open_archive(runs["dense"][0]).n_params
    for i, lag in enumerate(SPEC.lags):
        q = []
        for path in runs["dense"]:
            arch = trajkit.open_archive(path)
            for tw in SPEC.waiting_times:
                if tw + lag <= STEPS:
                    a, b = (int(np.searchsorted(arch.steps, s)) for s in (tw, tw + lag))
                    wa, wb = (arch.params[r, :].astype(np.float64) for r in (a, b))
                    q.append(np.mean(np.abs(wb - wa) < np.std(wa) / 10.0))
        want = n * np.var(q) if len(q) >= 2 else np.nan
        assert chi.arrays["chi4"][i] == pytest.approx(want, rel=1e-6, abs=1e-12, nan_ok=True), lag


def test_aging_reads_online_sums_with_the_same_keys(runs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        on = trajkit.analyze("aging", runs["online"], waiting_times=[10, 20], n_boot=0)
        de = trajkit.analyze("aging", runs["dense"], waiting_times=[10, 20], n_boot=0)
    assert sorted(on.arrays) == sorted(de.arrays) and sorted(on.scalars) == sorted(de.scalars)
    cols = np.searchsorted(de.coords["step"], on.coords["step"])
    m = np.isfinite(on.arrays["msd"])
    np.testing.assert_allclose(on.arrays["msd"][m], de.arrays["msd"][:, cols][m], rtol=1e-6)


def test_dense_snapshots_covering_the_grid_use_the_kernels(runs, tmp_path):
    assert uses_online(trajkit.open_archive(runs["online"][0]))
    both = tmp_path / "both.trajkit"
    _train(both, trajkit.schedules.explicit(sorted(SPEC.steps() | {STEPS})), SPEC)
    assert not uses_online(trajkit.open_archive(both))


def test_online_arrays_validate_and_a_damaged_one_is_reported(runs, tmp_path):
    assert validate(runs["online"][0]) == []
    import shutil

    copy = tmp_path / "copy.trajkit"
    shutil.copytree(runs["online"][0], copy)
    doc = json.loads((copy / "online" / "zarr.json").read_text())
    doc["attributes"]["committed"] = 10_000
    (copy / "online" / "zarr.json").write_text(json.dumps(doc))
    problems = validate(copy)
    assert problems and all("committed" in p.message for p in problems)
    meta = json.loads((copy / "zarr.json").read_text())
    meta["attributes"]["trajkit"]["online"]["reference"] = "gpu"
    (copy / "zarr.json").write_text(json.dumps(meta))
    assert any("/online/reference" in p.message for p in validate(copy))


def test_analysis_parameters_must_match_what_was_measured(runs):
    for params, word in (({"select": "weights"}, "select='all'"), ({"epsilon": 0.1}, "epsilon_factor=10.0"),
                         ({"epsilon_factor": 5.0}, "epsilon_factor=10.0"),
                         ({"waiting_times": [15]}, "waiting time 15"),
                         ({"mode": "lag", "origin_min_step": 21}, "no online waiting time is at or after")):
        with pytest.raises(AnalysisError, match=word):
            trajkit.analyze("overlaps", runs["online"][0], **params)


def test_reduce_hook_runs_once_per_measured_step(tmp_path):
    calls = []

    def reduce(t):
        calls.append(tuple(t.shape))
        return t * 2

    spec = TwoTime(waiting_times=[5, 6], lags=[1, 2], reduce=reduce, epsilon=1e-3)
    _train(tmp_path / "r.trajkit", trajkit.schedules.log(1, STEPS, 3), spec)
    # steps 5 (tw 5 lag 0), 6 (tw 5 lag 1, tw 6 lag 0), 7 (both), 8 (tw 6 lag 2)
    assert calls == [(1, 6, 2), (2, 6, 2), (2, 6, 2), (1, 6, 2)]
    rows = online_rows(trajkit.open_archive(tmp_path / "r.trajkit"))
    assert rows.sums["theta"][rows.step == rows.tw_step].tolist() == [2 * 178.0, 2 * 178.0]


def test_online_select_and_per_layer_match_the_kernels_on_a_selection(tmp_path):
    spec = TwoTime(waiting_times=[3], lags=[4, 40], select="0.*", epsilon=1e-3)
    _train(tmp_path / "s.trajkit", trajkit.schedules.explicit([0, 3, 7, 43]), spec)
    arch = trajkit.open_archive(tmp_path / "s.trajkit")
    rows = online_rows(arch)
    ref = kernels.pair_sums(arch, [[1, 1], [1, 2], [1, 3]], cols=arch.select("0.*"), epsilon=1e-3)
    for name in SUMS:
        np.testing.assert_allclose(rows.sums[name], ref[name], rtol=1e-6)
    assert arch.metadata["online"]["n_cols"] == 8 * 16 + 16 and arch.metadata["online"]["layers"] == [0]


@pytest.mark.parametrize("kwargs, word", [
    ({"online": TwoTime(waiting_times=[10], lags=[1], select="nothing.*")}, "matches no parameters"),
    ({"online": TwoTime(waiting_times=[10, 500], lags=[1])}, "waiting time 500 is after the run's last step 120"),
    ({"online": "TwoTime"}, "takes a trajkit.online.TwoTime"),
])
def test_bad_online_input_writes_nothing(tmp_path, kwargs, word):
    path = tmp_path / "bad.trajkit"
    with pytest.raises(TrajkitError, match=word) as err:
        trajkit.Recorder(path, _model(), schedule=trajkit.schedules.log(1, STEPS, 5), **kwargs)
    assert "\n" not in str(err.value) and not path.exists()


@pytest.mark.parametrize("kwargs, word", [
    ({"waiting_times": [], "lags": [1]}, "non-empty"), ({"waiting_times": [1.5], "lags": [1]}, "integer"),
    ({"waiting_times": [-1], "lags": [1]}, ">= 0"), ({"waiting_times": [1], "lags": [0]}, ">= 1"),
    ({"waiting_times": [1], "lags": [1], "epsilon": -1.0}, "epsilon"),
    ({"waiting_times": [1], "lags": [1], "reference": "gpu"}, "reference"),
])
def test_bad_two_time_spec(kwargs, word):
    with pytest.raises(TrajkitError, match=word):
        TwoTime(**kwargs)


#: snapshots at every waiting time of SPEC (what a resumed online run reads w(tw) back from), and two more
RESUMABLE = trajkit.schedules.explicit([0, 10, 20, 35, 60, STEPS])


def _train_resumed(path, schedule, stop_at, online=SPEC, kill=False, **kw) -> int:
    """``_train``'s run (seed 0) stopped after step ``stop_at`` — closed, or (``kill``) a child process that
    SIGKILLs itself there, nothing flushed — then continued by a fresh model and Recorder (``resume='must'``)
    from the archive's last snapshot, as a checkpointed job restarts. Returns the step it resumed at."""
    model = _model()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.randn(64, 2, generator=g)
    if kill:
        code = textwrap.dedent(f"""
            import os, signal, sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            import torch, trajkit, test_online as t
            model = t._model()
            g = torch.Generator().manual_seed(0)
            x, y = torch.randn(64, 8, generator=g), torch.randn(64, 2, generator=g)
            rec = trajkit.Recorder({str(path)!r}, model, online=t.SPEC,
                                   schedule=trajkit.schedules.explicit({schedule.spec["steps"]}))
            for k in range({stop_at} + 1):
                if k:
                    t._gd_step(model, x, y, 0.05)
                rec.step(k)
            os.kill(os.getpid(), signal.SIGKILL)   # nothing closed, flushed or finalised
            """)
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert child.returncode == -signal.SIGKILL, child.stderr
    else:
        _descend(model, x, y, [trajkit.Recorder(path, model, schedule=schedule, online=online, **kw)], stop_at,
                 0.05)
    stopped = online_rows(trajkit.open_archive(path))
    model = _model()
    rec = trajkit.Recorder(path, model, schedule=schedule, online=online, resume="must", **kw)
    start = rec.restore()
    assert (stopped.step >= start).any() and stopped.step.max() <= stop_at   # rows to drop and redo
    _descend(model, x, y, [rec], STEPS, 0.05, start=start)
    return start


@pytest.mark.parametrize("kill", [False, True], ids=["closed", "sigkill"])
def test_a_resumed_online_run_measures_exactly_what_an_uninterrupted_one_does(tmp_path, kill):
    """Stopped at step 50 (closed, or killed) and resumed from the snapshot at 35: the rows measured at
    35..50 are dropped and measured again with w(0), w(10), w(20) read back from the snapshots, ε from the
    committed rows; every online array equals the uninterrupted run's bit for bit, and the archive
    validates."""
    whole, resumed = tmp_path / "whole.trajkit", tmp_path / "resumed.trajkit"
    _train(whole, RESUMABLE, SPEC)
    assert _train_resumed(resumed, RESUMABLE, 50, kill=kill) == 35
    want, got = online_rows(trajkit.open_archive(whole)), online_rows(trajkit.open_archive(resumed))
    assert got.n_rows == want.n_rows > 0 and (want.step > 50).any() and (want.step < 35).any()
    for name in ("tw_step", "step", "epsilon"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    for name in SUMS:
        np.testing.assert_array_equal(got.sums[name], want.sums[name])
        np.testing.assert_array_equal(got.per_layer[name], want.per_layer[name])
    assert validate(resumed) == []
    np.testing.assert_array_equal(trajkit.open_archive(resumed).steps, RESUMABLE.spec["steps"])


def test_resuming_an_online_run_that_cannot_go_on_fails_and_loses_nothing(tmp_path):
    """Waiting time 20 has no snapshot (schedule without it); bfloat16 snapshots of float32 parameters:
    the resumed run stops at its first step with one line naming the fix, and the archive keeps every row."""
    for name, schedule, kw, word in (
            ("gap", trajkit.schedules.explicit([0, 10, 35, 60]), {}, r"waiting time\(s\) \[20\] are still measured"),
            ("lossy", RESUMABLE, {"dtype": "bfloat16"}, "stored as bfloat16, the parameters are float32")):
        path = tmp_path / f"{name}.trajkit"
        _train(path, schedule, SPEC, **kw)   # the whole run: 120 steps
        before = online_rows(trajkit.open_archive(path))
        steps = trajkit.open_archive(path).steps.tolist()
        rec = trajkit.Recorder(path, _model(), schedule=schedule, online=SPEC, resume="must", **kw)
        with pytest.raises(TrajkitError, match=word) as err:
            rec.step(rec.restore())
        assert "\n" not in str(err.value)
        with pytest.raises(TrajkitError, match="recording stopped"):
            rec.step(36)
        rec.close()
        after = online_rows(trajkit.open_archive(path))
        assert trajkit.open_archive(path).steps.tolist() == steps and after.n_rows == before.n_rows
        np.testing.assert_array_equal(after.sums["sq"], before.sums["sq"])
        assert validate(path) == []


def test_resuming_with_another_online_spec_or_none_before_is_refused(runs, tmp_path):
    sched = trajkit.schedules.log(1, STEPS, 2)
    other = TwoTime(waiting_times=[0, 10, 20], lags=log_lags(100, 6), per_layer=True)
    with pytest.raises(TrajkitError, match=r"online= differs from the archive's /online \(lags: archive"):
        trajkit.Recorder(runs["online"][0], _model(), schedule=sched, online=other, resume="allow")
    with pytest.raises(TrajkitError, match="recorded without online observables"):
        trajkit.Recorder(runs["dense"][0], _model(), schedule=trajkit.schedules.explicit(
            sorted(SPEC.steps() | {STEPS})), online=SPEC, resume="allow")
    assert validate(runs["online"][0]) == [] and validate(runs["dense"][0]) == []


def test_an_archive_with_no_snapshots_is_analysed_from_its_online_sums(tmp_path):
    from click.testing import CliRunner

    from trajkit.cli import cli

    torch.manual_seed(3)
    model = torch.nn.Linear(4, 3)
    spec = TwoTime(waiting_times=[0, 3], lags=[1, 2, 4])
    path = tmp_path / "none.trajkit"
    moves = []
    with trajkit.Recorder(path, model, schedule=trajkit.schedules.explicit([]), online=spec) as rec:
        for k in range(10):
            with torch.no_grad():
                for p in model.parameters():
                    p += 0.01 * torch.randn_like(p)
            moves.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double())
            rec.step(k)
    assert trajkit.open_archive(path).n_snapshots == 0 and validate(path) == []
    res = trajkit.analyze("overlaps", path)         # every recorded waiting time, the measured steps
    assert res.coords["tw_step"].tolist() == [0, 3] and res.coords["step"].tolist() == [0, 1, 2, 3, 4, 5, 7]
    msd = float(((moves[7] - moves[3]) ** 2).mean())
    assert res.arrays["msd"][1, -1] == pytest.approx(msd, rel=1e-12)
    assert np.isnan(res.arrays["msd"][1, :3]).all() and np.isnan(res.arrays["msd"][0, 3])   # not measured
    text = CliRunner().invoke(cli, ["info", str(path)]).output
    assert "online          2 waiting times × 3 lags over select 'all': 8 measurements (t_w vectors kept on the " \
           "device)" in text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: online sums computed on the device")
@pytest.mark.parametrize("reference", ["device", "host"])
def test_online_sums_on_cuda_equal_the_pair_kernels_on_dense_snapshots(tmp_path, reference):
    """The same seeded run on the GPU: the sums are reduced on the device (the t_w vectors kept there, or in
    pinned host memory) and equal what the pair kernels compute from a dense archive of that CUDA run."""
    spec = TwoTime(waiting_times=[0, 10, 20], lags=log_lags(100, 8), reference=reference)
    model = _model().cuda()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g).cuda(), torch.randn(64, 2, generator=g).cuda()
    dense_sched = trajkit.schedules.explicit(sorted(spec.steps() | {STEPS}))
    recs = [trajkit.Recorder(tmp_path / "on.trajkit", model, schedule=trajkit.schedules.log(1, STEPS, 2), online=spec),
            trajkit.Recorder(tmp_path / "dense.trajkit", model, schedule=dense_sched)]
    _descend(model, x, y, recs, STEPS, 0.05)
    on, dense = trajkit.open_archive(tmp_path / "on.trajkit"), trajkit.open_archive(tmp_path / "dense.trajkit")
    assert on.metadata["online"]["reference"] == reference
    rows = online_rows(on)
    pairs = np.stack([np.searchsorted(dense.steps, rows.tw_step), np.searchsorted(dense.steps, rows.step)], axis=1)
    ref = kernels.pair_sums(dense, pairs, epsilon=rows.epsilon)
    for name in SUMS:
        np.testing.assert_allclose(rows.sums[name], ref[name], rtol=1e-6, atol=0)


def _numpy_sums(dense, tw_step, step, eps, cols=None):
    """The six sums between two dense rows, straight from their definitions in numpy float64."""
    a = dense.params[int(np.searchsorted(dense.steps, tw_step)), :].astype(np.float64)
    b = dense.params[int(np.searchsorted(dense.steps, step)), :].astype(np.float64)
    if cols is not None:
        a, b = a[cols], b[cols]
    d = b - a
    return {"dot": np.sum(a * b), "sq": np.sum(d * d), "quart": np.sum(d ** 4),
            "theta": float(np.count_nonzero(np.abs(d) < eps)), "norm_a": np.sum(a * a), "norm_b": np.sum(b * b)}


def test_online_sums_equal_their_definitions_in_numpy(runs):
    """Independent of the compiled loop the recorder shares with the analysis kernels: every online row,
    total and per layer, against the sums computed from their definitions on the dense twin's rows."""
    on, dense = trajkit.open_archive(runs["online"][0]), trajkit.open_archive(runs["dense"][0])
    rows = online_rows(on)
    layers = on.metadata["online"]["layers"]
    cols = {layer: np.concatenate([np.arange(e["offset"], e["offset"] + e["size"]) for e in on.layout
                                   if e["layer"] == layer]) for layer in layers}
    for r in range(len(rows.step)):
        ref = _numpy_sums(dense, rows.tw_step[r], rows.step[r], rows.epsilon[r])
        for name in SUMS:
            assert rows.sums[name][r] == pytest.approx(ref[name], rel=1e-9, abs=1e-12), (name, r)
        for i, layer in enumerate(layers):
            ref_l = _numpy_sums(dense, rows.tw_step[r], rows.step[r], rows.epsilon[r], cols[layer])
            for name in SUMS:
                assert rows.per_layer[name][r, i] == pytest.approx(ref_l[name], rel=1e-9, abs=1e-12), (name, r, i)


def test_online_sums_split_over_threads_equal_their_definitions(tmp_path):
    """A layer large enough for the CPU loop to split its columns over two threads (160 k parameters),
    waiting times whose vectors are dropped out of order (the bank compacts its rows): every row against
    numpy."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(400, 400), torch.nn.Tanh(), torch.nn.Linear(400, 1))
    spec = TwoTime(waiting_times=[0, 3, 6], lags=[1, 2, 4, 9, 20])
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 400, generator=g), torch.randn(32, 1, generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        recs = [trajkit.Recorder(tmp_path / "on.trajkit", model, schedule=trajkit.schedules.explicit([0, 30]),
                                 online=spec),
                trajkit.Recorder(tmp_path / "dense.trajkit", model,
                                 schedule=trajkit.schedules.explicit(sorted(spec.steps() | {30})))]
        _descend(model, x, y, recs, 30, 0.1)
    finally:
        torch.set_num_threads(threads)
    on, dense = trajkit.open_archive(tmp_path / "on.trajkit"), trajkit.open_archive(tmp_path / "dense.trajkit")
    rows = online_rows(on)
    assert len(rows.step) == 3 * 6
    for r in range(len(rows.step)):
        ref = _numpy_sums(dense, rows.tw_step[r], rows.step[r], rows.epsilon[r])
        for name in SUMS:
            assert rows.sums[name][r] == pytest.approx(ref[name], rel=1e-9, abs=1e-12), (name, r)
