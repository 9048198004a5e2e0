"""Permutation specs and weight matching: a permuted copy of a network is the same function, at raw
distance > 0 and at aligned distance 0, with a zero interpolation barrier after alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajkit.archive.layout import layout_from_named_parameters
from trajkit.errors import AnalysisError
from trajkit.experiments.models import build_model, model_spec
from trajkit.landscape import align_vectors, apply_permutations, feedforward_spec, random_permutations
from trajkit.landscape.interpolation import alpha_grid, barrier, interpolation_path
from trajkit.landscape.permutations import PermutationSpec, builtin_spec, invert, permutation_index

SPECS = {
    "mlp": {"kind": "mlp", "in_features": 12, "hidden": [16, 10], "out_features": 3, "bias": True,
            "activation": "relu"},
    "cnn": {"kind": "cnn", "in_shape": [1, 8, 8], "channels": [4, 6], "out_features": 3, "kernel_size": 3,
            "pool": True, "bias": True, "activation": "relu"},
    "rnn": {"kind": "rnn", "seq_len": 4, "input_size": 3, "width": 7, "depth": 2, "out_features": 3,
            "bias": True, "activation": "tanh"},
}


def _flat(model: torch.nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().astype(np.float64)


def _load(model: torch.nn.Module, w: np.ndarray) -> torch.nn.Module:
    torch.nn.utils.vector_to_parameters(torch.as_tensor(w, dtype=torch.float32), model.parameters())
    return model


def _network(kind: str, seed: int = 0) -> tuple[torch.nn.Module, list, np.ndarray, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(SPECS[kind])
    layout = layout_from_named_parameters(list(model.named_parameters()))
    n_in = {"mlp": 12, "cnn": 64, "rnn": 12}[kind]
    x = torch.randn(32, n_in)
    return model, layout, _flat(model), x


@pytest.mark.parametrize("kind", ["mlp", "cnn", "rnn"])
def test_permuted_copy_is_same_function_and_aligns_to_distance_zero(kind):
    model, layout, w, x = _network(kind)
    spec = builtin_spec(kind, layout)
    perms = random_permutations(spec, seed=3)
    assert all(not np.array_equal(p, np.arange(p.size)) for p in perms.values())
    wp = apply_permutations(w, layout, spec, perms)
    with torch.no_grad():
        out = model(x)
        out_p = _load(build_model(SPECS[kind]), wp)(x)
    torch.testing.assert_close(out_p, out, rtol=1e-5, atol=1e-5)
    raw = np.linalg.norm(w - wp) / np.sqrt(w.size)
    assert raw > 0.1 * np.sqrt(np.mean(w ** 2))
    aligned, found, info = align_vectors(w, wp, layout, spec)
    assert info["distance_raw"] == pytest.approx(raw)
    assert info["distance"] < 1e-6
    np.testing.assert_allclose(aligned, w, atol=1e-6)
    inverse = invert(perms)
    for g in spec.groups:
        np.testing.assert_array_equal(found[g], inverse[g])
    assert info["converged"]


def test_interpolation_barrier_vanishes_after_alignment():
    model, layout, w, x = _network("mlp")
    spec = feedforward_spec(layout)
    y = torch.randint(0, 3, (x.shape[0],))

    def loss_fn(W: np.ndarray) -> np.ndarray:
        Wt = torch.from_numpy(W)
        params, off = {}, 0
        for e in layout:
            params[e["name"]] = Wt[:, off:off + e["size"]].reshape(W.shape[0], *e["shape"])
            off += e["size"]
        out = model.batched_forward(params, x)  # [R, B, K]
        return torch.nn.functional.cross_entropy(out.transpose(1, 2), y.expand(W.shape[0], -1),
                                                 reduction="none").mean(1).numpy()

    wp = apply_permutations(w, layout, spec, random_permutations(spec, seed=1))
    aligned, _, _ = align_vectors(w, wp, layout, spec)
    alphas = alpha_grid(11)
    path = interpolation_path(loss_fn, w, aligned, alphas)
    assert barrier(path) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(path, path[0], atol=1e-6)
    raw_path = interpolation_path(loss_fn, w, wp, alphas)
    assert raw_path[0] == pytest.approx(raw_path[-1], abs=1e-5)  # same function at both ends


def test_feedforward_spec_of_the_builtin_mlp_and_cnn():
    _, layout, _, _ = _network("mlp")
    spec = feedforward_spec(layout)
    assert spec.to_json() == {
        "P0": [["layers.0.weight", 0, False], ["layers.0.bias", 0, False], ["layers.1.weight", 1, False]],
        "P1": [["layers.1.weight", 0, False], ["layers.1.bias", 0, False], ["layers.2.weight", 1, False]]}
    assert dict(spec.sizes) == {"P0": 16, "P1": 10}
    _, layout, _, _ = _network("cnn")
    spec = feedforward_spec(layout)
    assert dict(spec.sizes) == {"P0": 4, "P1": 6}
    assert ("head.weight", 1) in [(a.tensor, a.axis) for a in spec.groups["P1"]]


def test_permutation_index_is_a_permutation_and_inverts():
    _, layout, w, _ = _network("cnn")
    spec = feedforward_spec(layout)
    perms = random_permutations(spec, seed=5)
    idx = permutation_index(layout, spec, perms)
    assert np.array_equal(np.sort(idx), np.arange(w.size))
    back = apply_permutations(apply_permutations(w, layout, spec, perms), layout, spec, invert(perms))
    np.testing.assert_array_equal(back, w)


def test_independent_networks_align_to_a_smaller_distance():
    _, layout, wa, _ = _network("mlp", seed=0)
    _, _, wb, _ = _network("mlp", seed=1)
    spec = feedforward_spec(layout)
    for init in ("forward", "identity"):
        _, _, info = align_vectors(wa, wb, layout, spec, init=init)
        assert info["distance"] < info["distance_raw"]
        assert info["objective"] >= info["objective_identity"]


def test_bad_specs_are_one_line_errors():
    _, layout, w, _ = _network("mlp")
    with pytest.raises(AnalysisError, match="not in the layout"):
        PermutationSpec.from_groups({"P0": [("nope.weight", 0)]}, layout)
    with pytest.raises(AnalysisError, match="has no axis 2"):
        PermutationSpec.from_groups({"P0": [("layers.0.weight", 2)]}, layout)
    with pytest.raises(AnalysisError, match="not a multiple"):
        PermutationSpec.from_groups({"P0": [("layers.0.weight", 0)]}, layout, sizes={"P0": 5})
    with pytest.raises(AnalysisError, match="one group only"):
        PermutationSpec.from_groups({"P0": [("layers.0.weight", 0)], "P1": [("layers.0.weight", 0)]}, layout)
    spec = feedforward_spec(layout)
    with pytest.raises(AnalysisError, match="expected"):
        align_vectors(w, w[:-1], layout, spec)
    bad = w.copy()
    bad[0] = np.nan
    with pytest.raises(AnalysisError, match="NaN"):
        align_vectors(w, bad, layout, spec)


RNN_MODEL = {"kind": "rnn", "width": 5, "depth": 2, "bias": True, "activation": "auto"}


def _chorale_rnn(cell: str, seed: int = 0) -> tuple[torch.nn.Module, dict, list, np.ndarray, torch.Tensor]:
    """A depth-2 RNN of ``cell`` from trajkit's own config → spec path ([L, C, V] samples: next-step voices)."""
    spec = model_spec({**RNN_MODEL, "cell": cell}, (6, 4, 7), 7)
    torch.manual_seed(seed)
    model = build_model(spec)
    layout = layout_from_named_parameters(list(model.named_parameters()))
    x = torch.randn(11, 6 * 28)
    return model, spec, layout, _flat(model), x


def _permute_by_hand(model: torch.nn.Module, perms: list[np.ndarray], gates: int) -> np.ndarray:
    """The flat vector of ``model`` with cell i's hidden units relabelled by ``perms[i]``, built tensor by
    tensor from the cell equations: every gate block of the stacked rows, the recurrent columns, the next
    layer's (or the head's) input columns."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    w = model.width
    for i, p in enumerate(perms):
        p = torch.as_tensor(p)
        rows = torch.cat([k * w + p for k in range(gates)])
        sd[f"cells.{i}.ih.weight"] = sd[f"cells.{i}.ih.weight"][rows]
        sd[f"cells.{i}.ih.bias"] = sd[f"cells.{i}.ih.bias"][rows]
        sd[f"cells.{i}.hh.weight"] = sd[f"cells.{i}.hh.weight"][rows][:, p]
        nxt = f"cells.{i + 1}.ih.weight" if i + 1 < len(perms) else "head.weight"
        sd[nxt] = sd[nxt][:, p]
    return torch.cat([sd[n].reshape(-1) for n, _ in model.named_parameters()]).numpy().astype(np.float64)


@pytest.mark.parametrize(("cell", "gates"), [("tanh", 1), ("gru", 3), ("lstm", 4)])
def test_recurrent_spec_permutes_gate_stacked_cells(cell, gates):
    model, spec, layout, w, x = _chorale_rnn(cell)
    assert [e["shape"] for e in layout[:3]] == [[gates * 5, 28], [gates * 5], [gates * 5, 5]]
    pspec = builtin_spec("rnn", layout)
    assert dict(pspec.sizes) == {"P0": 5, "P1": 5}
    perms = random_permutations(pspec, seed=7)
    wp = apply_permutations(w, layout, pspec, perms)
    np.testing.assert_array_equal(wp, _permute_by_hand(model, [perms["P0"], perms["P1"]], gates))
    with torch.no_grad():
        out = model(x)
        out_p = _load(build_model(spec), wp)(x)
        # the same permutation applied as if each unit owned g contiguous rows (no gate stacking)
        flat = PermutationSpec.from_groups({g: [a[:2] for a in axes] for g, axes in pspec.to_json().items()},
                                           layout, sizes=pspec.sizes)
        out_flat = _load(build_model(spec), apply_permutations(w, layout, flat, perms))(x)
    assert out.shape == (11, 6, 4, 7)
    torch.testing.assert_close(out_p, out, rtol=1e-5, atol=1e-5)
    if gates == 1:
        torch.testing.assert_close(out_flat, out, rtol=1e-5, atol=1e-5)
    else:
        assert not torch.allclose(out_flat, out, rtol=1e-3, atol=1e-3)
    _, found, info = align_vectors(w, wp, layout, pspec)
    assert info["distance"] < 1e-6 < info["distance_raw"]
    for g, p in invert(perms).items():
        np.testing.assert_array_equal(found[g], p)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_independent_gated_rnns_align_to_a_smaller_distance(cell):
    _, _, layout, wa, _ = _chorale_rnn(cell, seed=0)
    _, _, _, wb, _ = _chorale_rnn(cell, seed=1)
    spec = builtin_spec("rnn", layout)
    aligned, _, info = align_vectors(wa, wb, layout, spec)
    assert info["distance"] < info["distance_raw"]
    assert info["objective"] > info["objective_identity"]
    assert np.linalg.norm(aligned) == pytest.approx(np.linalg.norm(wb))   # a permutation keeps the norm
