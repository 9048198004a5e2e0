"""Parameters: parsing, validation, and the rule that they are checked before any data is read."""

from __future__ import annotations

import types

import numpy as np
import pytest
from click.testing import CliRunner

import trajkit
from trajkit.analysis import Analysis, Param, Result, hookimpl
from trajkit.analysis.contract import check_analysis_class
from trajkit.analysis.plugins import register_plugin, unregister_plugin
from trajkit.cli import cli
from trajkit.errors import AnalysisError
from trajkit.testing import check_analysis


class Probe(Analysis):
    name = "probe"
    version = "1.0.0"
    description = "Echoes its parameters; reads the first row of the archive."
    needs = "archive"
    params = (
        Param("waiting_times", "ints", default=[8], help="snapshot steps", min=0),
        Param("epsilon", "float", default=None, help="cutoff", check=lambda v: v > 0, valid="> 0"),
        Param("mode", "str", default="waiting", choices=("waiting", "lag"), help="pairing"),
        Param("thresholds", "floats", default=(0.9, 0.3679), min=0.0, max=1.0, help="levels"),
        Param("normalize", "bool", default=True, help="divide by N"),
        Param("bins", "int", default=50, min=2, max=1000, help="histogram bins"),
    )

    def compute(self, data, params, ctx):
        row = data.params[0, :]
        return Result(arrays={"row": (row, ("param",))}, scalars={"first": float(row[0])})


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setenv("TRAJKIT_LOAD_PLUGINS", "")
    mod = types.ModuleType("probe_plugin")

    @hookimpl
    def trajkit_register_analyses(register):
        register(Probe)

    mod.trajkit_register_analyses = trajkit_register_analyses
    register_plugin(mod, "probe-plugin")
    yield Probe
    monkeypatch.undo()  # restore the plugin switches before the registry is rescanned
    unregister_plugin("probe-plugin")


def test_cli_strings_parse_to_typed_values():
    p = {q.name: q for q in Probe.params}
    assert p["waiting_times"].parse("8") == [8]                      # a list type always gives a list
    assert p["waiting_times"].parse("100,1000") == [100, 1000]
    assert p["waiting_times"].parse("100,") == [100]
    assert p["waiting_times"].parse("[10, 20]") == [10, 20]
    assert p["epsilon"].parse("none") is None and p["epsilon"].parse("1e-3") == 1e-3
    assert p["normalize"].parse("no") is False and p["normalize"].parse("True") is True
    assert p["thresholds"].parse("0.5,0.1") == [0.5, 0.1]
    resolved = Probe.resolve_params({"waiting_times": "10,100", "bins": "20"})
    assert resolved == {"waiting_times": [10, 100], "epsilon": None, "mode": "waiting",
                        "thresholds": [0.9, 0.3679], "normalize": True, "bins": 20}


@pytest.mark.parametrize("given, message", [
    ({"epsilom": 1.0}, "analysis 'probe' has no parameter 'epsilom'; did you mean 'epsilon'?"),
    ({"bins": "many"}, "parameter 'bins': cannot read 'many'; expected an integer, in [2, 1000]"),
    ({"bins": 2.5}, "parameter 'bins': got 2.5 (float); expected an integer"),
    ({"bins": 1}, "parameter 'bins'=1 is out of range; valid: an integer, in [2, 1000]"),
    ({"epsilon": -1.0}, "parameter 'epsilon'=-1.0 is out of range; valid: > 0"),
    ({"mode": "lags"}, "parameter 'mode'='lags' is not allowed (did you mean 'lag'?); valid: one of waiting"),
    ({"thresholds": [0.5, 1.5]}, "parameter 'thresholds'=[0.5, 1.5] is out of range; valid: a number or"),
    ({"normalize": "maybe"}, "parameter 'normalize': cannot read 'maybe'; expected true or false"),
    ({"waiting_times": [10, -1]}, "parameter 'waiting_times'=[10, -1] is out of range"),
])
def test_bad_parameters_fail_before_any_data_is_read(probe, given, message, tmp_path):
    missing = tmp_path / "does-not-exist.trajkit"         # opening it would fail with an archive error
    with pytest.raises(AnalysisError) as e:
        trajkit.analyze("probe", [missing], **given)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_bad_parameter_one_line_exit_1_nothing_written(probe, tmp_path):
    out = tmp_path / "out"
    missing = str(tmp_path / "nope.trajkit")
    r = CliRunner().invoke(cli, ["analyze", "--plugin", "probe", "-p", "bins=1", missing, "--out", str(out)])
    assert r.exit_code == 1
    assert r.output.strip() == ("trajkit: error: parameter 'bins'=1 is out of range; valid: an integer, "
                                "in [2, 1000]")
    assert not out.exists()
    r = CliRunner().invoke(cli, ["analyze", "--plugin", "probe", "-p", "bins", str(tmp_path)])
    assert r.exit_code == 1 and "expected key=value" in r.output


def test_cli_analysis_help_lists_parameters(probe):
    r = CliRunner().invoke(cli, ["analyze", "--plugin", "probe", "--help"])
    assert r.exit_code == 0
    assert "probe 1.0.0 (plugin probe-plugin): Echoes its parameters" in r.output
    assert "bins (int, default 50)" in r.output and "valid: an integer, in [2, 1000]" in r.output
    assert "epsilon (float, default none)" in r.output and "valid: a number, > 0, or none" in r.output


def test_good_parameters_run_and_fill_provenance(probe, tmp_path):
    path = tmp_path / "a.trajkit"
    with trajkit.archive.create(path, n_params=4) as w:
        w.append(3, np.arange(4, dtype=np.float32))
    r = trajkit.analyze("probe", path, bins=10, mode="lag")
    assert r.scalars["first"] == 0.0 and r.params["bins"] == 10 and r.params["mode"] == "lag"
    prov = r.provenance
    assert prov["analysis"] == "probe" and prov["plugin"] == "probe-plugin" and prov["device"] == "cpu"
    assert prov["run_ids"] == [trajkit.open_archive(path).run_id] and prov["inputs"] == [str(path)]
    assert [a["name"] for a in trajkit.list_analyses()] == ["probe"]
    with pytest.raises(AnalysisError, match="takes exactly one archive, got 2"):
        trajkit.analyze("probe", [path, path.parent / "b.trajkit"])
    assert check_analysis(Probe, data=path, tmp_path=tmp_path).scalars["first"] == 0.0


def test_contract_checks_at_registration():
    class NoName(Probe):
        name = ""

    class BadNeeds(Probe):
        needs = "everything"

    class BadDefault(Probe):
        params = (Param("k", "int", default=0, min=1, help="k"),)

    class TwoLines(Probe):
        description = "one\ntwo"

    for cls, msg in [(NoName, "no valid name"), (BadNeeds, "needs='everything'"),
                     (BadDefault, "invalid default"), (TwoLines, "one-line description"),
                     (int, "pass a subclass of trajkit.analysis.Analysis")]:
        with pytest.raises(AnalysisError, match=msg):
            check_analysis_class(cls, "plugin 'x'")
    with pytest.raises(AnalysisError, match="type 'complex'"):
        Param("z", "complex")


def test_groups_analysis_gets_group_by():
    class ByTemperature(Probe):
        needs = "groups"
        params = ()

    assert ByTemperature.resolve_params({}) == {"group_by": "dynamics.temperature"}
