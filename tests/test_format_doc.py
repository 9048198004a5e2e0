"""docs/FORMAT.md's examples match what trajkit really writes: the params ``zarr.json`` of §2, the layout
entry of §4, the lock-file states of §6 and the reader sketch of §10 (run on a real archive)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import trajkit
from trajkit.archive import create, run_state
from trajkit.archive.format import LOCK_FILE

FORMAT = (Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text()


def _section(number: int) -> str:
    start = FORMAT.index(f"\n## {number}. ")
    end = FORMAT.find("\n## ", start + 1)
    return FORMAT[start:end if end > 0 else None]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def test_params_zarr_json_example_is_what_the_writer_writes(tmp_path):
    doc = json.loads(_blocks(_section(2), "json")[0])
    T, N = doc["shape"]
    path = tmp_path / "run.trajkit"
    with create(path, n_params=N) as w:
        w.append(0, np.zeros(N, np.float32))
    real = json.loads((path / "snapshots" / "params" / "zarr.json").read_text())
    assert real["shape"] == [1, N]
    assert {**real, "shape": [T, N]} == doc


def test_layout_entry_example_is_a_recorded_models_first_entry(tmp_path):
    torch = pytest.importorskip("torch", reason="the Recorder records torch modules")
    doc = json.loads(_blocks(_section(4), "json")[0])
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    with trajkit.Recorder(tmp_path / "m.trajkit", model, schedule=trajkit.schedules.linear(1)) as rec:
        rec.step(0)
    assert trajkit.open_archive(tmp_path / "m.trajkit").layout[0] == doc


def test_lock_file_states_of_section_6(tmp_path):
    path = tmp_path / "run.trajkit"
    w = create(path, n_params=4)
    assert (path / LOCK_FILE).read_text() == f"{os.getpid()} open\n" and run_state(path).state == "live"
    w.close()
    assert (path / LOCK_FILE).read_text() == "" and run_state(path).state == "finished"
    (path / LOCK_FILE).write_text("4242 open\n")                      # what a killed writer leaves
    assert run_state(path).state == "interrupted"


def test_reader_sketch_reads_a_real_archive(tmp_path):
    sketch = _blocks(_section(10), "python")[0]
    path = tmp_path / "run.trajkit"
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(5, 300_000)).astype(np.float32)          # 1.1 MiB rows: C rounded to 1,024
    steps = [0, 3, 7, 20, 1500]
    with create(path, n_params=rows.shape[1], chunk_bytes=2**19) as w:   # J = 3 chunks per row
        for k, row in zip(steps, rows, strict=True):
            w.append(k, row)
    scope: dict = {}
    exec(sketch.replace('root = "run.trajkit"', f"root = {str(path)!r}"), scope)
    assert scope["J"] == 3
    np.testing.assert_array_equal(scope["params"], rows)
    np.testing.assert_array_equal(scope["steps"], steps)
