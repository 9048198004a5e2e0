"""What is written where, and what the command line prints: matplotlib's config under trajkit's cache,
``trajkit info --steps``, and every warning as one ``trajkit: warning:`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import click
import numpy as np
import pytest
from click.testing import CliRunner

from trajkit.archive import create
from trajkit.cli import cli

_PLOT = """
import os, io, sys
import numpy as np
from trajkit.analysis.result import Result
fig = Result(arrays={"y": (np.arange(4.0), ("t",))}, coords={"t": np.arange(4)}).plot()
fig.savefig(io.BytesIO(), format="png")
import matplotlib
print(os.environ.get("MPLCONFIGDIR"), matplotlib.get_configdir(), matplotlib.get_cachedir())
"""


def _plot_in_fresh_home(tmp_path, **env):
    home = tmp_path / "home"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MPLCONFIGDIR", "TRAJKIT_CACHE_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    proc = subprocess.run([sys.executable, "-c", _PLOT], env={**clean, "HOME": str(home), **env},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return home, proc.stdout.split()


def test_matplotlib_writes_only_under_trajkits_cache(tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs the [plot] extra")
    home, (env_dir, config, cache) = _plot_in_fresh_home(tmp_path)
    expected = str(home / ".cache" / "trajkit" / "matplotlib")
    assert env_dir == config == cache == expected
    written = {str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()}
    assert written and all(p.startswith(".cache/trajkit/matplotlib/") for p in written), written


def test_a_users_mplconfigdir_is_kept(tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs the [plot] extra")
    mine = tmp_path / "mine"
    _, (env_dir, config, _) = _plot_in_fresh_home(tmp_path, MPLCONFIGDIR=str(mine))
    assert env_dir == config == str(mine)


def test_info_steps_lists_every_snapshot_step(tmp_path):
    path = tmp_path / "run.trajkit"
    steps = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765, 10946,
             17711, 28657]
    with create(path, n_params=3) as w:
        for k in steps:
            w.append(k, np.zeros(3, np.float32))
    res = CliRunner().invoke(cli, ["info", "--steps", str(path)], catch_exceptions=False)
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    start = lines.index(f"snapshot steps ({len(steps)}):")
    listed = [int(x) for line in lines[start + 1:] for x in line.split()]
    assert listed == steps
    assert all(line.startswith("  ") and len(line) <= 100 for line in lines[start + 1:])
    doc = json.loads(CliRunner().invoke(cli, ["info", "--json", "--steps", str(path)]).stdout)
    assert doc["snapshot_steps"] == steps
    assert "snapshot_steps" not in json.loads(CliRunner().invoke(cli, ["info", "--json", str(path)]).stdout)


@click.command("warn-test")
def _warning_command() -> None:
    warnings.warn("first line\n   second line", UserWarning, stacklevel=1)
    warnings.warn_explicit("old API", DeprecationWarning, "x.py", 1, module="numba.core.thing")
    warnings.warn_explicit("trajkit's own deprecation", FutureWarning, "x.py", 2, module="trajkit.thing")
    click.echo("done")


def test_every_warning_is_one_trajkit_line_and_third_party_noise_is_hidden():
    cli.add_command(_warning_command)
    try:
        res = CliRunner().invoke(cli, ["warn-test"], catch_exceptions=False)
    finally:
        cli.commands.pop("warn-test")
    assert res.exit_code == 0 and res.stdout == "done\n"
    assert res.stderr.splitlines() == ["trajkit: warning: first line second line",
                                       "trajkit: warning: trajkit's own deprecation"]
    assert warnings.showwarning.__module__ == "warnings"      # nothing leaks out of the command
