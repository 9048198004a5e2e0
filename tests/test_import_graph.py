"""The layers point one way: an ast walk over trajkit/ and plugins/ (function-level imports included) finds
no import cycle, between modules or between sub-packages, and no import in a forbidden direction.

Layers (docs/ARCHITECTURE.md, "Layers"): cli → analysis / experiments / landscape → models → record →
archive, plugins on top through the public API only. A module's imports are every ``import`` and
``from ... import`` anywhere in it (inside functions too, and under ``if TYPE_CHECKING``): a function-level
import that closes a cycle is a cycle.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Cycles known and scheduled for removal (none today); an entry that no longer exists fails the test.
KNOWN_CYCLES: list[frozenset[str]] = []

#: (importing layer, imported layer, why): directions that must never appear.
FORBIDDEN: list[tuple[str, str, str]] = [
    *[("trajkit.archive", b, "the format knows no recorder, analysis, training or CLI")
      for b in ("trajkit.record", "trajkit.analysis", "trajkit.experiments", "trajkit.landscape", "trajkit.models",
                "trajkit.cli")],
    *[("trajkit.record", b, "the recorder serves any loop and pulls no analysis in")
      for b in ("trajkit.analysis", "trajkit.experiments", "trajkit.landscape", "trajkit.models", "trajkit.cli")],
    *[("trajkit.models", b, "the model layer sits under experiments and landscape")
      for b in ("trajkit.analysis", "trajkit.experiments", "trajkit.landscape", "trajkit.record", "trajkit.cli")],
    *[("trajkit.analysis", b, "the analysis core knows no training, no landscape, no CLI, plugins by entry point")
      for b in ("trajkit.experiments", "trajkit.landscape", "trajkit.cli", "PLUGINS")],
    *[("trajkit.experiments", b, "training knows no analysis; experiments and landscape one way at most")
      for b in ("trajkit.analysis", "trajkit.landscape", "trajkit.cli")],
    *[("trajkit.landscape", b, "landscape builds on the model layer and the archive; plugins join it to analysis")
      for b in ("trajkit.experiments", "trajkit.analysis", "trajkit.cli")],
    ("PLUGINS", "trajkit.cli", "plugins use the library API"),
    *[(a, "trajkit.report", "the report sits on top of the analysis core; only the CLI calls it")
      for a in ("trajkit.archive", "trajkit.record", "trajkit.models", "trajkit.analysis", "trajkit.experiments",
                "trajkit.landscape", "PLUGINS")],
    *[("trajkit.integrations", b, "the Lightning / Hugging Face callbacks only drive the Recorder")
      for b in ("trajkit.analysis", "trajkit.experiments", "trajkit.landscape", "trajkit.cli", "trajkit.report")],
    *[(a, "trajkit.integrations", "nothing in trajkit depends on a training framework's callbacks")
      for a in ("trajkit.archive", "trajkit.record", "trajkit.models", "trajkit.analysis", "trajkit.experiments",
                "trajkit.landscape", "PLUGINS")],
]

#: What a plugin may import from trajkit: these packages' public (non-underscore) modules and names.
PLUGIN_API = ("trajkit", "trajkit.analysis", "trajkit.archive", "trajkit.landscape", "trajkit.experiments",
              "trajkit.errors")


@dataclass
class Graph:
    """Modules of a tree (``name -> file``), their internal imports, and the names each import takes."""

    modules: dict[str, Path]
    edges: dict[str, set[str]] = field(default_factory=dict)
    #: (importer, imported module, name, line) for every ``from X import name`` of an internal module X
    names: list[tuple[str, str, str, int]] = field(default_factory=list)
    plugin_packages: set[str] = field(default_factory=set)

    def layer(self, module: str) -> str:
        """``trajkit.<sub>`` for the core (``trajkit`` itself for its __init__), the package for a plugin."""
        parts = module.split(".")
        return ".".join(parts[:2]) if parts[0] == "trajkit" else parts[0]

    def is_plugin(self, module: str) -> bool:
        return module.split(".")[0] in self.plugin_packages


def build_graph(root: Path) -> Graph:
    """Parse every module under ``root/trajkit`` and ``root/plugins/*`` (plugins are top-level packages)."""
    modules: dict[str, Path] = {}
    plugin_packages: set[str] = set()
    for base, top in ((root / "trajkit", root), (root / "plugins", root / "plugins")):
        for f in sorted(base.rglob("*.py")) if base.exists() else []:
            parts = list(f.relative_to(top).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = f
            if top.name == "plugins":
                plugin_packages.add(parts[0])
    g = Graph(modules, {m: set() for m in modules}, plugin_packages=plugin_packages)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for m, f in modules.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
                if base in modules:
                    g.names.extend((m, base, a.name, node.lineno) for a in node.names
                                   if f"{base}.{a.name}" not in modules)
            for t in targets:
                r = resolve(t)
                own_package = m.startswith(r + ".") if r else False
                own_submodule = bool(r) and r.startswith(m + ".") and f.name == "__init__.py"
                if r and r != m and not own_package and not own_submodule:
                    g.edges[m].add(r)
    return g


def strongly_connected(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The cycles of a directed graph: its strongly connected components of two or more nodes (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def layer_edges(g: Graph) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, bs in g.edges.items():
        out.setdefault(g.layer(a), set()).update(g.layer(b) for b in bs if g.layer(b) != g.layer(a))
    return out


def cycle_problems(g: Graph, known: list[frozenset[str]]) -> list[str]:
    """One line per cycle (module or sub-package level) that is not in ``known``, and per stale entry."""
    problems = []
    found = strongly_connected(g.edges)
    for c in found:
        if c not in known:
            inner = "; ".join(f"{a} -> {b}" for a in sorted(c) for b in sorted(g.edges[a] & c))
            problems.append(f"import cycle {' <-> '.join(sorted(c))} ({inner})")
    for c in known:
        if c not in found:
            problems.append(f"KNOWN_CYCLES lists {' <-> '.join(sorted(c))}, which is gone: delete the entry")
    lay = layer_edges(g)
    for c in strongly_connected(lay):
        via = "; ".join(f"{a} -> {b}" for a in sorted(g.edges) for b in sorted(g.edges[a])
                        if g.layer(a) in c and g.layer(b) in c and g.layer(a) != g.layer(b))
        problems.append(f"package cycle {' <-> '.join(sorted(c))} ({via})")
    return problems


def direction_problems(g: Graph, forbidden: list[tuple[str, str, str]]) -> list[str]:
    """One line per import in a forbidden direction (``PLUGINS`` stands for every plugin package)."""
    def matches(layer: str, module: str, pattern: str) -> bool:
        return g.is_plugin(module) if pattern == "PLUGINS" else layer == pattern

    problems = []
    for a in sorted(g.edges):
        for b in sorted(g.edges[a]):
            la, lb = g.layer(a), g.layer(b)
            for src, dst, why in forbidden:
                if la != lb and matches(la, a, src) and matches(lb, b, dst):
                    problems.append(f"{a} imports {b}: {src} must not import {dst} ({why})")
    return problems


def plugin_api_problems(g: Graph) -> list[str]:
    """Plugins import only trajkit's public API and no other plugin package, and no module imports another
    plugin module's private (underscore) names."""
    problems = []
    for a in sorted(g.edges):
        if not g.is_plugin(a):
            continue
        for b in sorted(g.edges[a]):
            if g.is_plugin(b):
                if g.layer(b) != g.layer(a):
                    problems.append(f"{a} imports {b}: a plugin must not import another plugin package")
            elif any(p.startswith("_") for p in b.split(".")):
                problems.append(f"{a} imports {b}: a private trajkit module")
            elif b != "trajkit" and not any(b == api or b.startswith(api + ".") for api in PLUGIN_API[1:]):
                problems.append(f"{a} imports {b}: plugins use {', '.join(PLUGIN_API)} only")
    for importer, module, name, line in g.names:
        if (g.is_plugin(importer) or g.is_plugin(module)) and name.startswith("_") and importer != module:
            problems.append(f"{importer} (line {line}) imports the private name {name} from {module}")
    return problems


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(ROOT)


def test_the_tree_is_read_whole(graph):
    assert {"trajkit.archive.writer", "trajkit.models.registry", "trajkit.analysis.stats",
            "trajkit_dynamics.overlaps", "trajkit_landscape.minima"} <= set(graph.modules)
    assert graph.plugin_packages >= {"trajkit_dynamics", "trajkit_landscape"}
    assert "trajkit.models.registry" in graph.edges["trajkit.landscape.registry"]


def test_no_import_cycles(graph):
    assert cycle_problems(graph, KNOWN_CYCLES) == []


def test_no_import_in_a_forbidden_direction(graph):
    assert direction_problems(graph, FORBIDDEN) == []


def test_plugins_use_the_public_api_only(graph):
    assert plugin_api_problems(graph) == []


# -- the checker itself catches what it is for ---------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    root = _tree(tmp_path, {
        "trajkit/__init__.py": "",
        "trajkit/experiments/__init__.py": "",
        "trajkit/experiments/a.py": "from trajkit.experiments.b import x\n",
        "trajkit/experiments/b.py": "def x():\n    from trajkit.experiments import a\n    return a\n",
        "trajkit/landscape/__init__.py": "",
        "trajkit/landscape/c.py": "def f():\n    import trajkit.experiments.a\n",
        "trajkit/experiments/d.py": "from ..landscape import c\n",
    })
    g = build_graph(root)
    problems = cycle_problems(g, [])
    assert any("trajkit.experiments.a <-> trajkit.experiments.b" in p for p in problems)
    assert any(p.startswith("package cycle trajkit.experiments <-> trajkit.landscape") for p in problems)
    assert any("gone: delete the entry" in p for p in cycle_problems(g, [frozenset({"trajkit.x", "trajkit.y"})]))


def test_checker_finds_forbidden_directions_and_private_plugin_imports(tmp_path):
    root = _tree(tmp_path, {
        "trajkit/__init__.py": "",
        "trajkit/archive/__init__.py": "",
        "trajkit/archive/w.py": "def f():\n    from trajkit.record import r\n",
        "trajkit/record/__init__.py": "",
        "trajkit/record/r.py": "",
        "trajkit/analysis/__init__.py": "",
        "trajkit/analysis/_core.py": "",
        "trajkit/cli/__init__.py": "",
        "plugins/pa/__init__.py": "",
        "plugins/pa/one.py": "def _helper():\n    pass\n",
        "plugins/pa/two.py": "from pa.one import _helper\nfrom trajkit.analysis import _core\nimport trajkit.cli\n",
        "plugins/pb/__init__.py": "from pa.one import _helper\nfrom trajkit.record import r\n",
    })
    g = build_graph(root)
    directions = direction_problems(g, FORBIDDEN)
    assert any(p.startswith("trajkit.archive.w imports trajkit.record") for p in directions)
    assert any(p.startswith("pa.two imports trajkit.cli") for p in directions)
    api = plugin_api_problems(g)
    assert any("pb imports pa.one: a plugin must not import another plugin package" in p for p in api)
    assert any("pa.two imports trajkit.analysis._core: a private trajkit module" in p for p in api)
    assert any("pb imports trajkit.record.r: plugins use" in p for p in api)
    assert sum("imports the private name _helper from pa.one" in p for p in api) == 2
