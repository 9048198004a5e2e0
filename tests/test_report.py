"""``trajkit report``: the incremental cache, live and half-written inputs, failures, bad input, and the
notebook / dataframe views of results, archives and ensembles.

Recomputations are counted from the report's own manifest (``report.json`` ``builds``) and the summary
``build_report`` returns, never by timing. Results in the report are compared with ``trajkit.analyze`` run
independently on the same runs.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import trajkit
from trajkit.analysis import Result
from trajkit.archive.ensemble_file import read_ensemble_file, write_ensemble_file
from trajkit.cli import cli
from trajkit.errors import AnalysisError
from trajkit.report import build_report
from trajkit.report.cache import MANIFEST

CHILD = Path(__file__).parent / "helpers" / "slow_recording.py"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


@pytest.fixture(scope="module")
def two_analyses(small_demo_ensemble, tmp_path_factory):
    """A report of relaxation and chi4 over the small demo ensemble (built once for this module; two analyses
    that compute and draw quickly)."""
    out = tmp_path_factory.mktemp("report") / "rep"
    first = build_report([small_demo_ensemble], out, analyses="relaxation,chi4")
    return out, first


# -- the incremental cache -----------------------------------------------------------------------------------

def test_first_build_computes_and_matches_trajkit_analyze(two_analyses, small_demo_ensemble):
    out, first = two_analyses
    assert first.computed == ["relaxation", "chi4"] and first.reused == [] and first.failed == []
    assert first.curves_computed
    ref = trajkit.analyze("relaxation", [small_demo_ensemble])
    got = trajkit.load_result(out / "analyses" / "relaxation")
    np.testing.assert_array_equal(got.arrays["self_overlap"], ref.arrays["self_overlap"])
    assert got.scalars == json.loads(json.dumps(ref.to_json()["scalars"]))
    page = (out / "index.html").read_text()
    assert f"trajkit analyze --plugin relaxation {small_demo_ensemble.resolve()}" in page
    for name in ("relaxation", "chi4"):
        assert f"id='analysis-{name}'" in page and (out / "analyses" / name / f"{name}.png").is_file()


def test_second_build_recomputes_nothing(two_analyses, small_demo_ensemble):
    out, _ = two_analyses
    before = (out / "analyses" / "chi4" / "result.json").read_text()
    again = build_report([small_demo_ensemble], out, analyses="relaxation,chi4")
    assert again.computed == [] and again.reused == ["relaxation", "chi4"] and not again.curves_computed
    last = manifest(out)["builds"][-1]
    assert last["computed"] == [] and last["curves"] == "reused"
    assert (out / "analyses" / "chi4" / "result.json").read_text() == before


@pytest.mark.slow
def test_one_changed_parameter_recomputes_exactly_that_analysis(two_analyses, small_demo_ensemble):
    out, _ = two_analyses
    changed = build_report([small_demo_ensemble], out, analyses="relaxation,chi4",
                           params={"relaxation": {"n_waiting_times": "3"}})
    assert changed.computed == ["relaxation"] and changed.reused == ["chi4"]
    assert manifest(out)["builds"][-1]["computed"] == ["relaxation"]
    assert trajkit.load_result(out / "analyses" / "relaxation").coords["tw_step"].size == 3
    assert "-p n_waiting_times=3" in (out / "index.html").read_text()
    back = build_report([small_demo_ensemble], out, analyses="relaxation,chi4")       # the default again
    assert back.computed == ["relaxation"]


@pytest.mark.slow
def test_more_finished_runs_recompute_what_they_feed(small_demo_ensemble, tmp_path):
    ens = tmp_path / "ens"
    shutil.copytree(small_demo_ensemble, ens)
    doc = read_ensemble_file(ens)
    doc["runs"][3]["status"] = "pending"          # still recording: in the table, not in the analyses
    write_ensemble_file(ens, doc)
    out = tmp_path / "rep"
    first = build_report([ens], out, analyses="relaxation")
    assert first.computed == ["relaxation"] and first.failed == []
    assert len(trajkit.load_result(out / "analyses" / "relaxation").provenance["run_ids"]) == 3
    rows = manifest(out)["rows"]
    assert len(rows) == 4 and rows[3]["status"] == "pending · finished"
    doc["runs"][3]["status"] = "done"
    write_ensemble_file(ens, doc)
    second = build_report([ens], out, analyses="relaxation")
    assert second.computed == ["relaxation"] and not second.curves_computed    # same runs, same snapshots drawn
    assert len(trajkit.load_result(out / "analyses" / "relaxation").provenance["run_ids"]) == 4


# -- what the page shows -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_failing_analysis_is_a_failure_box_and_the_others_render(small_demo_ensemble, tmp_path):
    out = tmp_path / "rep"
    s = build_report([small_demo_ensemble], out, analyses="relaxation,minima")
    assert s.failed == ["minima"]
    page = (out / "index.html").read_text()
    box = page.split("id='analysis-minima'")[1].split("</section>")[0]
    assert "<div class='failure'>minima failed: " in box and "clustering needs at least 3 runs, got 2" in box
    assert "src='analyses/relaxation/relaxation.png'" in page
    assert build_report([small_demo_ensemble], out, analyses="relaxation,minima").computed == []   # failures cached


def test_run_table_shows_coordinates_final_metrics_and_status(small_demo_ensemble, two_analyses):
    out, _ = two_analyses
    rows = manifest(out)["rows"]
    archives = [trajkit.open_archive(r["path"]) for r in rows]
    assert [r["coords"]["dynamics.temperature"] for r in rows] == [1e-4, 1e-4, 1e-2, 1e-2]
    for r, a in zip(rows, archives, strict=True):
        assert r["test_loss"] == float(a.metrics["test_loss"][-1])
        assert r["train_acc"] == float(a.metrics["train_acc"][-1])
        assert r["n_snapshots"] == a.n_snapshots and r["last_step"] == 120 and r["status"] == "finished"
    page = (out / "index.html").read_text()
    assert f"<td>{rows[0]['test_loss']:.4g}</td>" in page


@pytest.mark.slow
def test_default_selection_leaves_out_what_the_inputs_cannot_feed(tmp_path):
    from trajkit.analysis.plugins import get_registry
    from trajkit.report.inputs import resolve_inputs
    from trajkit.report.plan import select

    path = _killed_recording(tmp_path)           # a torch.nn.Linear run: no registered model, not rebuildable
    planned, left_out = select(get_registry(), None, {}, resolve_inputs([str(path)]).ensemble())
    names = [p.name for p in planned]
    assert {"overlaps", "relaxation", "aging"} <= set(names)
    for landscape in ("interpolation", "rugosity", "minima"):
        assert "is not a registered model" in left_out[landscape]
    assert "loss" in names                                     # it groups by model.n_params, which every run has
    assert "has no metadata key 'config.model' to group by" in left_out["critical_width"]


# -- live and half-written inputs ----------------------------------------------------------------------------

def _committed(archive: Path) -> int:
    try:
        return json.loads((archive / "snapshots" / "zarr.json").read_text())["attributes"]["committed"]
    except (OSError, ValueError, KeyError):
        return 0


def _recording(path: Path, pause: float = 0.0) -> subprocess.Popen:
    """A recording subprocess writing one snapshot per step into ``path``, ``pause`` seconds apart."""
    return subprocess.Popen([sys.executable, str(CHILD), str(path), str(pause)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_committed(path: Path, child: subprocess.Popen, n: int) -> None:
    deadline = time.monotonic() + 120
    while _committed(path) < n:
        assert child.poll() is None and time.monotonic() < deadline, "the recording ended too early"
        time.sleep(0.02)


def _killed_recording(tmp_path: Path, n: int = 12) -> Path:
    path = tmp_path / "killed.trajkit"
    child = _recording(path)
    try:
        _wait_committed(path, child, n)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return path


@pytest.mark.slow
def test_report_of_a_sigkilled_recording_shows_only_committed_snapshots(tmp_path):
    path = _killed_recording(tmp_path)
    committed = _committed(path)
    shape = json.loads((path / "snapshots" / "params" / "zarr.json").read_text())["shape"][0]
    assert shape > committed                              # rows were allocated beyond the commit marker
    out = tmp_path / "rep"
    s = build_report([path], out, analyses="overlaps", params={"overlaps": {"n_waiting_times": 2}})
    assert s.failed == []
    row = manifest(out)["rows"][0]
    assert row["n_snapshots"] == committed and row["last_step"] == committed - 1 and row["state"] == "interrupted"
    result = trajkit.load_result(out / "analyses" / "overlaps")
    assert result.coords["step"].max() == committed - 1
    assert result.provenance["unfinished"][0]["state"] == "interrupted"
    assert "interrupted" in (out / "index.html").read_text()


@pytest.mark.slow
def test_watch_regenerates_while_a_recording_writes_and_stops_on_ctrl_c(tmp_path):
    path = tmp_path / "live.trajkit"
    out = tmp_path / "rep"
    child = _recording(path, pause=0.2)
    watcher = None
    try:
        _wait_committed(path, child, 5)
        watcher = subprocess.Popen([sys.executable, "-c", "from trajkit.cli import main; main()", "report", str(path),
                                    "--out", str(out), "--analyses", "overlaps", "-p", "overlaps.n_waiting_times=2",
                                    "--watch", "0.5"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        builds: list = []
        while time.monotonic() < deadline and watcher.poll() is None:
            try:
                builds = manifest(out)["builds"]
            except (OSError, ValueError):
                builds = []
            if len({b["runs"][0][1] for b in builds}) >= 2:
                break
            time.sleep(0.1)
        watcher.send_signal(signal.SIGINT)
        stdout, stderr = watcher.communicate(timeout=60)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    counts = [b["runs"][0][1] for b in builds]
    assert len(set(counts)) >= 2 and counts == sorted(counts), counts      # more committed snapshots each time
    for prev, b in itertools.pairwise(builds):       # recomputed exactly when the snapshots changed
        assert b["computed"] == (["overlaps"] if b["runs"] != prev["runs"] else [])
    assert watcher.returncode == 0, stderr
    assert "stopped watching" in stdout and "Traceback" not in stderr
    assert "http-equiv='refresh'" in (out / "index.html").read_text()


# -- bad input: one line, non-zero exit, nothing lost --------------------------------------------------------

def test_no_archives_matched(tmp_path):
    r = invoke("report", str(tmp_path / "nothing-*.trajkit"), "--out", str(tmp_path / "rep"))
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "glob matches nothing" in r.output
    r = invoke("report", "--out", str(tmp_path / "rep"))
    assert r.exit_code == 1 and "no archives given" in r.output
    assert not (tmp_path / "rep").exists()


def test_unknown_analysis_suggests_the_closest(small_demo_ensemble, tmp_path):
    r = invoke("report", str(small_demo_ensemble), "--out", str(tmp_path / "rep"), "--analyses", "overlaps,chi5")
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "no analysis named 'chi5'; did you mean 'chi4'?" in r.output
    assert not (tmp_path / "rep").exists()


def test_param_for_an_analysis_not_selected(small_demo_ensemble, tmp_path):
    r = invoke("report", str(small_demo_ensemble), "--out", str(tmp_path / "rep"), "--analyses", "overlaps",
               "-p", "chi4.n_waiting_times=3")
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "analysis 'chi4' is not selected (--analyses overlaps)" in r.output
    for bad, says in (("chi4n_waiting_times=3", "expected NAME.key=value"),
                      ("overlaps.n_waiting_timez=3", "did you mean 'n_waiting_times'?"),
                      ("overlaps.n_waiting_times=-1", "out of range")):
        r = invoke("report", str(small_demo_ensemble), "--out", str(tmp_path / "rep"), "-p", bad)
        assert r.exit_code == 1 and says in r.output and r.output.count("\n") == 1, r.output
    assert not (tmp_path / "rep").exists()


def test_out_is_a_file_or_another_report_or_other_files(small_demo_ensemble, two_analyses, tmp_path, tree_digest):
    report, _ = two_analyses
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    r = invoke("report", str(small_demo_ensemble), "--out", str(a_file), "--analyses", "relaxation")
    assert r.exit_code == 1 and "is a file, not a directory" in r.output and a_file.read_text() == "keep me"

    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_text("<p>mine</p>")
    r = invoke("report", str(small_demo_ensemble), "--out", str(other), "--analyses", "relaxation")
    assert r.exit_code == 1 and "holds no report.json (not a trajkit report)" in r.output
    assert (other / "index.html").read_text() == "<p>mine</p>"

    copy = tmp_path / "copy"
    shutil.copytree(report, copy)
    before = tree_digest(copy)
    single = next(small_demo_ensemble.glob("*.trajkit"))
    r = invoke("report", str(single), "--out", str(copy), "--analyses", "relaxation")
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "holds the report of other inputs" in r.output and "--force" in r.output
    assert tree_digest(copy) == before
    r = invoke("report", str(single), "--out", str(copy), "--analyses", "relaxation", "--force")
    assert r.exit_code == 0, r.output
    assert manifest(copy)["inputs"] == [str(single.resolve())] and not (copy / "analyses" / "chi4").exists()


# -- notebooks and data frames -------------------------------------------------------------------------------

def _hand_made() -> Result:
    r = Result(arrays={"msd": (np.arange(6.0).reshape(2, 3), ("tw_step", "step"))},
               coords={"tw_step": np.array([1, 10]), "step": np.array([0, 5, 50])},
               scalars={"beta": 0.5, "beta_ci": [0.4, 0.6], "beta_sem": 0.05, "regime": "simple"},
               params={"select": "all"}, provenance={"analysis": "hand", "analysis_version": "1"})
    return r


def test_result_repr_html_and_png():
    r = _hand_made()
    html = r._repr_html_()
    assert "<th>beta</th><td>0.5 [0.4, 0.6] ± 0.05</td>" in html and "beta_ci" not in html
    assert "<td>simple</td>" in html and "src='data:image/png;base64," in html
    assert r._repr_png_().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.fixture(scope="module")
def chi4(two_analyses) -> Result:
    """chi4 of the small demo ensemble as the report saved it: a grouped result (one group per temperature)."""
    return trajkit.load_result(two_analyses[0] / "analyses" / "chi4")


def test_to_xarray_round_trips_arrays_and_coordinates(two_analyses, chi4):
    out, _ = two_analyses
    for r in (trajkit.load_result(out / "analyses" / "relaxation"), chi4):
        name = r.provenance["analysis"]
        ds = r.to_xarray()
        assert set(ds.data_vars) == set(r.arrays)
        for k, a in r.arrays.items():
            np.testing.assert_array_equal(ds[k].values, a)
            assert ds[k].dims == r.dims[k]
        for d, c in r.coords.items():
            np.testing.assert_array_equal(ds.coords[d].values, c)
        assert ds.attrs["params"] == r.params and ds.attrs["provenance"]["analysis"] == name
        back = Result.from_xarray(ds)
        assert back.to_json() == r.to_json()
    assert ds["chi4"].attrs["long_name"].startswith(r"$\chi_4")
    assert float(ds["chi4"].sel(group=r.coords["group"][1]).max()) == float(np.nanmax(r.arrays["chi4"][1]))


def test_scalars_frame_pairs_intervals_and_groups(chi4):
    f = _hand_made().scalars_frame()
    assert list(f["name"]) == ["beta", "regime"]
    assert f.iloc[0][["value", "ci_low", "ci_high", "sem"]].tolist() == [0.5, 0.4, 0.6, 0.05]
    r = chi4
    f = r.scalars_frame()
    peak = f[f["name"] == "chi4_peak"]
    assert list(peak["group"]) == [str(g) for g in r.coords["group"]]
    assert list(peak["value"]) == r.scalars["chi4_peak"] and list(peak["sem"]) == r.scalars["chi4_peak_sem"]
    long = r.to_dataframe("chi4")
    assert list(long.columns) == ["group", "tw_step", "step", "value"] and len(long) == r.arrays["chi4"].size
    assert r.to_dataframe().equals(f)


def test_missing_optional_extras_are_one_line_errors(monkeypatch):
    r = _hand_made()
    for module, call in (("xarray", r.to_xarray), ("pandas", r.scalars_frame)):
        monkeypatch.setitem(sys.modules, module, None)
        with pytest.raises(AnalysisError, match=rf"needs {module}; install it with: pip install 'trajkit\[report\]'"):
            call()


def test_archive_and_ensemble_repr_html(small_demo_ensemble):
    from html import escape

    from trajkit.archive.info import summarize, summary_rows

    ens = trajkit.open_ensemble([small_demo_ensemble], check=False)
    a = ens[0]
    html = a._repr_html_()
    for key, value in summary_rows(summarize(a)):
        if key != "size on disk":
            assert f"{escape(key)}</th><td style='text-align:left'>{escape(value)}</td>" in html
    html = ens._repr_html_()
    assert html.count("<tr>") == 1 + len(ens)
    for arch in ens:
        assert Path(arch.path).name in html and f"<td>{float(arch.metrics['test_loss'][-1]):.4g}</td>" in html
