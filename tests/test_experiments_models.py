"""Datasets and models: determinism, spec round trips, the batched forward pass, loss definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajkit.archive.layout import layout_from_named_parameters
from trajkit.errors import ConfigError
from trajkit.experiments import build_dataset, build_model
from trajkit.experiments.datasets import dataset_spec
from trajkit.experiments.losses import correct, per_sample, targets
from trajkit.experiments.models import model_spec

DATA = {"seed": 3, "test_fraction": 0.25, "n_train": None, "n_test": None, "dim": 6, "teacher_hidden": 5,
        "label_noise": 0.1, "classes": 3, "separation": 2.0, "components": 4, "path": None}


@pytest.mark.parametrize("name", ["digits", "pca_parity", "teacher", "gaussian_mixture"])
def test_dataset_is_a_function_of_its_spec(name):
    spec = dataset_spec({**DATA, "name": name, "n_train": 120, "n_test": 40})
    a, b = build_dataset(spec), build_dataset(spec)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert (a.n_train, a.n_test) == (120, 40)
    other = build_dataset({**spec, "seed": 4})
    assert not np.array_equal(a.X_train, other.X_train)


def test_digits_sizes_and_pca_parity_labels():
    full = build_dataset({"name": "digits", "seed": 0, "test_fraction": 0.2})
    assert full.n_train + full.n_test == 1797 and full.input_shape == (8, 8) and full.n_classes == 10
    pp = build_dataset({"name": "pca_parity", "seed": 0, "test_fraction": 0.2, "components": 5})
    np.testing.assert_array_equal(pp.y_train, full.y_train % 2)   # same split, parity labels
    np.testing.assert_allclose(pp.X_train.std(axis=0), 1.0, rtol=1e-4)  # unit-variance components
    np.testing.assert_allclose(pp.X_train.mean(axis=0), 0.0, atol=1e-5)
    with pytest.raises(ConfigError, match="exceeds"):
        build_dataset({"name": "digits", "n_train": 5000})


def test_teacher_label_noise_flips_the_stated_fraction():
    clean = build_dataset({**DATA, "name": "teacher", "label_noise": 0.0, "n_train": 4000, "n_test": 1})
    noisy = build_dataset({**DATA, "name": "teacher", "label_noise": 0.2, "n_train": 4000, "n_test": 1})
    np.testing.assert_array_equal(clean.X_train, noisy.X_train)
    frac = float((clean.y_train != noisy.y_train).mean())
    assert abs(frac - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 4000)   # binomial error, 4 sigma


MODEL = {"kind": "mlp", "hidden": [5, 4], "bias": True, "activation": "auto", "channels": [3, 4],
         "kernel_size": 3, "pool": True, "width": 6, "depth": 2}


@pytest.mark.parametrize(("kind", "bias"), [("mlp", True), ("mlp", False), ("cnn", True), ("rnn", True),
                                            ("rnn", False)])
def test_spec_rebuilds_module_and_batched_forward_matches(kind, bias):
    spec = model_spec({**MODEL, "kind": kind, "bias": bias}, (8, 8), 3)
    torch.manual_seed(0)
    R = 3
    models = [build_model(spec) for _ in range(R)]
    layout = layout_from_named_parameters(list(models[0].named_parameters()))
    assert layout == layout_from_named_parameters(list(build_model(spec).named_parameters()))
    assert all(e["role"] == "weight" for e in layout) or bias
    stacked = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]) for n, _ in
               models[0].named_parameters()}
    x = torch.randn(7, 64)
    expect = torch.stack([m(x) for m in models]).detach()
    with torch.no_grad():
        shared = models[0].batched_forward(stacked, x)
        per = models[0].batched_forward(stacked, x.expand(R, 7, 64).contiguous())
    torch.testing.assert_close(shared, expect, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(per, expect, rtol=1e-5, atol=1e-6)


def test_cnn_needs_images():
    with pytest.raises(ConfigError, match="needs image data"):
        model_spec({**MODEL, "kind": "cnn"}, (20,), 2)


def test_losses_match_their_definitions():
    out = torch.tensor([[0.0], [2.0], [-1.5]])
    y = torch.tensor([1, 0, 0])
    t = targets("quadratic_hinge", y, 2)                      # +1, -1, -1
    np.testing.assert_allclose(per_sample("quadratic_hinge", out, t).numpy(), [0.5, 0.5 * 9, 0.0])
    np.testing.assert_allclose(per_sample("mse", out, t).numpy(), [1.0, 9.0, 0.25])
    np.testing.assert_array_equal(correct(out, y).numpy(), [0.0, 0.0, 1.0])
    logits = torch.randn(5, 4)
    yy = torch.randint(0, 4, (5,))
    torch.testing.assert_close(per_sample("cross_entropy", logits, yy),
                               torch.nn.functional.cross_entropy(logits, yy, reduction="none"))
    zero = per_sample("quadratic_hinge", torch.zeros(6, 4), targets("quadratic_hinge", torch.arange(6) % 4, 4))
    np.testing.assert_allclose(zero.numpy(), 0.5)            # w = 0 gives hinge loss exactly 1/2


def test_modules_without_batched_forward_go_through_vmap():
    from trajkit.experiments.replicas import BatchedReplicas

    torch.manual_seed(1)
    models = [torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)) for _ in range(3)]
    layout = layout_from_named_parameters(list(models[0].named_parameters()))
    init = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in models])
    engine = BatchedReplicas(models[0], layout, init)
    x = torch.randn(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(engine.forward(x), torch.stack([m(x) for m in models]))
        torch.testing.assert_close(engine.forward(x.expand(3, 5, 4)), torch.stack([m(x) for m in models]))
