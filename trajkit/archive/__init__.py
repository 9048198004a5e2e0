"""Trajectory archives (zarr v3): create, open, validate and repair.

Public API: :func:`create` (a writer), :func:`open_archive` (an :class:`Archive`), :func:`validate`,
:func:`repair`, :func:`select_columns`. The format is specified in docs/FORMAT.md.
"""

from trajkit.archive.format import FORMAT_VERSION
from trajkit.archive.layout import Layout, layout_from_named_parameters, select_columns
from trajkit.archive.reader import Archive, Params, open_archive
from trajkit.archive.writer import ArchiveWriter, create

__all__ = ["FORMAT_VERSION", "Archive", "ArchiveWriter", "Layout", "Params", "create",
           "layout_from_named_parameters", "open_archive", "select_columns"]
