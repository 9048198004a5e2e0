"""A user's clone holds every file the README and docs/*.md name.

Checked in README.md and every docs/*.md: each relative markdown link (``[text](target)``, images too),
each inline-code repository path (```docs/X.md```, ```examples/X.py```, ```tests/plugin_example/```:
a token whose first component is a top-level entry of the repository, or ``shared/``, or that ends in
``.md``), and the repository paths in fenced ``bash`` blocks. A path resolves against the repository
root or the document's own folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: first path components that name something in the repository (``shared/`` is the lead's folder outside
#: it: a document pointing there points outside a user's clone)
TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".git")} | {"shared", ".ci"}

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"`([^`\n]+)`")
PLACEHOLDER = re.compile(r"[<>{}*?\[\]$=|]")


def _is_repo_path(token: str) -> bool:
    token = token.strip().rstrip(".,;:")
    if not token or any(c.isspace() for c in token) or PLACEHOLDER.search(token) or "://" in token:
        return False
    return ("/" in token and token.split("/", 1)[0] in TOP) or token.endswith(".md")


def _exists(target: str, doc: Path) -> bool:
    target = target.split("#", 1)[0].split("::", 1)[0]
    target = re.sub(r":\d+$", "", target)
    return not target or (ROOT / target).exists() or (doc.parent / target).exists()


def _references(doc: Path) -> list[tuple[str, str]]:
    """(kind, target) for every link and repository path in ``doc``."""
    text = doc.read_text()
    refs: list[tuple[str, str]] = []
    for lang, body in FENCE.findall(text):
        if lang in ("bash", "sh", "console"):
            for token in re.split(r"[\s\"']+", body):
                if _is_repo_path(token):
                    refs.append(("command", token.rstrip(".,;:")))
    prose = FENCE.sub("", text)
    for target in LINK.findall(prose):
        if not re.match(r"^(https?:|mailto:|#)", target):
            refs.append(("link", target))
    for token in CODE.findall(LINK.sub("", prose)):
        if _is_repo_path(token):
            refs.append(("code", token.strip().rstrip(".,;:")))
    return refs


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_file_is_in_the_repository(doc):
    missing = [f"{kind} {target}" for kind, target in _references(doc) if not _exists(target, doc)]
    assert not missing, f"{doc.relative_to(ROOT)} names files a clone does not have: {missing}"


def test_the_checker_sees_links_code_paths_and_commands(tmp_path):
    """The checker itself: it finds each kind of reference and flags the missing ones (and only those)."""
    doc = tmp_path / "x.md"
    doc.write_text("See [the format](docs/FORMAT.md), [gone](docs/GONE.md#part), `shared/OBSERVABLES.md`,\n"
                   "`examples/nothing_here.py`, `docs/ARCHITECTURE.md`, `run.trajkit`, `trajkit record`,\n"
                   "[web](https://example.org) and `benchmarks/<name>.py`.\n\n"
                   "```bash\ntrajkit record --config examples/langevin_digits.toml --out runs/\n"
                   "python benchmarks/missing_bench.py\n```\n")
    missing = {t for _, t in _references(doc) if not _exists(t, doc)}
    assert missing == {"docs/GONE.md#part", "shared/OBSERVABLES.md", "examples/nothing_here.py",
                       "benchmarks/missing_bench.py"}
    found = {t for _, t in _references(doc)}
    assert {"docs/FORMAT.md", "docs/ARCHITECTURE.md", "examples/langevin_digits.toml"} <= found


def test_plugin_table_lists_every_built_in_analysis():
    """The README's plugin table has one row per analysis that trajkit's own plugins register."""
    from trajkit.analysis import list_analyses

    text = (ROOT / "README.md").read_text()
    table = {m for m in re.findall(r"^\| `([a-z_0-9]+)` \|", text, re.M)}
    built_in = {a["name"] for a in list_analyses() if a["distribution"] == "trajkit"}
    assert built_in and table == built_in
