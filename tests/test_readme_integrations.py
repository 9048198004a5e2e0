"""The README's Lightning and Hugging Face snippets run as printed and write the archives they promise."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trajkit

ROOT = Path(__file__).resolve().parents[1]


def _snippets() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("<!-- integrations:start -->"):text.index("<!-- integrations:end -->")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_one_snippet_per_library():
    lightning, hf = _snippets()
    assert "from trajkit.integrations.lightning import TrajkitCallback" in lightning
    assert "from trajkit.integrations.transformers import TrajkitCallback" in hf


@pytest.mark.slow
@pytest.mark.parametrize("which, archive, steps", [(0, "lightning.trajkit", 40), (1, "hf.trajkit", 20)])
def test_readme_snippet_runs_and_records(tmp_path, which, archive, steps):
    pytest.importorskip(["lightning", "transformers"][which], reason="the extra is not installed")
    (tmp_path / "snippet.py").write_text(_snippets()[which])
    r = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    arch = trajkit.open_archive(tmp_path / archive)
    np.testing.assert_array_equal(arch.steps, trajkit.schedules.log(1, steps, 10).steps(steps))
    np.testing.assert_array_equal(arch.trace["step"], np.arange(steps + 1))
    assert np.isfinite(arch.trace["loss"][1:]).all() and np.isfinite(arch.trace["lr"][1:]).all()
