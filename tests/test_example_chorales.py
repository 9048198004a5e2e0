"""The chorales worked example (examples/chorales_critical_width.py) runs end to end in its ``--quick`` form:
both ensembles recorded, the critical-width fit, the aging analyses of both observables, the three figures
and their numbers; a rerun resumes the finished ensembles instead of training again."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "chorales_critical_width.py"

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("music21") is None,
                       reason="music21 (the trajkit[music] extra) is not installed"),
    pytest.mark.usefixtures("chorale_cache"),
]


def _example():
    spec = importlib.util.spec_from_file_location("chorales_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_quick_example_writes_figures_and_numbers(tmp_path):
    ex = _example()
    out, figs = tmp_path / "out", tmp_path / "figs"
    numbers = ex.main(["--quick", "--out", str(out), "--figures", str(figs)])
    for name in ("chorales_loss_tails.png", "chorales_critical_width.png", "chorales_aging.png"):
        assert (figs / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    saved = json.loads((figs / "chorales_numbers.json").read_text())
    assert saved["widths"] == [4, 16, 64] and saved["depths"] == [1]
    assert saved["aging_stage"]["overrides"] == ex.QUICK_AGING
    # the aging stage is its own ensemble, next to the grid, with the quick stage's two widths
    assert (tmp_path / "out-aging" / "ensemble.json").exists()
    mu = saved["aging_stage"]["mu"]
    assert set(mu) == set(ex.AGING_OBSERVABLES)
    for obs in ex.AGING_OBSERVABLES:
        assert set(mu[obs]) == {"d=1,w=4", "d=1,w=32"}
        for value, (lo, hi), regime in mu[obs].values():
            assert math.isfinite(value)
            if regime == "unresolved (poor collapse)":      # the collapse-quality gate: no interval, no μ
                assert lo is None or math.isnan(lo)
            else:
                assert lo <= hi and regime in ("sub", "simple", "super", "stationary")
    # waiting times span steps/40 .. steps/2 of the 600-step aging runs
    assert saved["aging_stage"]["waiting_times"] == [15, 41, 111, 300]
    assert numbers["aging_stage"]["final_loss"] == saved["aging_stage"]["final_loss"]

    # a rerun finds both ensembles finished: nothing is trained again, the archives are untouched
    archives = sorted(out.glob("*.trajkit")) + sorted((tmp_path / "out-aging").glob("*.trajkit"))
    stamps = {p: (p / "snapshots" / "zarr.json").stat().st_mtime_ns for p in archives}
    ex.main(["--quick", "--out", str(out), "--figures", str(figs)])
    assert stamps == {p: (p / "snapshots" / "zarr.json").stat().st_mtime_ns for p in archives}

    # --skip-aging: the aging figure comes from the grid's MSD (every width of its single depth)
    skipped = ex.main(["--quick", "--skip-aging", "--out", str(out), "--figures", str(tmp_path / "figs2")])
    assert skipped["aging_stage"]["overrides"] is None and list(skipped["aging_stage"]["mu"]) == ["msd"]
    assert set(skipped["aging_stage"]["mu"]["msd"]) == {"d=1,w=4", "d=1,w=16", "d=1,w=64"}
    assert json.dumps(skipped["aging_stage"]["mu"]["msd"]) == json.dumps(saved["aging_mu_grid_msd"])  # NaN-safe
    assert (tmp_path / "figs2" / "chorales_aging.png").exists()
