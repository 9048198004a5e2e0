"""One study's section of docs/reproductions.md, for the gallery tests (tests/test_repro_*.py)."""

from __future__ import annotations

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
