"""Parameters with one meaning, analyze() without CLI flags, NaN/inf refused, one device resolver, and an
exception from inside an analysis that keeps its class (issues 13.5-13.7, 14.3)."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import trajkit
from trajkit import synthetic
from trajkit.analysis import Analysis, Param, Result, hookimpl
from trajkit.analysis.api import analyze
from trajkit.analysis.contract import ANALYZE_KEYWORDS, CLI_OPTIONS, check_analysis_class
from trajkit.analysis.plugins import get_registry, register_plugin, unregister_plugin
from trajkit.cli import cli
from trajkit.devices import resolve_device
from trajkit.errors import AnalysisError, ArchiveError, ConfigError, DeviceError, MetadataError, PluginError
from trajkit.experiments import load_config, run_experiment

ROOT = Path(__file__).resolve().parents[1]
STEPS = np.array([0, 100, 1000, 5000, 20000, 40000, 80000])
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present, so cuda is not an error here")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("tw") / "run.trajkit"
    return synthetic.write_archive(path, STEPS, synthetic.brownian(STEPS, 64, 1e-4, init_scale=1.0, seed=0))


def _one_error_line(res):
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("trajkit: error: "), res.output
    return lines[0]


# -- 13.5: a parameter's meaning never depends on its value's type ----------------------------------------------


def test_waiting_times_20000_is_step_20000(run):
    r = trajkit.analyze("overlaps", [run], waiting_times=20000, epsilon=1e-3)
    assert r.params["waiting_times"] == [20000]
    assert list(r.coords["tw_step"]) == [20000]
    # the MSD at lag 0 is 0 and the first later snapshot is step 40000 (independent of the count form)
    msd = r.arrays["msd"]
    w = trajkit.open_archive(run).params[:, :].astype(np.float64)
    assert msd[0, 4] == 0.0
    assert np.isclose(msd[0, 5], np.mean((w[5] - w[4]) ** 2), rtol=1e-9)
    assert np.all(np.isnan(msd[0, :4]))                       # before t_w


def test_a_waiting_time_that_is_not_a_snapshot_names_the_nearest_steps(run):
    with pytest.raises(AnalysisError) as e:
        trajkit.analyze("overlaps", [run], waiting_times=19000, epsilon=1e-3)
    text = str(e.value)
    assert "\n" not in text
    assert "waiting time 19000 is not a snapshot step; nearest snapshot is step 20000" in text
    assert "snapshots around it: 5000 and 20000" in text and "trajkit info --steps" in text


def test_the_count_has_its_own_name_and_both_together_are_refused(run):
    r = trajkit.analyze("overlaps", [run], n_waiting_times=3, epsilon=1e-3)
    expected = STEPS[trajkit.analysis.times.log_spaced_rows(STEPS, 3)]
    assert list(r.coords["tw_step"]) == list(expected) and r.params["waiting_times"] is None
    with pytest.raises(AnalysisError, match="give waiting_times or n_waiting_times, not both"):
        trajkit.analyze("overlaps", [run], waiting_times=[100], n_waiting_times=3)
    with pytest.raises(AnalysisError, match=r"parameter 'n_waiting_times': got \[100, 1000\] \(list\)"):
        trajkit.analyze("overlaps", [run], n_waiting_times=[100, 1000])


def test_list_parameters_stay_lists_from_python_and_the_command_line(run):
    r = trajkit.analyze("overlaps", [run], waiting_times=np.int64(1000), epsilon=1e-3)
    assert r.params["waiting_times"] == [1000] and type(r.params["waiting_times"][0]) is int
    res = CliRunner().invoke(cli, ["analyze", "--plugin", "overlaps", "-p", "waiting_times=100", "-p",
                                   "epsilon=1e-3", str(run), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["params"]["waiting_times"] == [100]
    rel = trajkit.analyze("relaxation", [run], waiting_times=[0], epsilon=1e-3, thresholds=0.5, n_boot=0)
    assert rel.params["thresholds"] == [0.5]


# -- analyze() takes analysis parameters only ---------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["from_cli", "out", "json", "params", "plugin", "debug"])
def test_analyze_refuses_a_cli_flag(flag, tmp_path):
    missing = tmp_path / "never-opened.trajkit"
    with pytest.raises(AnalysisError) as e:
        trajkit.analyze("overlaps", [missing], **{flag: True})
    text = str(e.value)
    assert "\n" not in text and f"takes analysis parameters only, not {flag}=" in text
    assert "--help" not in text


def test_analyze_keywords_are_the_reserved_names():
    sig = inspect.signature(analyze)
    named = [n for n, p in sig.parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    assert tuple(named) == ANALYZE_KEYWORDS
    assert sig.parameters["device"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["progress"].kind is inspect.Parameter.KEYWORD_ONLY


class _Echo(Analysis):
    name = "echo"
    version = "1.0.0"
    description = "Echoes the first parameter of the first snapshot."
    needs = "archive"

    def compute(self, data, params, ctx):
        return Result(scalars={"first": float(data.params[0, 0])})


@pytest.mark.parametrize("bad", [*ANALYZE_KEYWORDS, *CLI_OPTIONS])
def test_a_param_named_like_an_analyze_keyword_is_refused_at_registration(bad):
    cls = type("Clash", (_Echo,), {"name": "clash", "params": (Param(bad, "int", default=1, help="x"),)})
    with pytest.raises(AnalysisError) as e:
        check_analysis_class(cls, "plugin 'p'")
    assert f"analysis Clash: parameter {bad!r} collides with" in str(e.value)
    assert str(e.value).startswith("plugin 'p': ")


def test_a_colliding_plugin_is_reported_broken_by_the_registry(monkeypatch):
    monkeypatch.setenv("TRAJKIT_LOAD_PLUGINS", "")
    mod = types.ModuleType("clash_plugin")
    cls = type("Clash", (_Echo,), {"name": "clash", "params": (Param("device", "str", default="x", help="x"),)})

    @hookimpl
    def trajkit_register_analyses(register):
        register(cls)

    mod.trajkit_register_analyses = trajkit_register_analyses
    with pytest.warns(UserWarning, match="parameter 'device' collides with the keyword 'device' of trajkit.analyze"):
        register_plugin(mod, "clash-plugin")
    try:
        assert "clash" not in get_registry().analyses
        assert [b.plugin for b in get_registry().broken] == ["clash-plugin"]
    finally:
        monkeypatch.undo()
        unregister_plugin("clash-plugin")


# -- 14.3: NaN and infinity are bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float32("nan"), [0.5, float("nan")]])
def test_non_finite_python_parameters_are_refused(run, value):
    key = "thresholds" if isinstance(value, list) else "epsilon"
    with pytest.raises(AnalysisError) as e:
        trajkit.analyze("relaxation", [run], waiting_times=[0], **{key: value})
    assert f"parameter {key!r}=" in str(e.value) and "is not a finite number" in str(e.value)


@pytest.mark.parametrize("param", ["epsilon=nan", "epsilon=inf", "epsilon=-inf", "epsilon_factor=NaN",
                                   "thresholds=0.5,nan", "tau_threshold=inf"])
def test_non_finite_cli_parameters_exit_1_and_write_nothing(run, param, tmp_path):
    out = tmp_path / "out"
    line = _one_error_line(CliRunner().invoke(cli, ["analyze", "--plugin", "relaxation", "-p", param, str(run),
                                                    "--out", str(out)]))
    assert f"parameter {param.split('=')[0]!r}=" in line and "is not a finite number" in line
    assert not out.exists()


SMALL = """
[model]
hidden = [4]
[data]
name = "pca_parity"
components = 4
n_train = 40
n_test = 20
[run]
steps = 5
[snapshots]
n = 3
"""


@pytest.fixture()
def small_config(tmp_path):
    p = tmp_path / "small.toml"
    p.write_text(SMALL)
    return p


@pytest.mark.parametrize("override", ["dynamics.temperature=nan", "dynamics.temperature=inf", "dynamics.lr=nan",
                                      "dynamics.lr=-inf", "data.label_noise=nan", "dynamics.momentum=+inf",
                                      "sweep.dynamics.lr=[0.1, nan]", "sweep.dynamics.temperature=[inf]"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_non_finite_set_values_exit_1_and_write_nothing(small_config, tmp_path, override, dry_run):
    out = tmp_path / "ens"
    args = ["record", "--config", str(small_config), "--out", str(out), "--set", override]
    line = _one_error_line(CliRunner().invoke(cli, args + (["--dry-run"] if dry_run else [])))
    key = override.split("=")[0].removeprefix("sweep.")
    assert re.search(rf"{re.escape(key)} must be a finite number, got (nan|inf|-inf)$", line), line
    assert not out.exists()


@pytest.mark.parametrize("line, key", [("lr = nan", "dynamics.lr"), ("temperature = inf", "dynamics.temperature"),
                                       ("weight_decay = -inf", "dynamics.weight_decay")])
def test_non_finite_toml_values_are_refused(tmp_path, line, key):
    p = tmp_path / "c.toml"
    p.write_text(SMALL + f"[dynamics]\nkind = \"langevin\"\n{line}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)} must be a finite number, got "):
        load_config(p)
    with pytest.raises(ConfigError):
        run_experiment(p, tmp_path / "ens", quiet=True)
    assert not (tmp_path / "ens").exists()


# -- 13.6: one validation layer, one "did you mean" ----------------------------------------------------------------


def test_one_did_you_mean_helper():
    users = []
    for f in [*(ROOT / "trajkit").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        text = f.read_text()
        if "difflib" in text or "get_close_matches" in text:
            users.append(f.relative_to(ROOT).as_posix())
    assert users == ["trajkit/validation.py"]


def test_config_and_param_schemas_are_valid_json_schema():
    from trajkit.experiments.config import config_schema
    from trajkit.validation import check_schema

    check_schema(config_schema())
    for info in get_registry().analyses.values():
        check_schema(info.cls.json_schema())


def test_importing_the_validation_layer_imports_neither_jsonschema_nor_torch():
    code = ("import sys, trajkit.analysis, trajkit.validation, trajkit.devices; "
            "print(sorted(m for m in ('jsonschema', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])})
    assert out.stdout.strip() == "[]"


def test_python_callers_are_not_told_to_see_help(tmp_path):
    p = Param("k", "int", default=1, check=lambda v: v % 2 == 1, help="odd")
    with pytest.raises(AnalysisError) as e:
        p.validate(2)
    assert "--help" not in str(e.value) and str(e.value) == "parameter 'k'=2 is out of range; valid: an integer"


# -- 13.7: one device resolver; an exception keeps its class ---------------------------------------------------


def test_device_resolver_rules():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(None) == resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match=r"^device = 'tpu' is not a device; use cpu, cuda, cuda:K or auto$"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match=r"cuda:99"):
        resolve_device("cuda:99")


@NO_GPU
def test_cuda_without_a_gpu_is_the_same_error_in_record_analyze_and_rebuild(tmp_path, small_config, run):
    from trajkit.experiments.rebuild import rebuild

    expected = f"'cuda' but torch finds no CUDA GPU here (torch {torch.__version__}); use cpu"
    ens = tmp_path / "ens"
    run_experiment(small_config, ens, quiet=True)
    archive = next(ens.glob("*.trajkit"))
    with pytest.raises(DeviceError) as e_rebuild:
        rebuild(archive, device="cuda")
    with pytest.raises(DeviceError) as e_analyze:
        trajkit.analyze("overlaps", [run], device="cuda", epsilon=1e-3)
    with pytest.raises(DeviceError) as e_record:
        run_experiment(small_config, tmp_path / "ens2", quiet=True, device="cuda")
    assert str(e_rebuild.value) == str(e_analyze.value) == f"device = {expected}"
    assert str(e_record.value) == f"run.device = {expected}"
    assert not (tmp_path / "ens2").exists()
    line = _one_error_line(CliRunner().invoke(cli, ["analyze", "--plugin", "overlaps", "--device", "cuda",
                                                    str(run)]))
    assert line == f"trajkit: error: --device = {expected} (--device cpu, or leave --device out)"


@pytest.fixture()
def raising(monkeypatch, tmp_path):
    """A throwaway plugin whose compute raises the exception given in params['kind']."""
    monkeypatch.setenv("TRAJKIT_LOAD_PLUGINS", "")

    class Raises(_Echo):
        name = "raises"
        params = (Param("kind", "str", default="archive", choices=("archive", "metadata", "value"), help="what"),)

        def compute(self, data, params, ctx):
            if params["kind"] == "archive":
                raise ArchiveError(f"{data.path}: chunk c.0.0 is missing")
            if params["kind"] == "metadata":
                raise MetadataError(str(data.path), [("/run_id", "is not a string")])
            raise ValueError("bad\nvalue")

    mod = types.ModuleType("raising_plugin")

    @hookimpl
    def trajkit_register_analyses(register):
        register(Raises)

    mod.trajkit_register_analyses = trajkit_register_analyses
    register_plugin(mod, "raising-plugin")
    yield
    monkeypatch.undo()
    unregister_plugin("raising-plugin")


def test_an_exception_from_compute_keeps_its_class(raising, run):
    with pytest.raises(ArchiveError) as e:
        trajkit.analyze("raises", run)
    assert type(e.value) is ArchiveError
    assert str(e.value) == f"analysis 'raises' (plugin 'raising-plugin'): {run}: chunk c.0.0 is missing"
    with pytest.raises(MetadataError) as m:
        trajkit.analyze("raises", run, kind="metadata")
    assert m.value.pointers == ["/run_id"] and str(m.value).startswith("analysis 'raises' (plugin")
    with pytest.raises(PluginError, match=r"raised ValueError: bad value$"):
        trajkit.analyze("raises", run, kind="value")
