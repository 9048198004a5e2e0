"""The recurrent model: tanh/GRU/LSTM cells against torch's own, the next-step (``voices``) read-out and its
NLL per time step, the batched-replica path, and rebuilding a recorded RNN archive."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trajkit import open_archive
from trajkit.experiments import build_model, run_experiment
from trajkit.experiments.losses import correct, per_sample
from trajkit.experiments.models import model_spec
from trajkit.experiments.rebuild import rebuild

MODEL = {"kind": "rnn", "width": 5, "depth": 2, "bias": True, "activation": "auto", "cell": "tanh"}
TORCH_CELLS = {"tanh": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
needs_music21 = pytest.mark.skipif(importlib.util.find_spec("music21") is None,
                                   reason="music21 (the trajkit[music] extra) is not installed")


def _torch_reference(model, cell: str, x: torch.Tensor) -> torch.Tensor:
    """The same network built from torch.nn.RNN/GRU/LSTM (hidden-hidden bias 0) with our weights copied in."""
    ref = TORCH_CELLS[cell](model.input_size, model.width, num_layers=len(model.cells), batch_first=True)
    with torch.no_grad():
        for i, c in enumerate(model.cells):
            getattr(ref, f"weight_ih_l{i}").copy_(c.ih.weight)
            getattr(ref, f"bias_ih_l{i}").copy_(c.ih.bias)
            getattr(ref, f"weight_hh_l{i}").copy_(c.hh.weight)
            getattr(ref, f"bias_hh_l{i}").zero_()
        seq, _ = ref(x.reshape(x.shape[0], model.seq_len, model.input_size))
        return model.head(seq)


@pytest.mark.parametrize("cell", ["tanh", "gru", "lstm"])
def test_cells_equal_torch_recurrent_layers(cell):
    spec = model_spec({**MODEL, "cell": cell}, (6, 4, 7), 7)
    assert spec["voices"] == 4 and spec["input_size"] == 28 and spec.get("cell", "tanh") == cell
    torch.manual_seed(1)
    model = build_model(spec)
    x = torch.randn(9, 6 * 28)
    out = model(x)
    assert out.shape == (9, 6, 4, 7)
    ref = _torch_reference(model, cell, x).reshape(9, 6, 4, 7)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["tanh", "gru", "lstm"])
@pytest.mark.parametrize("shared", [True, False])
def test_batched_forward_equals_each_replica(cell, shared):
    spec = model_spec({**MODEL, "cell": cell}, (5, 4, 6), 6)
    torch.manual_seed(2)
    models = [build_model(spec) for _ in range(3)]
    params = {n: torch.stack([dict(m.named_parameters())[n] for m in models]) for n, _ in models[0].named_parameters()}
    x = torch.randn(7, 5 * 24) if shared else torch.randn(3, 7, 5 * 24)
    out = models[0].batched_forward(params, x)
    ref = torch.stack([m(x if shared else x[r]) for r, m in enumerate(models)])
    assert out.shape == (3, 7, 5, 4, 6)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_sequence_nll_is_the_mean_over_steps_and_voices():
    torch.manual_seed(3)
    out = torch.randn(2, 5, 3, 4, 6)          # [R, B, L, C, V]
    y = torch.randint(0, 6, (5, 3, 4))        # [B, L, C], shared by the replicas
    nll = per_sample("cross_entropy", out, y)
    assert nll.shape == (2, 5)
    for r in range(2):
        ref = F.cross_entropy(out[r].reshape(-1, 6), y.reshape(-1), reduction="none").reshape(5, 12).mean(1)
        torch.testing.assert_close(nll[r], ref)
    acc = correct(out, y)
    torch.testing.assert_close(acc, (out.argmax(-1) == y).float().mean(dim=(-2, -1)))
    uniform = per_sample("cross_entropy", torch.zeros(5, 3, 4, 6), y)   # uniform prediction: NLL = ln V
    torch.testing.assert_close(uniform, torch.full((5,), float(np.log(6))))


def test_classifier_rnn_spec_is_unchanged():
    spec = model_spec({**MODEL, "depth": 1}, (8, 8), 10)
    assert spec == {"kind": "rnn", "seq_len": 8, "input_size": 8, "width": 5, "depth": 1, "out_features": 10,
                    "bias": True, "activation": "tanh"}
    assert build_model(spec)(torch.zeros(3, 64)).shape == (3, 10)


def test_gru_classifier_batched_and_sequential_replicas_agree(tmp_path):
    base = ['model.kind="rnn"', 'model.cell="gru"', "model.width=6", "model.depth=2", 'data.name="digits"',
            "data.n_train=32", "data.n_test=16", "run.steps=6", "run.replicas=2", "dynamics.batch_size=8",
            "dynamics.lr=0.1", 'snapshots.schedule="linear"', "snapshots.every=3"]
    run_experiment(None, tmp_path / "b", base, quiet=True)
    run_experiment(None, tmp_path / "s", [*base, "run.vectorize=false"], quiet=True)
    for r in range(2):
        a, b = open_archive(tmp_path / "b" / f"r{r:02d}.trajkit"), open_archive(tmp_path / "s" / f"r{r:02d}.trajkit")
        np.testing.assert_allclose(a.params[:, :], b.params[:, :], rtol=1e-4, atol=1e-5)
        assert a.metadata["model"]["spec"]["cell"] == "gru"


@needs_music21
def test_chorale_rnn_archive_rebuilds_same_module_and_nll(tmp_path, chorale_cache, cell="lstm"):
    overrides = ['data.name="bach_chorales"', "data.chorales=4", "data.seq_len=8", 'model.kind="rnn"',
                 f'model.cell="{cell}"', "model.width=6", "model.depth=2", "run.steps=10", "run.replicas=2",
                 "dynamics.batch_size=8", "dynamics.lr=0.5", 'snapshots.schedule="linear"', "snapshots.every=5"]
    summary = run_experiment(None, tmp_path / "e", overrides, quiet=True)
    assert [r["status"] for r in summary["runs"]] == ["done", "done"]
    arch = open_archive(tmp_path / "e" / "r01.trajkit")
    assert arch.metrics["train_loss"][-1] < arch.metrics["train_loss"][0]   # SGD lowers the NLL
    spec = arch.metadata["model"]["spec"]
    run = rebuild(arch)
    module = build_model(spec)
    assert [(n, tuple(p.shape)) for n, p in module.named_parameters()] == \
        [(e["name"], tuple(e["shape"])) for e in arch.layout]
    assert type(run.module) is type(module)
    V = arch.metadata["dataset"]["spec"]["encoding"]["n_tokens"]
    assert spec["out_features"] == V and spec["voices"] == 4
    # the recorded train/test NLL per step = the rebuilt module's NLL, computed here with torch's own loss
    with torch.no_grad():
        for split in ("train", "test"):
            x = torch.as_tensor(getattr(run.data, f"X_{split}"))
            y = torch.as_tensor(getattr(run.data, f"y_{split}"))
            nll = F.cross_entropy(run.module(x).reshape(-1, V), y.reshape(-1)).item()
            assert nll == pytest.approx(arch.metrics[f"{split}_loss"][-1], rel=1e-4)
            assert run.loss(arch.params[-1:, :], split)[0] == pytest.approx(nll, rel=1e-4)
