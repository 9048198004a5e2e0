"""Recording a parameter subset: which of a model's tensors a ``select=`` spec keeps, and their layout."""

from __future__ import annotations

from typing import Any

from trajkit.archive.layout import Layout, select_columns


def subset_layout(named: list[tuple[str, Any]], layout: Layout, select: str | None
                  ) -> tuple[list[tuple[str, Any]], Layout]:
    """The ``(name, tensor)`` pairs of ``named`` that ``select`` keeps (all for None) and their layout:
    the kept entries in model order, offsets re-tiled from 0, names, shapes, roles and layer ids unchanged.

    ``select`` is a spec of :func:`trajkit.archive.layout.select_columns` (tensor-name globs, ``weights``,
    ``biases``, ``hidden``, ``layer:K``, joined by ``+``); one that matches nothing is an
    :class:`~trajkit.errors.ArchiveError` listing the tensors.
    """
    if select is None:
        return named, layout
    sel = select_columns(layout, str(select), "Recorder select")
    kept_named, kept = [], []
    offset = 0
    for (name, p), e in zip(named, layout, strict=True):
        if sel.within(e["offset"], e["offset"] + e["size"]):
            kept_named.append((name, p))
            kept.append(dict(e, offset=offset))
            offset += e["size"]
    return kept_named, kept
