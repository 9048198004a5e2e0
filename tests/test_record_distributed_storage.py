"""Sharded (FSDP2) recording with online two-time sums and with storage dtypes, from 2 real gloo ranks.

One spawned 2-rank run (tests/helpers/dist_ranks.py, scenario ``storage_online``) records the same FSDP2
training into: two online archives (the ``std(w)/F`` cutoff with per-layer sums over all parameters; a
fixed ε on the second Linear, ``2.*``), a dense float32 archive, and snapshot archives in bfloat16, float16
(64-byte chunks split between the ranks, and bfloat16 with the default one chunk) and float64 (a float64
model). A single process
replays the gathered parameters: its online arrays equal the ranks' to 1e-12 relative (the ranks' partial
sums are reduced in another order; Θ counts and steps exactly), its dtype archives equal the ranks' byte for
byte, and the online sums equal the pair kernels and ``overlaps`` on the dense archive to 1e-6.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import trajkit
from trajkit.analysis import kernels
from trajkit.archive.online import SUMS, online_rows
from trajkit.online import TwoTime
from trajkit.record.distributed import TIMEOUT_ENV

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
sys.path.insert(0, str(Path(__file__).parent))
import dist_ranks
from test_record_distributed import assert_same_archive

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with the gloo backend is not available in this build")


@pytest.fixture(scope="module")
def storage_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv(TIMEOUT_ENV, "30")   # inherited by the spawned ranks: no collective waits longer
    out = tmp_path_factory.mktemp("storage") / "runs"
    out.mkdir()
    try:
        codes, results = dist_ranks.launch("storage_online", 2, out)
    finally:
        mp.undo()
    assert codes == [0, 0], [r.get("crash") for r in results]
    assert all("crash" not in r for r in results), [r.get("crash") for r in results]
    return out, results


def _replay(path: Path, ref: dict, schedule, model_dtype=torch.float32, resume: str = "never", **kw) -> None:
    """What one process writes from the gathered parameters and rank 0's losses of ``ref``."""
    model = dist_ranks.build_model().to(model_dtype)
    with trajkit.Recorder(path, model, schedule=schedule, resume=resume, **kw) as rec:
        for k, vec, loss in zip(ref["steps"], ref["params"], ref["loss"], strict=True):
            torch.nn.utils.vector_to_parameters(vec, model.parameters())
            rec.step(k, loss=loss, epoch=k / 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["online_a", "online_b", "online_mixed"])
def test_sharded_online_sums_equal_a_single_process_and_the_dense_kernels(storage_run, tmp_path, name):
    out, results = storage_run
    spec = {"online_a": dist_ranks.ONLINE_A, "online_b": dist_ranks.ONLINE_B, "online_mixed": dist_ranks.ONLINE_A}[name]
    run = results[0]["mixed" if name == "online_mixed" else "float32"]
    single = tmp_path / "single.trajkit"
    _replay(single, run, trajkit.schedules.explicit([0, 10]), online=TwoTime(**spec))
    got, want = online_rows(trajkit.open_archive(out / f"{name}.trajkit")), online_rows(trajkit.open_archive(single))
    assert got.spec == want.spec
    assert got.tw_step.tolist() == want.tw_step.tolist() and got.step.tolist() == want.step.tolist()
    assert got.n_rows == sum(1 for tw in spec["waiting_times"] for t in (0, *spec["lags"]) if tw + t <= 10)
    np.testing.assert_allclose(got.epsilon, want.epsilon, rtol=1e-12, atol=0)
    worst = 0.0
    for s in SUMS:
        np.testing.assert_allclose(got.sums[s], want.sums[s], rtol=1e-12, atol=1e-300)
        worst = max(worst, float(np.max(np.abs(got.sums[s] - want.sums[s]) / np.maximum(np.abs(want.sums[s]),
                                                                                            1e-300))))
        if spec.get("per_layer"):
            np.testing.assert_allclose(got.per_layer[s], want.per_layer[s], rtol=1e-12, atol=1e-300)
    assert got.sums["theta"].tolist() == want.sums["theta"].tolist()     # counts: exact
    print(f"{name}: largest relative difference ranks vs single process: {worst:.2e}")
    if name == "online_mixed":   # plain tensors beside DTensors: counted once (on rank 0), ε over both
        assert results[0]["mixed_kinds"] == ["DTensor", "DTensor", "Parameter", "Parameter"]
        for tw, eps in zip(got.tw_step, got.epsilon, strict=True):
            w = run["params"][run["steps"].index(int(tw))].to(torch.float64).numpy()
            assert eps == pytest.approx(np.std(w) / 10.0, rel=1e-12)
        assert np.array_equal(trajkit.open_archive(out / f"{name}.trajkit").params[1, :], run["params"][10].numpy())
        return

    dense = trajkit.open_archive(out / "dense.trajkit")
    pairs = np.stack([np.searchsorted(dense.steps, got.tw_step), np.searchsorted(dense.steps, got.step)], axis=1)
    ref = kernels.pair_sums(dense, pairs, cols=dense.select(spec.get("select", "all")), epsilon=got.epsilon)
    for s in SUMS:
        np.testing.assert_allclose(got.sums[s], ref[s], rtol=1e-6, atol=0)
    if name == "online_a":   # ε = std(w(tw)) / 10 over all parameters, as the overlaps default
        for tw, eps in zip(got.tw_step, got.epsilon, strict=True):
            assert eps == pytest.approx(np.std(dense.params[int(tw), :].astype(np.float64)) / 10.0, rel=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            on = trajkit.analyze("overlaps", out / "online_a.trajkit", waiting_times=[2, 5])
            de = trajkit.analyze("overlaps", out / "dense.trajkit", waiting_times=[2, 5])
        cols = np.searchsorted(de.coords["step"], on.coords["step"])
        for key in ("overlap", "overlap_normalized", "msd", "self_overlap", "d4"):
            a, d = on.arrays[key], de.arrays[key][:, cols]
            measured = np.isfinite(a)
            assert measured.sum() >= 6
            np.testing.assert_allclose(a[measured], d[measured], rtol=1e-6, atol=1e-12)
    else:
        assert got.spec["n_cols"] == 9 * 4 + 4   # the second Linear's weight and bias


@pytest.mark.slow
@pytest.mark.parametrize("name,dtype,model_dtype,small", dist_ranks.STORAGE_RUNS,
                         ids=[r[0] for r in dist_ranks.STORAGE_RUNS])
def test_sharded_snapshots_in_each_storage_dtype_equal_a_single_process(storage_run, tmp_path, name, dtype,
                                                                        model_dtype, small):
    out, results = storage_run
    ref = results[0]["float64" if model_dtype == torch.float64 else "float32"]
    single = tmp_path / f"{name}.trajkit"
    if small:
        dist_ranks.precreate_small_chunks(single, dtype)
        owned = [r["owned"][f"{name}.trajkit"] for r in results]
        assert owned[0] and owned[1]     # both ranks write chunks of every row
    _replay(single, ref, trajkit.schedules.explicit(dist_ranks.STORAGE_SCHED), model_dtype,
            resume="allow" if small else "never", dtype=dtype)
    assert_same_archive(out / f"{name}.trajkit", single)
    arch = trajkit.open_archive(out / f"{name}.trajkit")
    assert arch.storage_dtype == dtype
    row = arch.params[2, :]      # step 2, decoded
    want = ref["params"][2].to(getattr(torch, dtype)).to(torch.float64 if dtype == "float64" else torch.float32)
    assert np.array_equal(row, want.numpy())
    assert trajkit.archive.validate(out / f"{name}.trajkit") == []


@pytest.mark.slow
def test_ranks_disagreeing_on_the_online_spec_fail_together(storage_run):
    out, results = storage_run
    for res in results:
        kind, msg = res["bad_online"]
        assert kind == "DistributedError" and "\n" not in msg
        assert "ranks disagree on the online (rank 1 differs from rank 0)" in msg
    assert not (out / "bad_online.trajkit").exists()
