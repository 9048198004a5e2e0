"""Pair kernels against a direct float64 numpy computation, both backends, selections, layers and memory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import trajkit
from trajkit.analysis import kernels
from trajkit.archive.layout import Selection, layer_slices
from trajkit.errors import AnalysisError, ArchiveError
from trajkit.testing import params_chunk

LAYOUT = [  # three layers, weights and biases: N = 600 + 30 + 300 + 10 + 77 = 1017
    {"name": "0.weight", "shape": [30, 20], "offset": 0, "size": 600, "role": "weight", "layer": 0},
    {"name": "0.bias", "shape": [30], "offset": 600, "size": 30, "role": "bias", "layer": 0},
    {"name": "2.weight", "shape": [10, 30], "offset": 630, "size": 300, "role": "weight", "layer": 1},
    {"name": "2.bias", "shape": [10], "offset": 930, "size": 10, "role": "bias", "layer": 1},
    {"name": "4.weight", "shape": [77], "offset": 940, "size": 77, "role": "weight", "layer": 2},
]
N = 1017


def _trajectory(T: int, n: int, rel_step: float, seed: int = 0) -> np.ndarray:
    """Weights of scale ~0.1 plus a random walk whose steps are ``rel_step`` times that scale."""
    rng = np.random.default_rng(seed)
    w0 = 0.1 * rng.standard_normal(n)
    steps = rel_step * 0.1 * rng.standard_normal((T, n))
    steps[0] = 0
    return (w0 + np.cumsum(steps, axis=0)).astype(np.float32)


def _write(path, X: np.ndarray, layout=None):
    with trajkit.archive.create(path, n_params=X.shape[1], layout=layout) as w:
        for t, row in enumerate(X):
            w.append(10 * t + t * t, row)
    return trajkit.open_archive(path)


def _reference(X: np.ndarray, pairs: np.ndarray, cols: np.ndarray, eps) -> dict[str, np.ndarray]:
    A = X[pairs[:, 0]][:, cols].astype(np.float64)
    B = X[pairs[:, 1]][:, cols].astype(np.float64)
    D = B - A
    eps = np.broadcast_to(np.asarray(eps, np.float64), (pairs.shape[0],))
    return {"dot": (A * B).sum(1), "sq": (D**2).sum(1), "quart": (D**4).sum(1),
            "theta": (np.abs(D) < eps[:, None]).sum(1).astype(np.float64),
            "norm_a": (A * A).sum(1), "norm_b": (B * B).sum(1)}


def _rel(a, b):
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))


@pytest.fixture(scope="module")
def tiny_disp(tmp_path_factory):
    X = _trajectory(24, N, 1e-4, seed=1)
    return X, _write(tmp_path_factory.mktemp("k") / "tiny.trajkit", X, LAYOUT)


@pytest.fixture(scope="module")
def big_disp(tmp_path_factory):
    X = _trajectory(17, N, 0.3, seed=2)
    return X, _write(tmp_path_factory.mktemp("k") / "big.trajkit", X, LAYOUT)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("which", ["tiny_disp", "big_disp"])
def test_pair_sums_match_float64_reference(which, backend, request):
    X, arch = request.getfixturevalue(which)
    T = X.shape[0]
    rng = np.random.default_rng(5)
    pairs = np.concatenate([np.stack([np.zeros(T, int), np.arange(T)], 1),        # shared a, contiguous b
                            rng.integers(0, T, size=(40, 2))])                    # arbitrary pairs
    eps = np.abs(X[1] - X[0]).mean() * rng.uniform(0.5, 2.0, size=pairs.shape[0])
    got = kernels.pair_sums(arch, pairs, epsilon=eps, backend=backend, block_bytes=64 * 1024)
    ref = _reference(X, pairs, np.arange(N), eps)
    for k in ("dot", "norm_a", "norm_b"):
        assert _rel(got[k], ref[k]) <= 1e-12, k
    nz = ref["sq"] > 0
    assert np.all(got["sq"][~nz] == 0) and np.all(got["quart"][~nz] == 0)
    for k in ("sq", "quart"):
        assert _rel(got[k][nz], ref[k][nz]) <= 1e-6, k
    np.testing.assert_array_equal(got["theta"], ref["theta"])
    assert got["n_cols"] == N


def test_float32_gram_identity_would_fail_here(tiny_disp):
    """Sanity: the data really is hard — |a|²+|b|²−2a·b in float32 is far off for these displacements."""
    X, _ = tiny_disp
    a, b = X[3], X[4]
    naive = float(np.dot(a, a) + np.dot(b, b) - 2 * np.dot(a, b))
    exact = float(((b.astype(np.float64) - a) ** 2).sum())
    assert abs(naive - exact) / exact > 1e-3


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_selection_and_per_layer(tiny_disp, backend):
    X, arch = tiny_disp
    pairs = np.array([[0, 5], [2, 9], [9, 2], [7, 7], [1, 23]])
    cols = arch.select("weights")
    got = kernels.pair_sums(arch, pairs, cols=cols, epsilon=1e-5, per_layer=True, backend=backend,
                            block_bytes=32 * 1024)
    ref = _reference(X, pairs, cols, 1e-5)
    assert got["n_cols"] == cols.size == 600 + 300 + 77
    for k in ("dot", "sq", "quart"):
        nz = ref[k] != 0
        assert _rel(got[k][nz], ref[k][nz]) <= 1e-6
    np.testing.assert_array_equal(got["theta"], ref["theta"])
    assert list(got["layers"]) == [0, 1, 2]
    idx = cols.indices()
    for li, sl in layer_slices(LAYOUT).items():
        lc = idx[(idx >= sl.start) & (idx < sl.stop)]
        r = _reference(X, pairs, lc, 1e-5)
        assert got["n_cols_per_layer"][li] == lc.size
        nz = r["sq"] > 0
        assert _rel(got["sq_per_layer"][nz, li], r["sq"][nz]) <= 1e-6
        np.testing.assert_array_equal(got["theta_per_layer"][:, li], r["theta"])
    np.testing.assert_allclose(got["dot_per_layer"].sum(1), got["dot"], rtol=1e-14)


def test_sparse_selection_reads_spans(tiny_disp):
    X, arch = tiny_disp
    cols = np.sort(np.random.default_rng(0).choice(N, 50, replace=False))
    pairs = np.array([[0, 1], [3, 20]])
    got = kernels.pair_sums(arch, pairs, cols=cols, sums=("sq", "dot"), block_bytes=1)
    ref = _reference(X, pairs, cols, 1.0)
    assert _rel(got["sq"], ref["sq"]) <= 1e-6 and _rel(got["dot"], ref["dot"]) <= 1e-12


# -- selections as ranges ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "ranges"), [
    ("all", [(0, N)]), ("hidden", [(0, 940)]), ("weights", [(0, 600), (630, 930), (940, N)]),
    ("biases", [(600, 630), (930, 940)]), ("layer:1", [(630, 940)]), ("*.bias", [(600, 630), (930, 940)]),
    ("0.*+4.weight", [(0, 630), (940, N)]), ("layer:2+layer:0", [(0, 630), (940, N)]),
])
def test_selections_are_ranges(tiny_disp, spec, ranges):
    """``select`` gives the tensors' ranges (merged where they touch), never an index array."""
    _, arch = tiny_disp
    sel = arch.select(spec)
    assert type(sel) is Selection and not isinstance(sel, np.ndarray)
    assert sel.ranges == ranges and sel.size == sum(b - a for a, b in ranges) == len(sel)
    idx = np.concatenate([np.arange(a, b) for a, b in ranges])
    np.testing.assert_array_equal(sel.indices(), idx)
    np.testing.assert_array_equal(np.asarray(sel), idx)
    assert list(sel) == idx.tolist()
    assert Selection.from_indices(idx[::-1].repeat(2), N) == sel


def test_pair_sums_and_reads_never_materialise_a_selection(tiny_disp, monkeypatch):
    """A range selection goes through pair_sums, gram and ``params[:, sel]`` without building its indices."""
    X, arch = tiny_disp
    sel = arch.select("weights")

    def refuse(self):
        raise AssertionError("Selection.indices() called")

    monkeypatch.setattr(Selection, "indices", refuse)
    pairs = np.array([[0, 3], [2, 9], [5, 23]])
    got = kernels.pair_sums(arch, pairs, cols=sel, epsilon=1e-5, block_bytes=16 * 1024)
    dot, _ = kernels.gram(arch, rows=np.arange(4), cols=sel, block_bytes=16 * 1024)
    block = arch.params[:, sel]
    monkeypatch.undo()
    idx = sel.indices()
    ref = _reference(X, pairs, idx, 1e-5)
    assert _rel(got["sq"], ref["sq"]) <= 1e-12 and _rel(got["dot"], ref["dot"]) <= 1e-12
    np.testing.assert_array_equal(got["theta"], ref["theta"])
    Y = X[:4][:, idx].astype(np.float64)
    assert _rel(dot, Y @ Y.T) <= 1e-12
    np.testing.assert_array_equal(block, X[:, idx])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_range_and_index_array_selections_agree(tiny_disp, backend):
    """The same columns as a Selection, as its sorted index array, and as a shuffled array with duplicates
    (the backward-compatible form) give the same sums, equal to the float64 reference."""
    X, arch = tiny_disp
    sel = arch.select("0.weight+2.bias+4.*")
    idx = sel.indices()
    messy = np.random.default_rng(1).permutation(np.concatenate([idx, idx[::7]]))
    pairs = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [3, 17], [9, 9]])
    runs = [kernels.pair_sums(arch, pairs, cols=c, epsilon=2e-5, backend=backend, block_bytes=8 * 1024,
                              per_layer=True) for c in (sel, idx, messy, list(idx))]
    ref = _reference(X, pairs, idx, 2e-5)
    for got in runs:
        assert got["n_cols"] == sel.size
        nz = ref["sq"] > 0
        for k in ("dot", "sq", "quart"):
            assert _rel(got[k][nz if k != "dot" else slice(None)], ref[k][nz if k != "dot" else slice(None)]) <= 1e-12
        np.testing.assert_array_equal(got["theta"], ref["theta"])
        np.testing.assert_array_equal(got["n_cols_per_layer"], runs[0]["n_cols_per_layer"])
        np.testing.assert_allclose(got["sq_per_layer"], runs[0]["sq_per_layer"], rtol=1e-13)


def test_params_indexed_by_a_selection_equals_numpy(tiny_disp):
    """``arch.params[rows, sel]`` equals numpy fancy indexing, for tensor selections, a scattered one read as
    a span (more ranges than ``SPAN_READ_RANGES``), single rows and a selection of another archive refused."""
    X, arch = tiny_disp
    scattered = Selection.from_indices(np.random.default_rng(2).choice(N, 300, replace=False), N)
    assert len(scattered.ranges) > arch.params.SPAN_READ_RANGES
    for sel in (arch.select("all"), arch.select("hidden"), arch.select("biases+4.weight"), scattered,
                Selection([(5, 6)], N)):
        idx = sel.indices()
        np.testing.assert_array_equal(arch.params[:, sel], X[:, idx])
        np.testing.assert_array_equal(arch.params[[3, 1, 20], sel], X[[3, 1, 20]][:, idx])
        np.testing.assert_array_equal(arch.params[7, sel], X[7, idx])
        np.testing.assert_array_equal(arch.params[2:9:3, sel], X[2:9:3][:, idx])
    with pytest.raises(ArchiveError, match="selection is over 10 parameters"):
        arch.params[:, Selection([(0, 10)], 10)]


def test_plan_blocks_pack_ranges(tiny_disp):
    """Blocks span at most ``block_cols`` columns, keep to one layer, and together hold each selected
    column exactly once, in order."""
    _, arch = tiny_disp
    sel = arch.select("weights")
    layers = [(s.start, s.stop) for s in layer_slices(LAYOUT).values()]
    for block_cols in (1, 7, 100, 650, 5000):
        blocks = kernels.plan_blocks(N, block_cols, sel, layers)
        got = np.concatenate([np.arange(b.start, b.stop) if b.parts is None else
                              np.concatenate([np.arange(b.start + p, b.start + q) for p, q in b.parts])
                              for b in blocks])
        np.testing.assert_array_equal(got, sel.indices())
        assert all(b.stop - b.start <= block_cols for b in blocks)
        assert all(layers[b.layer][0] <= b.start and b.stop <= layers[b.layer][1] for b in blocks)
        assert sum(b.n_cols for b in blocks) == sel.size


def test_backends_agree(big_disp):
    _, arch = big_disp
    pairs = np.array([[0, 3], [3, 16], [5, 5], [16, 1]])
    a = kernels.pair_sums(arch, pairs, epsilon=0.05, backend="numpy")
    b = kernels.pair_sums(arch, pairs, epsilon=0.05, backend="torch", device="cpu")
    for k in ("dot", "sq", "quart", "norm_a", "norm_b"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12)
    np.testing.assert_array_equal(a["theta"], b["theta"])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("which", ["tiny_disp", "big_disp"])
def test_gram_matches_reference(which, backend, request):
    X, arch = request.getfixturevalue(which)
    rows = np.arange(0, X.shape[0], 2)
    cols = arch.select("hidden")
    dot, sq = kernels.gram(arch, rows=rows, cols=cols, backend=backend, block_bytes=16 * 1024)
    Y = X[rows][:, cols].astype(np.float64)
    ref_dot = Y @ Y.T
    ref_sq = ((Y[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    assert _rel(dot, ref_dot) <= 1e-12
    off = ~np.eye(rows.size, dtype=bool)
    assert _rel(sq[off], ref_sq[off]) <= 1e-6
    assert np.all(np.diag(sq) == 0)


def _random_archive(path, T, n, seed=3):
    """A ``T × n`` archive of standard normal float32 rows (``12 MiB`` at 48 × 65,536)."""
    rng = np.random.default_rng(seed)
    with trajkit.archive.create(path, n_params=n) as w:
        for t in range(T):
            w.append(t, rng.standard_normal(n).astype(np.float32))
    return trajkit.open_archive(path)


def test_memory_stays_within_block_budget(tmp_path):
    """An archive of 12 MiB streamed with a 3 MiB budget: numpy's peak allocation stays under the budget."""
    T, n = 48, 65_536
    arch = _random_archive(tmp_path / "mem.trajkit", T, n)
    assert arch.params.nbytes >= 4 * 3 * 2**20
    pairs = np.stack([np.repeat([0, 4, 8], T), np.tile(np.arange(T), 3)], 1)
    budget = 3 * 2**20
    kernels.pair_sums(arch, pairs[:2], epsilon=0.5, backend="numpy", block_bytes=budget)   # one-time set-up
    tracemalloc.start()
    try:
        out = kernels.pair_sums(arch, pairs, epsilon=0.5, backend="numpy", block_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= budget, f"peak {peak / 2**20:.2f} MiB over the {budget / 2**20:.0f} MiB budget"
    X = arch.params[:, :]
    ref = _reference(X, pairs[:5], np.arange(n), 0.5)
    np.testing.assert_allclose(out["sq"][:5], ref["sq"], rtol=1e-9)


def test_bad_inputs(tiny_disp):
    _, arch = tiny_disp
    with pytest.raises(AnalysisError, match="shape"):
        kernels.pair_sums(arch, np.array([1, 2, 3]))
    with pytest.raises(AnalysisError, match=r"0\.\.23"):
        kernels.pair_sums(arch, np.array([[0, 24]]))
    with pytest.raises(AnalysisError, match="needs epsilon"):
        kernels.pair_sums(arch, np.array([[0, 1]]), sums=("theta",))
    with pytest.raises(AnalysisError, match="epsilon must be > 0"):
        kernels.pair_sums(arch, np.array([[0, 1]]), sums=("theta",), epsilon=-1.0)
    with pytest.raises(AnalysisError, match="unknown sum 'cube'"):
        kernels.pair_sums(arch, np.array([[0, 1]]), sums=("cube",))
    with pytest.raises(AnalysisError, match="backend"):
        kernels.pair_sums(arch, np.array([[0, 1]]), sums=("sq",), backend="jax")
    with pytest.raises(AnalysisError, match="outside"):
        kernels.pair_sums(arch, np.array([[0, 1]]), sums=("sq",), cols=[N])


def test_block_tasks_sum_to_the_total(tiny_disp):
    """The per-block tasks (what a Dask cluster would run, given the archive path) add up to pair_sums."""
    _, arch = tiny_disp
    pairs = np.array([[0, 4], [2, 11]])
    blocks = kernels.plan_blocks(N, 300)
    parts = [kernels.pair_sums_block(arch.path, pairs, b, sums=("sq", "dot")) for b in blocks]
    total = kernels.pair_sums(arch, pairs, sums=("sq", "dot"))
    np.testing.assert_allclose(sum(p["sq"] for p in parts), total["sq"], rtol=1e-13)
    np.testing.assert_allclose(sum(p["dot"] for p in parts), total["dot"], rtol=1e-13)


# -- the compiled loop, with no C compiler on PATH; boundaries and the read-ahead ---------------------------

_COMPILERS = ("cc", "gcc", "clang", "c99", "x86_64-linux-gnu-gcc")


@pytest.fixture(autouse=True)
def no_c_compiler(tmp_path_factory, monkeypatch):
    """Every test of this module runs with no C compiler on PATH (an empty directory) and no ``$CC``: the
    numba loop must not need one."""
    monkeypatch.setenv("PATH", str(tmp_path_factory.mktemp("empty-path")))
    monkeypatch.delenv("CC", raising=False)
    assert all(shutil.which(c) is None for c in _COMPILERS)


def test_numba_loop_is_what_runs():
    """The CPU backend is the numba-compiled loop (one eager specialisation), not a numpy fallback."""
    import numba

    loop = kernels._compiled()
    assert isinstance(loop, numba.core.registry.CPUDispatcher)
    assert len(loop.signatures) == 1
    assert kernels.compiled_loop() == f"numba {numba.__version__}"


@pytest.mark.parametrize("which", ["tiny_disp", "big_disp"])
def test_waiting_time_pairs(which, request):
    """Several waiting times × all later rows (runs of pairs sharing b, as the compiled loop groups them by
    two, plus odd remainders), per-pair ε, many blocks: equal to the float64 reference."""
    X, arch = request.getfixturevalue(which)
    T = X.shape[0]
    pairs = np.array([(a, b) for a in (0, 1, 3, 7, 12) for b in range(a, T)])
    eps = np.abs(X[2] - X[0]).mean() * np.linspace(0.3, 3.0, pairs.shape[0])
    got = kernels.pair_sums(arch, pairs, epsilon=eps, backend="numpy", block_bytes=40 * 1024)
    ref = _reference(X, pairs, np.arange(N), eps)
    for k in ("dot", "norm_a", "norm_b"):
        assert _rel(got[k], ref[k]) <= 1e-12, k
    nz = ref["sq"] > 0
    for k in ("sq", "quart"):
        assert _rel(got[k][nz], ref[k][nz]) <= 1e-12, k
        assert np.all(got[k][~nz] == 0)
    np.testing.assert_array_equal(got["theta"], ref["theta"])


def test_theta_boundary_is_strict_and_exact(tmp_path):
    """Θ(ε − |b−a|) with Θ(0) = 0: a difference exactly equal to ε is not counted, one just below is; the
    test is |b−a| < ε on the exact float64 difference, so even ε whose square underflows (ε = 1e-170, where
    d² < ε² would read 0 < 0) counts the unchanged (frozen) parameters."""
    n = 64
    a = np.full(n, 0.5, np.float32)
    b = a.copy()
    b[:8] = 0.75                      # d = +0.25 exactly
    b[8:16] = 0.25                    # d = −0.25 exactly
    b[16:24] = np.nextafter(np.float32(0.75), np.float32(0))   # d just below 0.25
    arch = _write(tmp_path / "edge.trajkit", np.stack([a, b]))
    pairs = np.array([[0, 1], [0, 1], [1, 0], [0, 0]])
    eps = np.array([0.25, np.nextafter(0.25, 1.0), 0.25, 1e-170])
    got = kernels.pair_sums(arch, pairs, epsilon=eps, backend="numpy")
    # n − 16 unchanged (+8 just below ε) | all n | as the first, a→b reversed | the n frozen self-pair entries
    np.testing.assert_array_equal(got["theta"], [n - 16, n, n - 16, n])
    ref = _reference(np.stack([a, b]), pairs, np.arange(n), eps)
    np.testing.assert_array_equal(got["theta"], ref["theta"])
    t = kernels.pair_sums(arch, pairs, epsilon=eps, backend="torch")
    np.testing.assert_array_equal(t["theta"], ref["theta"])


def test_large_offset_small_displacement(tmp_path):
    """Adversarial scale: weights of order 1e3 moving by 1e-4 relative (displacements ~0.1, a few ulps of
    float32 at that scale) and a uniform shift (every term equal: correlated rounding in a naive sum)."""
    rng = np.random.default_rng(7)
    n = 20_000
    w = (1e3 * (1 + rng.random(n))).astype(np.float32)
    X = np.stack([w, (w.astype(np.float64) * (1 + 1e-4 * rng.standard_normal(n))).astype(np.float32),
                  w + np.float32(0.125)])
    arch = _write(tmp_path / "adv.trajkit", X)
    pairs = np.array([[0, 1], [0, 2], [1, 2]])
    got = kernels.pair_sums(arch, pairs, epsilon=0.1, backend="numpy", block_bytes=64 * 1024)
    ref = _reference(X, pairs, np.arange(n), 0.1)
    for k in ("dot", "sq", "quart"):
        assert _rel(got[k], ref[k]) <= 1e-12, k
    np.testing.assert_array_equal(got["theta"], ref["theta"])
    assert got["sq"][1] == n * 0.125**2 and got["quart"][1] == n * 0.125**4     # exact for the shift


def test_read_error_in_the_reader_thread_surfaces(tmp_path):
    """A torn chunk met by the read-ahead thread raises the reader's one-line ArchiveError to the caller."""
    X = _trajectory(6, 5000, 0.1)
    _write(tmp_path / "torn.trajkit", X)
    chunk = params_chunk(tmp_path / "torn.trajkit", 4, 0)
    assert chunk.exists()
    chunk.write_bytes(chunk.read_bytes()[:1000])
    with pytest.raises(ArchiveError, match="truncated"):
        kernels.pair_sums(trajkit.open_archive(tmp_path / "torn.trajkit"), np.array([[0, 4], [1, 5]]),
                          sums=("sq",), block_bytes=8 * 1024)


_FROM_SCRATCH = """
import json, sys
import numpy as np
import trajkit
from trajkit.analysis import kernels
X = np.random.default_rng(4).standard_normal((6, 3000)).astype(np.float32)
with trajkit.archive.create(sys.argv[1], n_params=X.shape[1]) as w:
    for t, row in enumerate(X):
        w.append(t, row)
pairs = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [2, 5]])
got = kernels.pair_sums(trajkit.open_archive(sys.argv[1]), pairs, epsilon=0.7)
loop = kernels._compiled()
print(json.dumps({k: np.asarray(got[k]).tolist() for k in ("dot", "sq", "quart", "theta")}
                 | {"hits": sum(loop.stats.cache_hits.values()), "misses": sum(loop.stats.cache_misses.values())}))
"""


def test_numba_loop_builds_from_scratch_into_the_cache_dir(tmp_path):
    """A fresh process with no C compiler on PATH, an empty ``$TRAJKIT_CACHE_DIR`` and an empty home compiles
    the loop and gets the float64 answers; numba's cache files land in ``$TRAJKIT_CACHE_DIR/numba`` and
    nowhere else (not the home directory, not ``__pycache__`` next to the source); a second process loads
    them instead of compiling."""
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_")) and k != "CC"}
    env |= {"TRAJKIT_CACHE_DIR": str(cache), "HOME": str(home), "PATH": os.environ["PATH"]}
    src_cache = Path(kernels.__file__).parent / "__pycache__"
    before = set(src_cache.glob("*.nb*"))
    runs = [subprocess.run([sys.executable, "-c", _FROM_SCRATCH, str(tmp_path / f"a{i}.trajkit")], env=env,
                           capture_output=True, text=True, timeout=300) for i in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    first, second = (json.loads(r.stdout) for r in runs)
    X = np.random.default_rng(4).standard_normal((6, 3000)).astype(np.float32)
    ref = _reference(X, np.array([[0, 1], [0, 2], [0, 3], [0, 4], [2, 5]]), np.arange(3000), 0.7)
    for k in ("dot", "sq", "quart"):
        assert _rel(np.array(first[k]), ref[k]) <= 1e-12, k
    np.testing.assert_array_equal(first["theta"], ref["theta"])
    assert (first["hits"], first["misses"]) == (0, 1) and (second["hits"], second["misses"]) == (1, 0)
    assert second["sq"] == first["sq"]
    assert list(cache.glob("numba/*/*.nbi")) and list(cache.glob("numba/*/*.nbc"))
    assert not any(home.rglob("*")), sorted(home.rglob("*"))
    assert set(src_cache.glob("*.nb*")) == before


# -- the column-block iterator -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_column_blocks_cover_the_selection_once_in_order(tiny_disp, dtype):
    """Blocks of ≤ ``block`` columns, in column order, together equal ``X[rows][:, sel.indices()]``."""
    X, arch = tiny_disp
    rows = np.array([7, 0, 23, 7])
    for cols, block in ((None, 100), ("weights", 128), (arch.select("biases+4.*"), 9), ([5, 3, 900, 901], 2)):
        idx = np.arange(N) if cols is None else (arch.select(cols) if isinstance(cols, str) else
                                                 Selection.from_indices(cols, N) if isinstance(cols, list)
                                                 else cols).indices()
        got, seen = [], []
        for columns, values in kernels.column_blocks(arch, rows=rows, cols=cols, block=block, dtype=dtype):
            assert isinstance(columns, Selection) and values.dtype == dtype
            assert values.shape == (rows.size, columns.size) and columns.size <= block
            got.append(values.copy())
            seen.append(columns.indices())
        np.testing.assert_array_equal(np.concatenate(seen), idx)
        np.testing.assert_array_equal(np.concatenate(got, axis=1), X[rows][:, idx].astype(dtype))


def test_column_blocks_memory_is_bounded(tmp_path):
    """Streaming a 12 MiB archive in float64 blocks of 2,048 columns allocates about 16 B per row and block
    column (two float32 read buffers, one float64 block), not the array."""
    T, n = 48, 65_536
    arch = _random_archive(tmp_path / "mem.trajkit", T, n)
    total = np.zeros(T)
    list(kernels.column_blocks(arch, block=8))                 # one-time set-up outside the measurement
    tracemalloc.start()
    try:
        for _, values in kernels.column_blocks(arch, block=2048):
            total += values.sum(axis=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 16 * T * 2048 + 2**20, f"peak {peak / 2**20:.2f} MiB"
    np.testing.assert_allclose(total, arch.params[:, :].astype(np.float64).sum(axis=1), rtol=1e-12)


def test_column_blocks_bad_input(tiny_disp):
    _, arch = tiny_disp
    with pytest.raises(AnalysisError, match=r"rows must be in 0\.\.23"):
        next(kernels.column_blocks(arch, rows=[0, 24]))
    with pytest.raises(AnalysisError, match="dtype"):
        next(kernels.column_blocks(arch, dtype=np.int32))
    with pytest.raises(AnalysisError, match="block=0"):
        next(kernels.column_blocks(arch, block=0))
    with pytest.raises(AnalysisError, match="empty"):
        next(kernels.column_blocks(arch, cols=[]))
    with pytest.raises(ArchiveError, match="matches no parameters"):
        next(kernels.column_blocks(arch, cols="conv*"))
