"""docs/PLUGINS.md's worked example (the sign-flip fraction), pip-installed from the page and run through
the CLI, against an independent numpy computation; the page names every Param type and times function."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trajkit
from trajkit.analysis import contract, load_result, times

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "PLUGINS.md"
TRAJKIT = str(Path(sys.executable).parent / "trajkit")
LAYOUT = [{"name": "0.weight", "shape": [40, 10], "offset": 0, "size": 400, "role": "weight", "layer": 0},
          {"name": "0.bias", "shape": [40], "offset": 400, "size": 40, "role": "bias", "layer": 0},
          {"name": "1.weight", "shape": [1, 40], "offset": 440, "size": 40, "role": "weight", "layer": 1},
          {"name": "1.bias", "shape": [1], "offset": 480, "size": 1, "role": "bias", "layer": 1}]
STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256]


def _doc_files() -> dict[str, str]:
    text = DOC.read_text()
    section = text[text.index("<!-- plugin:start -->"):text.index("<!-- plugin:end -->")]
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", section, flags=re.S))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example package, written from the page and installed with pip into a private target dir."""
    tmp = tmp_path_factory.mktemp("signflip")
    src, target = tmp / "trajkit-signflip", tmp / "target"
    src.mkdir()
    files = _doc_files()
    assert set(files) == {"pyproject.toml", "trajkit_signflip.py"}
    for name, text in files.items():
        (src / name).write_text(text)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                          "--no-index", "--quiet", "--target", str(target), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    return target


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> list[Path]:
    """Two replicas whose weights random-walk across zero (some start at exactly 0), on a log schedule."""
    out = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        w = 0.05 * rng.standard_normal(481)
        w[:7] = 0.0
        path = tmp_path_factory.mktemp("runs") / f"r{seed}.trajkit"
        with trajkit.archive.create(path, n_params=481, layout=LAYOUT) as wr:
            for i, step in enumerate(STEPS):
                if i:
                    w = w + 0.01 * np.sqrt(step - STEPS[i - 1]) * rng.standard_normal(481)
                wr.append(step, w.astype(np.float32))
        out.append(path)
    return out


def _run(args: list[str], target: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAJKIT_LOAD_PLUGINS": "signflip",
           "PYTHONPATH": os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([TRAJKIT, *args], capture_output=True, text=True, env=env, timeout=300)


def _expected(paths: list[Path], tw_rows: np.ndarray, spec: str) -> np.ndarray:
    """F(t_w, t) = mean_i [w_i(t_w) w_i(t) < 0], mean over replicas, NaN for t < t_w — plain numpy."""
    Fs = []
    for p in paths:
        a = trajkit.open_archive(p)
        X = np.asarray(a.params[:, :], dtype=np.float64)[:, np.asarray(a.select(spec))]
        F = np.array([[np.mean(X[r] * X[t] < 0) for t in range(len(STEPS))] for r in tw_rows])
        F[np.asarray(STEPS)[None, :] < np.asarray(STEPS)[tw_rows][:, None]] = np.nan
        Fs.append(F)
    return np.mean(Fs, axis=0)


def test_doc_example_installs_and_matches_numpy(installed, replicas, tmp_path):
    h = _run(["analyze", "--plugin", "signflips", "--help"], installed)
    assert h.returncode == 0, h.stderr
    assert "n_waiting_times (int, default 4)" in h.stdout and "block (int, default 65536)" in h.stdout
    out = tmp_path / "out"
    r = _run(["analyze", "--plugin", "signflips", "-p", "n_waiting_times=3", "-p", "select=hidden",
              "-p", "block=37", *map(str, replicas), "--out", str(out), "--json"], installed)
    assert r.returncode == 0, r.stderr
    scalars = json.loads(r.stdout)["scalars"]
    assert scalars == {"n_selected": 440, "replicas": 2}
    res = load_result(out)
    tw_rows = times.log_spaced_rows(STEPS, 3)
    np.testing.assert_array_equal(res.coords["tw_step"], np.asarray(STEPS)[tw_rows])
    expect = _expected(replicas, tw_rows, "hidden")
    np.testing.assert_allclose(res.arrays["flip_fraction"], expect, rtol=1e-12, equal_nan=True)
    assert np.nanmax(expect) > 0.1                         # the walk does flip signs: the test can fail
    assert (out / "signflips.png").stat().st_size > 0


def test_doc_example_with_waiting_time_steps(installed, replicas, tmp_path):
    out = tmp_path / "out"
    r = _run(["analyze", "--plugin", "signflips", "-p", "waiting_times=4,32", "-p", "select=all",
              str(replicas[0]), "--out", str(out)], installed)
    assert r.returncode == 0, r.stderr
    res = load_result(out)
    np.testing.assert_allclose(res.arrays["flip_fraction"], _expected(replicas[:1], np.array([3, 6]), "all"),
                               rtol=1e-12, equal_nan=True)


def test_doc_covers_every_param_type_and_times_function():
    """The reference names every Param type and every public function of trajkit.analysis.times."""
    text = DOC.read_text()
    for t in contract.TYPES:
        assert f"| `{t}` |" in text, t
    public = [n for n, v in vars(times).items() if callable(v) and not n.startswith("_")
              and getattr(v, "__module__", "") == times.__name__ and not isinstance(v, type)]
    assert public
    for name in public:
        assert f"`{name}(" in text, name
    for need in contract.NEEDS:
        assert f'`needs = "{need}"`' in text, need
    assert "column_blocks(" in text and "ctx.progress(" in text and "ctx.device" in text
