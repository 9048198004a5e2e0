"""Plugin discovery through real installed distributions, broken plugins, strict mode and the allow-list.

Each fake plugin is a module plus a ``NAME-VERSION.dist-info`` (METADATA, entry_points.txt) in a temporary
directory put on PYTHONPATH of a ``trajkit`` subprocess — exactly what pip installs. The README's example
is pip-installed into a temporary target directory (never into the shared environment).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trajkit

HERE = Path(__file__).parent
ROOT = HERE.parent
TRAJKIT = str(Path(sys.executable).parent / "trajkit")
FAKES = {"good": ("tk_good", "tk-good", "1.2.3"),
         "broken_import": ("tk_broken_import", "tk-broken-import", "0.1"),
         "bad_signature": ("tk_bad_signature", "tk-bad-signature", "0.2"),
         "raising": ("tk_raising", "tk-raising", "0.3")}
ALL = ",".join(FAKES)


def _install_fake(site: Path, entry: str, module: str, dist: str, version: str) -> None:
    shutil.copy(HERE / "plugins_broken" / f"{module}.py", site / f"{module}.py")
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[trajkit.plugins]\n{entry} = {module}\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    for entry, (module, dist, version) in FAKES.items():
        _install_fake(site, entry, module, dist, version)
    return site


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "run.trajkit"
    rng = np.random.default_rng(0)
    with trajkit.archive.create(path, n_params=50) as w:
        for step in (0, 1, 2, 5, 10, 20):
            w.append(step, rng.standard_normal(50).astype(np.float32))
    return path


def run(args: list[str], site: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("TRAJKIT_") or k == "TRAJKIT_CACHE_DIR"}
    if site is not None:
        e["PYTHONPATH"] = str(site)
    e.update(env)
    return subprocess.run([TRAJKIT, *args], capture_output=True, text=True, env=e, timeout=120)


def test_discovery_and_broken_plugins_reported_by_name(site):
    r = run(["plugins", "--json"], site, TRAJKIT_LOAD_PLUGINS=ALL)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    by_name = {a["name"]: a for a in doc["analyses"]}
    assert by_name["count-snapshots"]["plugin"] == "good"
    assert by_name["count-snapshots"]["distribution"] == "tk-good"
    assert by_name["count-snapshots"]["plugin_version"] == "1.2.3"
    assert by_name["count-snapshots"]["version"] == "2.0.0"
    assert by_name["explode"]["plugin"] == "raising"
    broken = {b["plugin"]: b for b in doc["broken"]}
    assert set(broken) == {"broken_import", "bad_signature"}
    assert "trajkit_frobnicate_not_installed" in broken["broken_import"]["error"]
    assert broken["broken_import"]["distribution"] == "tk-broken-import"
    assert "trajkit_register_analyses(register, config)" in broken["bad_signature"]["error"]
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("trajkit: warning:")]
    assert len(warnings) == 2 and any("'broken_import'" in w for w in warnings)
    human = run(["plugins"], site, TRAJKIT_LOAD_PLUGINS=ALL)
    assert human.returncode == 0
    assert "BROKEN plugin bad_signature (tk-bad-signature 0.2)" in human.stdout


def test_strict_mode_turns_a_broken_plugin_into_an_error(site):
    r = run(["plugins"], site, TRAJKIT_LOAD_PLUGINS=ALL, TRAJKIT_STRICT_PLUGINS="1")
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "plugin 'bad_signature'" in err[0] and "Traceback" not in r.stderr


def test_allow_list_loads_only_the_named_plugins(site):
    r = run(["plugins", "--json"], site, TRAJKIT_LOAD_PLUGINS="good")
    doc = json.loads(r.stdout)
    assert [a["name"] for a in doc["analyses"]] == ["count-snapshots"]
    assert doc["broken"] == [] and r.stderr == ""
    r = run(["plugins", "--json"], site, TRAJKIT_LOAD_PLUGINS="")
    assert json.loads(r.stdout)["analyses"] == []


def test_a_raising_analysis_is_reported_under_its_plugin(site, archive, tree_digest, tmp_path):
    before = tree_digest(archive)
    out = tmp_path / "out"
    r = run(["analyze", "--plugin", "explode", str(archive), "--out", str(out)], site, TRAJKIT_LOAD_PLUGINS=ALL)
    assert r.returncode == 1
    assert tree_digest(archive) == before and not out.exists()      # nothing written anywhere
    err = [ln for ln in r.stderr.splitlines() if not ln.startswith("trajkit: warning:")]
    assert len(err) == 1
    assert "analysis 'explode' (plugin 'raising', tk-raising 0.3) raised RuntimeError: boom at snapshot 3" \
        in err[0]
    assert "Traceback" not in r.stderr
    debug = run(["--debug", "analyze", "--plugin", "explode", str(archive)], site, TRAJKIT_LOAD_PLUGINS=ALL)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "boom at snapshot 3" in debug.stderr
    ok = run(["analyze", "--plugin", "count-snapshots", "-p", "factor=3", "--json", str(archive)], site,
             TRAJKIT_LOAD_PLUGINS=ALL)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["scalars"] == {"n": 18} and doc["params"] == {"factor": 3}
    assert doc["provenance"]["plugin"] == "good" and doc["provenance"]["distribution"] == "tk-good"


def test_broken_plugin_analysis_cannot_be_run(site, archive):
    r = run(["analyze", "--plugin", "count-snapshot", str(archive)], site, TRAJKIT_LOAD_PLUGINS=ALL)
    assert r.returncode == 1
    assert "did you mean 'count-snapshots'?" in r.stderr
    assert "broken plugins: bad_signature, broken_import" in r.stderr


def _readme_files() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("<!-- plugin:start -->"):text.index("<!-- plugin:end -->")]
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", section, flags=re.S))


def test_readme_plugin_example_is_the_tested_package():
    files = _readme_files()
    assert set(files) == {"pyproject.toml", "trajkit_weightnorm.py"}
    for name, text in files.items():
        assert text == (HERE / "plugin_example" / name).read_text(), f"README's {name} differs"


def test_readme_plugin_installs_with_pip_and_runs(tmp_path, archive):
    target = tmp_path / "target"
    src = tmp_path / "trajkit-weightnorm"
    src.mkdir()
    for name, text in _readme_files().items():
        (src / name).write_text(text)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                          "--no-index", "--quiet", "--target", str(target), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    r = run(["plugins", "--json"], target, TRAJKIT_LOAD_PLUGINS="weightnorm")
    doc = json.loads(r.stdout)
    (a,) = doc["analyses"]
    assert (a["name"], a["plugin"], a["distribution"], a["plugin_version"]) == \
        ("weightnorm", "weightnorm", "trajkit-weightnorm", "0.1.0")
    h = run(["analyze", "--plugin", "weightnorm", "--help"], target, TRAJKIT_LOAD_PLUGINS="weightnorm")
    assert "select (str, default \"all\")" in h.stdout and "scale (float, default 1.0)" in h.stdout
    out = tmp_path / "out"
    r = run(["analyze", "--plugin", "weightnorm", "-p", "scale=2", str(archive), "--out", str(out), "--json"],
            target, TRAJKIT_LOAD_PLUGINS="weightnorm")
    assert r.returncode == 0, r.stderr
    X = trajkit.open_archive(archive).params[:, :].astype(np.float64)
    expect = 2 * ((X[-1] - X[0]) ** 2).mean()
    assert json.loads(r.stdout)["scalars"]["final_dist2"] == pytest.approx(expect, rel=1e-12)
    assert (out / "result.json").is_file() and (out / "weightnorm.png").stat().st_size > 0
    assert (out / "step.csv").read_text().startswith("step,norm2,dist2")
