"""Helpers for plugin authors' own tests: :func:`check_analysis` checks an analysis against the contract.

>>> from trajkit.testing import check_analysis
>>> def test_my_analysis(tmp_path):                                        # doctest: +SKIP
...     result = check_analysis(MyAnalysis, data=["run.trajkit"], tmp_path=tmp_path)
...     assert result.scalars["beta"] > 0
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from trajkit.analysis.contract import check_analysis_class
from trajkit.analysis.plugins import AnalysisInfo
from trajkit.analysis.result import Result, load_result
from trajkit.cachedir import use_matplotlib_cache


def check_analysis(cls: type, data: Any = None, params: dict[str, Any] | None = None,
                   tmp_path: str | os.PathLike | None = None, plot: bool = True) -> Result | None:
    """Assert that ``cls`` meets the analysis contract; with ``data``, run it and check its result.

    Checks: name, version and one-line description; ``needs`` is known; parameters are ``Param`` objects
    with valid defaults and a JSON-serialisable description. With ``data`` (paths, an Archive or an
    Ensemble, as :func:`trajkit.analyze` takes): ``compute`` returns a :class:`Result` that saves,
    validates against ``schemas/result.schema.json`` and loads back with the same arrays and scalars, and
    (with ``plot`` and matplotlib installed) ``result.plot()`` returns a Figure. Returns the result.
    Raises ``AssertionError`` or :class:`~trajkit.errors.TrajkitError` with the reason.
    """
    check_analysis_class(cls, f"check_analysis({getattr(cls, '__name__', cls)!r})")
    json.dumps(cls.describe())
    for p in cls.all_params():
        assert p.help or p.name == "group_by", f"parameter {p.name!r} of {cls.name!r} has no help text"
    if data is None:
        return None
    from trajkit.analysis.api import run_analysis

    result = run_analysis(AnalysisInfo(cls, "check_analysis", None, None), data, device="cpu", given=params)
    assert isinstance(result, Result)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp_path or tmp) / f"{cls.name}-result"
        result.save(out)
        back = load_result(out)
        assert set(back.arrays) == set(result.arrays), "saved arrays differ from the result's"
        assert set(back.scalars) == set(result.scalars), "saved scalars differ from the result's"
        for k, a in result.arrays.items():
            assert back.arrays[k].shape == a.shape and back.dims[k] == result.dims[k], k
    if plot:
        use_matplotlib_cache()
        try:
            from matplotlib.figure import Figure
        except ImportError:
            return result
        fig = result.plot()
        assert isinstance(fig, Figure), f"{cls.name}.plot() returned {type(fig).__name__}, not a Figure"
    return result


def params_chunk(archive: str | os.PathLike, row: int, j: int = 0) -> Path:
    """The file holding chunk ``(row, j)`` of a local archive's ``snapshots/params`` (whatever its chunk-key
    separator), e.g. to damage it on purpose in a test of ``validate``/``repair``."""
    from trajkit.archive import format as fmt

    pdir = Path(archive) / fmt.PARAMS
    return fmt.params_chunk_path(pdir, row, j, fmt.key_separator(fmt.read_json(pdir / "zarr.json")))
