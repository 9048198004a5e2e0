"""import_checkpoints(): real torch training saved as state_dicts becomes an archive, bit for bit.

Refusals (mismatched shapes, pickles of arbitrary objects, non-mappings, duplicate or missing steps)
leave no output behind, and a malicious pickle never runs.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from trajkit.archive import import_checkpoints, open_archive, validate
from trajkit.archive.importer import checkpoint_steps
from trajkit.errors import ArchiveError


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
                               torch.nn.Linear(6, 3))


def _train_and_save(directory: Path, names: dict[int, str]) -> dict[int, np.ndarray]:
    """Train a small net with SGD; save ``state_dict()`` at the given steps; return the flat float vectors."""
    directory.mkdir()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    flats = {}
    for step in range(max(names) + 1):
        if step in names:
            sd = model.state_dict()
            torch.save(sd, directory / names[step])
            flat = [v.reshape(-1).float() for v in sd.values() if v.is_floating_point()]
            flats[step] = torch.cat(flat).numpy()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return flats


def test_import_round_trip(tmp_path):
    names = {0: "step_000000.pt", 3: "ckpt-3.pth", 12: "epoch2_step12.pt", 7: "run1_step7.pt"}
    flats = _train_and_save(tmp_path / "ckpts", names)
    out = import_checkpoints(tmp_path / "ckpts", tmp_path / "run.trajkit", metadata={"seed": 3})
    a = open_archive(out)
    np.testing.assert_array_equal(a.steps, [0, 3, 7, 12])
    np.testing.assert_array_equal(a.params[:, :], np.stack([flats[s] for s in (0, 3, 7, 12)]))
    assert np.isnan(a.times).all()
    np.testing.assert_array_equal(a.epochs[:3], np.nan)
    assert a.epochs[3] == 2
    # layout from the first file's key order; the integer buffer is skipped and listed
    assert [(e["name"], e["role"], e["layer"]) for e in a.layout] == [
        ("0.weight", "weight", 0), ("0.bias", "bias", 0), ("1.weight", "weight", 1), ("1.bias", "bias", 1),
        ("1.running_mean", "weight", 1), ("1.running_var", "weight", 1), ("3.weight", "weight", 2),
        ("3.bias", "bias", 2)]
    assert a.n_params == 24 + 6 + 4 * 6 + 18 + 3
    assert a.metadata["import"]["skipped"] == ["1.num_batches_tracked"]
    assert a.metadata["schedule"] == {"kind": "explicit", "steps": [0, 3, 7, 12]}
    assert a.metadata["seed"] == 3
    assert validate(out) == []
    model = _model()
    model.load_state_dict(a.state_dict(3), strict=False)
    assert torch.equal(model[0].weight.detach().reshape(-1), torch.from_numpy(flats[12][:24]))


def test_step_rule_and_pattern(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("model_v2_step_10.pt", "model_v2_step_2.pt", "notes.txt", "best.pt"):
        (d / name).write_bytes(b"")
    with pytest.raises(ArchiveError, match=r"best\.pt: file name carries no step"):
        checkpoint_steps(d)
    found = checkpoint_steps(d, pattern=r"step_(\d+)\.pt$")
    assert [(s, f.name) for s, f, _ in found] == [(2, "model_v2_step_2.pt"), (10, "model_v2_step_10.pt")]
    found = checkpoint_steps(d, pattern=r"v(?P<epoch>\d+)_step_(?P<step>\d+)")
    assert [(s, e) for s, _, e in found] == [(2, 2), (10, 2)]
    with pytest.raises(ArchiveError, match="not a valid regular expression"):
        checkpoint_steps(d, pattern="step_(")
    with pytest.raises(ArchiveError, match="not an integer step"):
        checkpoint_steps(d, pattern=r"model_v")


def test_duplicate_steps_refused(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a_10.pt").write_bytes(b"")
    (d / "b_010.pt").write_bytes(b"")
    with pytest.raises(ArchiveError, match="both carry step 10"):
        import_checkpoints(d, tmp_path / "out.trajkit")
    assert not (tmp_path / "out.trajkit").exists()


def test_mismatched_shapes_refused_and_output_removed(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    torch.save({"w": torch.zeros(3, 2), "b": torch.zeros(3)}, d / "step_1.pt")
    torch.save({"w": torch.zeros(3, 2), "b": torch.zeros(3)}, d / "step_2.pt")
    torch.save({"w": torch.zeros(4, 2), "b": torch.zeros(3)}, d / "step_3.pt")
    out = tmp_path / "out.trajkit"
    with pytest.raises(ArchiveError, match=r"step_3.pt: tensor 'w' has shape \[4, 2\] but \[3, 2\]") as info:
        import_checkpoints(d, out)
    assert "\n" not in str(info.value)
    assert not out.exists()
    torch.save({"w": torch.zeros(3, 2), "c": torch.zeros(3)}, d / "step_3.pt")
    with pytest.raises(ArchiveError, match="tensor names differ"):
        import_checkpoints(d, out)
    assert not out.exists()


class _Marker:
    """Unpickling this would create a marker file: proof that code in the pickle ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_pickle_of_objects_is_refused_and_nothing_runs(tmp_path, how):
    d = tmp_path / "d"
    d.mkdir()
    marker = tmp_path / "MARKER"
    torch.save({"w": torch.zeros(2)}, d / "step_1.pt")
    payload = {"w": torch.zeros(2), "evil": _Marker(str(marker))}
    if how == "torch.save":
        torch.save(payload, d / "step_2.pt")
    else:
        with open(d / "step_2.pt", "wb") as f:
            pickle.dump(payload, f)
    out = tmp_path / "out.trajkit"
    with pytest.raises(ArchiveError, match=r"step_2.pt: torch.load\(weights_only=True\) refused it") as info:
        import_checkpoints(d, out)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    assert not out.exists()
    # the payload is live: an unrestricted load does run it (which is why the importer never does one)
    if how == "torch.save":
        torch.load(d / "step_2.pt", weights_only=False)
    else:
        with open(d / "step_2.pt", "rb") as f:
            pickle.load(f)
    assert marker.exists()


def test_non_mapping_and_nested_checkpoints_refused(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    torch.save([torch.zeros(2)], d / "step_1.pt")
    out = tmp_path / "out.trajkit"
    with pytest.raises(ArchiveError, match="holds a list, not a state_dict"):
        import_checkpoints(d, out)
    torch.save({"model": {"w": torch.zeros(2)}, "step": 1}, d / "step_1.pt")
    with pytest.raises(ArchiveError, match="entry 'model' is a dict, not a tensor"):
        import_checkpoints(d, out)
    torch.save({"n": torch.tensor(3)}, d / "step_1.pt")
    with pytest.raises(ArchiveError, match="no floating-point tensors"):
        import_checkpoints(d, out)
    assert not out.exists()


def test_existing_output_and_missing_directory_refused(tmp_path, tree_digest):
    d = tmp_path / "d"
    d.mkdir()
    torch.save({"w": torch.ones(2)}, d / "step_1.pt")
    out = tmp_path / "out.trajkit"
    import_checkpoints(d, out)
    before = tree_digest(out)
    with pytest.raises(ArchiveError, match="already exists"):
        import_checkpoints(d, out)
    assert tree_digest(out) == before
    with pytest.raises(ArchiveError, match="not a directory of checkpoints"):
        import_checkpoints(tmp_path / "missing", tmp_path / "x.trajkit")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArchiveError, match="no checkpoint files"):
        import_checkpoints(empty, tmp_path / "x.trajkit")
    assert not (tmp_path / "x.trajkit").exists()
    assert os.listdir(empty) == []
