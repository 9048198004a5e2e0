"""Trajectory archives (zarr v3): create, open, validate and repair.

Public API: :func:`create` (a writer), :func:`open_archive` (an :class:`Archive`), :func:`validate`
(a list of :class:`Problem`), :func:`repair` (a :class:`RepairReport`), :func:`import_checkpoints`,
:func:`summarize`, :func:`run_state` (finished / live / interrupted), :func:`select_columns` (a
:class:`Selection` of column ranges). The format is specified in docs/FORMAT.md.

``validate`` and ``repair`` here are the functions; their modules are ``trajkit.archive.validate`` and
``trajkit.archive.repair`` in ``sys.modules`` (import names from them with ``from ... import``).

In a notebook an :class:`Archive` shows its ``trajkit info`` summary as a table (``_repr_html_``,
:func:`trajkit.archive.display.summary_html`); the method is attached here because the summary reads the
archive through :mod:`trajkit.archive.info`, which imports the reader.
"""

from trajkit.archive.display import summary_html
from trajkit.archive.format import FORMAT_VERSION
from trajkit.archive.importer import import_checkpoints
from trajkit.archive.info import RunState, run_state, summarize
from trajkit.archive.layout import Layout, Selection, layout_from_named_parameters, select_columns
from trajkit.archive.reader import Archive, Params, open_archive
from trajkit.archive.repair import RepairReport, repair
from trajkit.archive.validate import Problem, validate
from trajkit.archive.writer import ArchiveWriter, create

Archive._repr_html_ = summary_html  # type: ignore[attr-defined]

__all__ = ["FORMAT_VERSION", "Archive", "ArchiveWriter", "Layout", "Params", "Problem", "RepairReport",
           "RunState", "Selection", "create", "import_checkpoints", "layout_from_named_parameters", "open_archive",
           "repair", "run_state", "select_columns", "summarize", "validate"]
