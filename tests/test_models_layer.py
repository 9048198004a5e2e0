"""The model layer (trajkit.models) under experiments and landscape: rebuilding keeps the caller's RNG,
the registry reads plugins without the analysis core, and creating an archive imports no torch."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import trajkit
from trajkit.analysis import hookimpl
from trajkit.archive import create
from trajkit.archive.layout import layout_from_named_parameters
from trajkit.errors import AnalysisError
from trajkit.experiments import rebuild
from trajkit.models import architectures, registry
from trajkit.models import rebuild as rebuild_model

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"kind": "mlp", "in_features": 6, "hidden": [5], "out_features": 3, "bias": True, "activation": "tanh"}


def _mlp_archive(path: Path, seed: int = 3) -> tuple[Path, np.ndarray]:
    """An archive of a built-in MLP (one snapshot at step 7) and its parameter vector."""
    torch.manual_seed(seed)
    net = architectures.build_model(SPEC)
    w = torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy().copy()
    meta = {"model": {"spec": SPEC}, "loss": {"name": "cross_entropy"}}
    with create(path, w.size, metadata=meta, layout=layout_from_named_parameters(list(net.named_parameters()))) as wr:
        wr.append(7, w)
    return path, w


def _subprocess(code: str, **env_vars: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]), **env_vars}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_rebuild_leaves_the_callers_global_rng_unchanged(tmp_path):
    path, w = _mlp_archive(tmp_path / "a.trajkit")
    torch.manual_seed(1234)
    np.random.seed(99)  # noqa: NPY002 - numpy's legacy global state is what must stay untouched
    torch_before, np_before = torch.random.get_rng_state(), np.random.get_state()  # noqa: NPY002
    for fn in (rebuild, rebuild_model):
        rb = fn(path)
        np.testing.assert_array_equal(rb.params, w)
        assert torch.equal(torch.random.get_rng_state(), torch_before)
        after = np.random.get_state()  # noqa: NPY002
        assert after[0] == np_before[0] and np.array_equal(after[1], np_before[1]) and after[2:] == np_before[2:]
    # the caller's stream goes on where it was: the next draw is the one a fresh seed 1234 gives first
    draw = torch.rand(4)
    torch.manual_seed(1234)
    assert torch.equal(draw, torch.rand(4))


def test_rebuilt_module_computes_the_recorded_network(tmp_path):
    path, _ = _mlp_archive(tmp_path / "a.trajkit", seed=5)
    torch.manual_seed(5)
    ref = architectures.build_model(SPEC)
    x = torch.randn(4, 6)
    rb = rebuild_model(path, data={"X_train": x.numpy(), "y_train": np.array([0, 1, 2, 0]),
                                   "X_test": x.numpy(), "y_test": np.array([0, 1, 2, 0])})
    with torch.no_grad():
        torch.testing.assert_close(rb.module(x), ref(x))
        want = torch.nn.functional.cross_entropy(ref(x), torch.tensor([0, 1, 2, 0])).item()
    assert rb.loss(rb.params)[0] == pytest.approx(want, rel=1e-6)


def test_model_layer_has_no_data_builder_of_its_own(tmp_path):
    """trajkit.models knows no datasets: without data= or a build_dataset, the rebuilt run has no data."""
    path, _ = _mlp_archive(tmp_path / "a.trajkit")
    rb = rebuild_model(path)
    assert rb.data is None
    with pytest.raises(AnalysisError, match="no data"):
        rb.loss(rb.params)


def test_creating_an_archive_does_not_import_torch(tmp_path):
    code = f"""
import json, sys
import numpy as np
import trajkit.archive
with trajkit.archive.create({str(tmp_path / 'a.trajkit')!r}, 4) as w:
    w.append(0, np.zeros(4, np.float32))
meta = trajkit.archive.open_archive({str(tmp_path / 'a.trajkit')!r}).metadata
print(json.dumps({{"torch": "torch" in sys.modules, "versions": meta["versions"]}}))
"""
    out = _subprocess(code)
    assert out["torch"] is False
    assert out["versions"]["torch"] == importlib.metadata.version("torch") == torch.__version__


def test_model_registry_needs_neither_the_analysis_core_nor_torch():
    """Looking a model up imports no analysis core and no torch of its own (installed plugins, which import
    the analysis core to register their analyses, are switched off here)."""
    code = """
import json, sys
from trajkit.models import registry
entry = registry.model_entry({"model": {"spec": {"kind": "rnn"}}})
print(json.dumps({"entry": entry.name, "mods": sorted(m for m in sys.modules
                  if m == "torch" or m.startswith(("trajkit.analysis", "trajkit.experiments", "trajkit.landscape")))}))
"""
    out = _subprocess(code, TRAJKIT_LOAD_PLUGINS="")
    assert out == {"entry": "rnn", "mods": []}


def test_old_registry_paths_are_the_model_layers_names():
    import trajkit.landscape.registry as old

    for name in ("ModelEntry", "model_entry", "model_keys", "model_spec_of", "registered_models", "REGISTER_HELP"):
        assert getattr(old, name) is getattr(registry, name)
    from trajkit.analysis.hookspecs import trajkit_register_models
    from trajkit.analysis.plugins import PluginWarning
    from trajkit.experiments.datasets import Dataset
    from trajkit.experiments.losses import per_sample
    from trajkit.experiments.models import MLP, build_model

    assert trajkit_register_models is trajkit.models.hookspecs.trajkit_register_models
    assert PluginWarning is trajkit.errors.PluginWarning
    assert Dataset is trajkit.models.Dataset
    assert per_sample is trajkit.models.losses.per_sample
    assert (MLP, build_model) == (architectures.MLP, architectures.build_model)


def test_a_plugin_registered_with_the_model_layer_alone_is_rebuildable(tmp_path):
    """A plugin added to trajkit.models.registry (not to the analysis core) is found by rebuild, and its
    named symmetries ("mlp") give the built-in MLP's permutation groups."""
    from trajkit.landscape import feedforward_spec, permutation_spec_for

    torch.manual_seed(0)
    net = architectures.build_model(SPEC)
    w = torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy()
    layout = layout_from_named_parameters(list(net.named_parameters()))
    meta = {"model": {"factory": "tests.models:mlp", "kwargs": {"hidden": [5]}}, "loss": {"name": "mse"}}
    path = tmp_path / "f.trajkit"
    with create(path, w.size, metadata=meta, layout=layout) as wr:
        wr.append(3, w)
    built: list[dict] = []

    @hookimpl
    def trajkit_register_models(register):
        def factory(spec):
            built.append(spec)
            return architectures.build_model({**SPEC, **spec})

        register("tests.models:mlp", factory=factory, symmetries="mlp")

    registry.register_plugin(types.SimpleNamespace(trajkit_register_models=trajkit_register_models), "t-models")
    try:
        rb = rebuild(path)
        assert built == [{"hidden": [5]}] and rb.step == 3
        spec = permutation_spec_for(trajkit.open_archive(path))
        assert spec.to_json() == feedforward_spec(layout).to_json()
    finally:
        registry.unregister_plugin("t-models")
    with pytest.raises(AnalysisError, match=r"tests\.models:mlp.*trajkit_register_models"):
        rebuild(path)
