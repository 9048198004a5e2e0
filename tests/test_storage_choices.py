"""Storage choices: the params dtype of an archive (float32, float16, bfloat16, float64) honoured by the writer,
the reader, zarr and the kernels; ``select=`` subsets with a layout naming what was kept; ``trajkit info``;
``trajkit.estimate_size`` against the bytes really written; bad inputs write nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import trajkit
from trajkit.analysis import kernels
from trajkit.archive import create, dtypes, validate
from trajkit.archive.estimate import METADATA_BYTES
from trajkit.cli import cli
from trajkit.errors import TrajkitError
from trajkit.online import TwoTime

STEPS = 30
SCHEDULE = trajkit.schedules.explicit([0, 1, 7, 30])


def _model(dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3)).to(dtype)


def _train(path, model, **kw) -> list[np.ndarray]:
    """A seeded full-batch gradient-descent run; returns the flat parameters (float64) at each snapshot."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, generator=g).to(next(model.parameters()).dtype)
    kept = []
    with trajkit.Recorder(path, model, schedule=SCHEDULE, **kw) as rec:
        for k in range(STEPS + 1):
            if k:
                model.zero_grad()
                (model(x) ** 2).mean().backward()
                with torch.no_grad():
                    for p in model.parameters():
                        p -= 0.1 * p.grad
            if k in SCHEDULE:
                kept.append([p.detach().clone() for p in model.parameters()])
            rec.step(k, loss=float(k))
    return kept


def _flat(tensors, dtype) -> np.ndarray:
    """What the archive should hold: each tensor cast by torch to ``dtype``, widened back for numpy."""
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    return torch.cat([t.reshape(-1).to(dtype).to(wide) for t in tensors]).numpy()


@pytest.mark.parametrize("name, model_dtype", [("float32", torch.float32), ("float16", torch.float32),
                                               ("bfloat16", torch.float32), ("float64", torch.float64)])
def test_round_trip_per_dtype(tmp_path, name, model_dtype):
    path = tmp_path / f"{name}.trajkit"
    kept = _train(path, _model(model_dtype), dtype=name)
    arch = trajkit.open_archive(path)
    assert arch.storage_dtype == name and arch.metadata["storage"]["dtype"] == name
    assert arch.params.dtype == (np.float64 if name == "float64" else np.float32)
    want = np.stack([_flat(ts, getattr(torch, name)) for ts in kept])
    got = arch.params[:, :]
    # float64 bit-exact (a float64 run recorded losslessly); float16/bfloat16 exactly torch's own rounding
    assert got.dtype == want.dtype and np.array_equal(got.view(np.uint8), want.view(np.uint8))
    assert np.array_equal(arch.params[1:3, arch.select("2.*")], want[1:3, 6 * 12 + 12:])
    assert validate(path) == []
    assert (path / "snapshots" / "params" / "c.0.0").stat().st_size == arch.n_params * dtypes.itemsize(name)
    # the kernels honour the dtype and accumulate in float64: equal to a float64 reference on the stored values
    ref = want.astype(np.float64)
    sums = kernels.pair_sums(arch, [[0, 3], [1, 2]], epsilon=1e-3)
    for (a, b), dot, sq in zip([(0, 3), (1, 2)], sums["dot"], sums["sq"], strict=True):
        assert dot == pytest.approx(float(ref[a] @ ref[b]), rel=1e-12)
        assert sq == pytest.approx(float(((ref[b] - ref[a]) ** 2).sum()), rel=1e-12)
    dot, sq = kernels.gram(arch)
    assert dot[0, 3] == pytest.approx(float(ref[0] @ ref[3]), rel=1e-12)


def test_zarr_reads_the_stored_values_and_bfloat16_is_tagged(tmp_path):
    import zarr

    kept = _train(tmp_path / "h.trajkit", _model(), dtype="float16")
    z = zarr.open_array(str(tmp_path / "h.trajkit" / "snapshots" / "params"), mode="r")
    assert z.dtype == np.float16
    assert np.array_equal(np.asarray(z[:]).astype(np.float32), np.stack([_flat(t, torch.float16) for t in kept]))
    _train(tmp_path / "b.trajkit", _model(), dtype="bfloat16")
    doc = json.loads((tmp_path / "b.trajkit" / "snapshots" / "params" / "zarr.json").read_text())
    assert doc["data_type"] == "uint16" and doc["attributes"] == {"trajkit_dtype": "bfloat16"}
    assert doc["fill_value"] == dtypes.BF16_NAN


def test_bfloat16_encode_rounds_as_torch_does():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(10_000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 10_000),
                        np.float32([0.0, -0.0, np.inf, -np.inf, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8])])
    ours = dtypes.encode(x, "bfloat16")
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(ours, theirs)
    assert np.array_equal(dtypes.decode(ours, "bfloat16"), torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    assert np.isnan(dtypes.decode(dtypes.encode(np.float32([np.nan]), "bfloat16"), "bfloat16")).all()


def test_archive_writer_append_and_compressed_bfloat16(tmp_path):
    rows = np.random.default_rng(3).standard_normal((3, 5000)).astype(np.float32)
    with create(tmp_path / "z.trajkit", n_params=5000, dtype="bfloat16", compressor="zstd") as w:
        for k, r in enumerate(rows):
            w.append(k, r)
    arch = trajkit.open_archive(tmp_path / "z.trajkit")
    assert np.array_equal(arch.params[:, :], torch.from_numpy(rows).to(torch.bfloat16).float().numpy())
    assert validate(tmp_path / "z.trajkit") == []


def test_select_records_a_subset_named_by_the_layout(tmp_path):
    model = _model()
    kept = _train(tmp_path / "w.trajkit", model, select="weights")
    arch = trajkit.open_archive(tmp_path / "w.trajkit")
    assert [e["name"] for e in arch.layout] == ["0.weight", "2.weight"]
    assert [e["layer"] for e in arch.layout] == [0, 1] and arch.layout[1]["offset"] == 72
    assert arch.n_params == 72 + 36 and arch.metadata["storage"]["n_params_model"] == 72 + 12 + 36 + 3
    assert arch.storage_select == "weights"
    want = np.stack([torch.cat([ts[0].reshape(-1), ts[2].reshape(-1)]).numpy() for ts in kept])
    assert np.array_equal(arch.params[:, :], want)
    _train(tmp_path / "g.trajkit", _model(), select="0.*+biases")
    assert [e["name"] for e in trajkit.open_archive(tmp_path / "g.trajkit").layout] == ["0.weight", "0.bias",
                                                                                      "2.bias"]
    # restore loads the kept tensors by name into a model, leaving the others
    fresh = _model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    with trajkit.Recorder(tmp_path / "w.trajkit", fresh, schedule=SCHEDULE, select="weights", resume="must") as rec:
        assert rec.restore() == 30
    assert torch.equal(fresh[0].weight, kept[-1][0]) and torch.equal(fresh[2].weight, kept[-1][2])
    assert not fresh[0].bias.any()


def test_info_shows_dtype_and_subset(tmp_path):
    path = tmp_path / "i.trajkit"
    _train(path, _model(), dtype="bfloat16", select="weights")
    out = CliRunner().invoke(cli, ["info", str(path)])
    assert out.exit_code == 0
    line = next(x for x in out.output.splitlines() if x.startswith("storage"))
    assert line.split(None, 1)[1] == "bfloat16, subset 'weights' (108 of 123 parameters)"
    doc = json.loads(CliRunner().invoke(cli, ["info", "--json", str(path)]).output)
    assert (doc["dtype"], doc["select"], doc["n_params_model"], doc["online"]) == ("bfloat16", "weights", 123, None)
    _train(tmp_path / "plain.trajkit", _model())
    plain = CliRunner().invoke(cli, ["info", str(tmp_path / "plain.trajkit")]).output
    assert "float32, all parameters" in plain


def _data_and_metadata_bytes(path: Path) -> tuple[int, int]:
    files = [f for f in path.rglob("*") if f.is_file()]
    meta = sum(f.stat().st_size for f in files if f.name == "zarr.json" or f.name.startswith(".trajkit"))
    return sum(f.stat().st_size for f in files) - meta, meta


@pytest.mark.parametrize("kw", [{}, {"dtype": "float16", "select": "2.*"}, {"dtype": "float64"},
                                {"online": TwoTime(waiting_times=[1, 7], lags=[1, 5, 20], per_layer=True)}])
def test_estimate_size_equals_the_bytes_written(tmp_path, kw):
    model = _model(torch.float64 if kw.get("dtype") == "float64" else torch.float32)
    est = trajkit.estimate_size(model, SCHEDULE, STEPS, metrics=("acc",), **kw)
    path = tmp_path / "e.trajkit"
    with trajkit.Recorder(path, model, schedule=SCHEDULE, evaluate=lambda: {"acc": 1.0}, **kw) as rec:
        for k in range(STEPS + 1):
            rec.step(k, loss=1.0)
    data, meta = _data_and_metadata_bytes(path)
    assert data == est.total == int(est)
    assert est.n_snapshots == 4 and est.n_params == trajkit.open_archive(path).n_params
    assert 0 < meta <= METADATA_BYTES[0] + METADATA_BYTES[1] * len(trajkit.open_archive(path).layout)
    assert (est.online > 0) == ("online" in kw)


def test_estimate_size_for_a_large_model_without_building_it():
    sched = trajkit.schedules.log(1, 10**5, 200)
    est = trajkit.estimate_size(10**8, sched, 10**5, dtype="bfloat16")
    assert est.n_snapshots == sched.count(10**5) and est.dtype == "bfloat16"
    per_row = est.params // est.n_snapshots
    # 2 bytes a parameter; 8 MiB chunks padded to whole 4 KiB pages: under 24 chunks' worth of a page over
    assert 2 * 10**8 <= per_row < 2 * 10**8 + 24 * 4096 and per_row % 4096 == 0
    assert trajkit.estimate_size(10**8, sched, 10**5).params == 2 * est.params


@pytest.mark.parametrize("kw, word", [
    ({"dtype": "int8"}, "dtype='int8' is not a storage dtype"),
    ({"dtype": "bfloat"}, "did you mean 'bfloat16'"),
    ({"select": "nothing.*"}, "matches no parameters"),
])
def test_bad_storage_input_writes_nothing(tmp_path, kw, word):
    path = tmp_path / "bad.trajkit"
    with pytest.raises(TrajkitError, match=word) as err:
        trajkit.Recorder(path, _model(), schedule=SCHEDULE, **kw)
    assert "\n" not in str(err.value) and not path.exists()
    with pytest.raises(TrajkitError, match=word):
        trajkit.estimate_size(_model(), SCHEDULE, STEPS, **kw)


def test_resume_with_another_dtype_is_refused_and_the_archive_is_untouched(tmp_path):
    path = tmp_path / "r.trajkit"
    _train(path, _model(), dtype="float16")
    before = {str(f): f.read_bytes() for f in path.rglob("*") if f.is_file() and not f.name.startswith(".trajkit")}
    with pytest.raises(TrajkitError, match="stores float16 parameters, this run asks for dtype=float32"):
        trajkit.Recorder(path, _model(), schedule=SCHEDULE, resume="allow")
    after = {str(f): f.read_bytes() for f in path.rglob("*") if f.is_file() and not f.name.startswith(".trajkit")}
    assert before == after and validate(path) == []
    with pytest.raises(TrajkitError, match="last_step"):
        trajkit.estimate_size(10, SCHEDULE, -1)


def test_validate_reports_a_params_dtype_that_disagrees_with_the_metadata(tmp_path):
    path = tmp_path / "v.trajkit"
    _train(path, _model(), dtype="float16")
    bad = tmp_path / "bad.trajkit"
    shutil.copytree(path, bad)
    meta = json.loads((bad / "zarr.json").read_text())
    meta["attributes"]["trajkit"]["storage"]["dtype"] = "float32"
    (bad / "zarr.json").write_text(json.dumps(meta))
    assert any("snapshots/params" in p.message and "float32" in p.message for p in validate(bad))


def test_record_dry_run_estimate_is_estimate_size(tmp_path):
    from trajkit.experiments import run_experiment

    tiny = ['data.name="teacher"', "data.n_train=48", "data.n_test=16", "data.dim=4", "model.hidden=[5]",
            'loss.name="quadratic_hinge"', "run.steps=30", 'snapshots.schedule="linear"', "snapshots.every=5",
            'dynamics.kind="langevin"', "dynamics.lr=0.1", "dynamics.temperature=0.01"]
    out = tmp_path / "ens"
    dry = run_experiment(None, out, tiny, quiet=True, dry_run=True)["runs"][0]
    assert not out.exists()
    run_experiment(None, out, tiny, quiet=True)
    path = Path(dry["path"])
    data, meta = _data_and_metadata_bytes(path)
    overhead = METADATA_BYTES[0] + METADATA_BYTES[1] * len(trajkit.open_archive(path).layout)
    assert dry["estimated_bytes"] - overhead == data and meta <= overhead
