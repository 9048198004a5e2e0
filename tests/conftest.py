"""Shared pytest fixtures (each engineer adds small, independent fixtures here)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest


def _tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (or ``root`` itself if it is a file).

    The writer lock file is left out: it holds the pid of the last lock holder, not archive data.
    """
    root = Path(root)
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".trajkit.lock"}


@pytest.fixture
def tree_digest() -> Callable[[Path], dict[str, str]]:
    """A function hashing every file of an archive, to assert a failed operation changed nothing."""
    return _tree_digest


@pytest.fixture(scope="session", autouse=True)
def private_user_cache(tmp_path_factory):
    """Tests never write into the real user cache: ``$TRAJKIT_CACHE_DIR`` (numba's kernel cache, parsed
    corpora) points at a session temp dir, inherited by the CLI subprocesses the tests start."""
    import os

    d = tmp_path_factory.mktemp("trajkit-cache")
    old = os.environ.get("TRAJKIT_CACHE_DIR")
    os.environ["TRAJKIT_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("TRAJKIT_CACHE_DIR", None)
    else:
        os.environ["TRAJKIT_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def chorale_cache(private_user_cache):
    """The private ``$TRAJKIT_CACHE_DIR`` where the parsed Bach chorales go (parsed once per session)."""
    return private_user_cache


@pytest.fixture(scope="session")
def small_demo_ensemble(tmp_path_factory, private_user_cache) -> Path:
    """The README demo's ensemble scaled down (2 temperatures × 2 replicas, 120 steps, ~11 snapshots), for
    the report tests; recorded once per session."""
    import copy

    from trajkit.demo import DEMO_CONFIG
    from trajkit.experiments import run_experiment

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["run"].update(steps=120, replicas=2)
    cfg["snapshots"]["n"] = 10
    cfg["sweep"] = {"dynamics.temperature": [1e-4, 1e-2]}
    out = tmp_path_factory.mktemp("small-demo") / "ensemble"
    run_experiment(cfg, out, quiet=True, threads=1)
    return out
