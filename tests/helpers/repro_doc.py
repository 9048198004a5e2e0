"""One study's section of docs/reproductions.md, for the gallery tests (tests/test_repro_*.py)."""

from __future__ import annotations

import re
from pathlib import Path

REPRODUCTIONS = Path(__file__).resolve().parents[2] / "docs" / "reproductions.md"


class Section:
    """The section of docs/reproductions.md headed ``## <arxiv id> — ...``, up to the next ``## `` heading;
    ``read_text()`` like a file's, so a test reads its study's section as it would a file."""

    def __init__(self, arxiv_id: str):
        self.arxiv_id = arxiv_id

    def read_text(self) -> str:
        text = REPRODUCTIONS.read_text()
        start = text.find(f"\n## {self.arxiv_id} ")
        assert start >= 0, f"{REPRODUCTIONS}: no section headed '## {self.arxiv_id} ...'"
        end = text.find("\n## ", start + 1)
        return text[start + 1: end if end >= 0 else len(text)]


def table_rows(text: str) -> list[list[str]]:
    """The rows of a section's "quantity | this run | paper" table, split into cells."""
    head = text.index("| quantity | this run")
    rows = []
    for line in text[head:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def decimals(cell: str) -> list[float]:
    """The decimal numbers of a table cell, in order (the typographic minus read as a minus)."""
    return [float(x) for x in re.findall(r"-?\d+\.\d+", cell.replace("−", "-"))]


def rounded(v: float, ci, d: int = 2) -> list[float]:
    """A value and its interval (when there is one) rounded to ``d`` decimals, as a table prints them."""
    out = [round(v, d)]
    if ci and ci[0] is not None:
        out += [round(ci[0], d), round(ci[1], d)]
    return out
