"""Rebuild a recorded run: its network at a snapshot, its data, and a batched loss over many parameter vectors.

>>> run = rebuild("runs/digits-r0.trajkit")               # last snapshot       # doctest: +SKIP
>>> run.module                                             # nn.Module, snapshot loaded
>>> run.loss(W, split="test")                              # W float32 [B, N] -> float64 [B]

The architecture comes from the model registry (:mod:`trajkit.models.registry`): the built-in
``mlp``/``cnn``/``rnn`` of ``trajkit record`` always, third-party ones through the
``trajkit_register_models`` hook. The module is built inside ``torch.random.fork_rng``: its initial
weights (overwritten by the snapshot) never touch the caller's global RNG. The data is passed as ``data=``
(a :class:`~trajkit.models.data.Dataset` or a dict with ``X_train, y_train, X_test, y_test``), or rebuilt
from the archive's ``dataset.spec`` by ``build_dataset`` (:func:`trajkit.experiments.rebuild` passes
:func:`trajkit.experiments.build_dataset`, which knows the built-in datasets; this layer knows none).
The loss is ``loss.name`` (or ``loss=``): the mean over samples of the per-sample loss of
:mod:`trajkit.models.losses`.

**Batched evaluation.** ``loss(W)`` evaluates ``B`` parameter vectors at once: the module's
``batched_forward(params, x)`` when it has one (the built-ins: stacked GEMMs / grouped convolutions),
otherwise ``torch.func.vmap`` over ``torch.func.functional_call``. Samples are processed
``sample_batch`` at a time and the per-sample losses summed, so memory stays bounded. On ``device="cuda"``
(or ``"auto"`` with a GPU) the data lives on the GPU and the vectors are moved there per batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trajkit.archive import open_archive
from trajkit.archive.layout import layout_from_named_parameters
from trajkit.devices import resolve_device
from trajkit.errors import AnalysisError
from trajkit.models import losses
from trajkit.models.data import Dataset
from trajkit.models.registry import model_entry, model_spec_of


@dataclass
class Rebuilt:
    """A run rebuilt at one snapshot.

    ``module`` (``nn.Module`` holding ``params``), ``params`` float32 ``[N]``, ``step``, ``row``,
    ``layout``, ``data`` (:class:`~trajkit.models.data.Dataset` or None), ``loss_name``, ``device``.
    """

    module: torch.nn.Module
    params: np.ndarray
    step: int
    row: int
    layout: list[dict[str, Any]]
    data: Any
    loss_name: str
    device: str
    sample_batch: int = 4096
    _tensors: dict[str, tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] | None = None

    def __repr__(self) -> str:
        return (f"Rebuilt({type(self.module).__name__}, step={self.step}, n_params={self.params.size}, "
                f"loss={self.loss_name!r}, device={self.device!r})")

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self.data is None:
            raise AnalysisError("this rebuilt run has no data; pass data=(X_train, y_train, X_test, y_test) to "
                                "rebuild()")
        if split not in ("train", "test"):
            raise AnalysisError(f"split={split!r}; use 'train' or 'test'")
        if self._tensors is None:
            self._tensors = {}
        if split not in self._tensors:
            x = torch.as_tensor(getattr(self.data, f"X_{split}"), dtype=torch.float32).to(self.device)
            y = torch.as_tensor(getattr(self.data, f"y_{split}")).to(self.device)
            n_classes = getattr(self.data, "n_classes", None)
            target = losses.targets(self.loss_name, y, n_classes)
            self._tensors[split] = (x, target, y if n_classes is not None else None)
        return self._tensors[split]

    def _outputs(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Network outputs ``[B, S, K]`` of parameter vectors ``w [B, N]`` on samples ``x [S, D]``."""
        params = {e["name"]: w[:, e["offset"]:e["offset"] + e["size"]].reshape(w.shape[0], *e["shape"])
                  for e in self.layout}
        if hasattr(self.module, "batched_forward"):
            return self.module.batched_forward(params, x)
        from torch.func import functional_call, vmap

        return vmap(lambda p: functional_call(self.module, p, (x,)))(params)

    @torch.no_grad()
    def evaluate(self, W: np.ndarray | torch.Tensor, split: str = "train") -> dict[str, np.ndarray]:
        """``{"loss": float64 [B], "accuracy": float64 [B]}`` (accuracy NaN without class labels)."""
        x, target, classes = self._split(split)
        w = torch.as_tensor(W, dtype=torch.float32).to(self.device)
        if w.ndim == 1:
            w = w[None]
        if w.shape[1] != self.params.size:
            raise AnalysisError(f"parameter vectors have {w.shape[1]} entries; this model has {self.params.size}")
        total = torch.zeros(w.shape[0], dtype=torch.float64, device=self.device)
        hits = torch.zeros_like(total)
        n = x.shape[0]
        for lo in range(0, n, self.sample_batch):
            out = self._outputs(w, x[lo:lo + self.sample_batch])
            tgt = target[lo:lo + self.sample_batch]
            total += losses.per_sample(self.loss_name, out, tgt).sum(-1, dtype=torch.float64)
            if classes is not None:
                hits += losses.correct(out, classes[lo:lo + self.sample_batch]).sum(-1, dtype=torch.float64)
        acc = (hits / n).cpu().numpy() if classes is not None else np.full(w.shape[0], np.nan)
        return {"loss": (total / n).cpu().numpy(), "accuracy": acc}

    def loss(self, W: np.ndarray | torch.Tensor, split: str = "train") -> np.ndarray:
        """Mean loss on ``split`` of each row of ``W [B, N]``: float64 ``[B]``."""
        return self.evaluate(W, split)["loss"]

    def loss_fn(self, split: str = "train") -> Callable[[np.ndarray], np.ndarray]:
        """``W [B, N] -> float64 [B]`` on ``split``, for :mod:`trajkit.landscape.probes`."""
        return lambda W: self.loss(W, split)


def _resolve_device(device: str | None) -> str:
    return resolve_device("cpu" if device is None else device)


def _data_of(archive: Any, data: Any, build_dataset: Callable[[dict[str, Any]], Any] | None) -> Any:
    if data is not None:
        if isinstance(data, Dataset):
            return data
        if isinstance(data, dict) and {"X_train", "y_train", "X_test", "y_test"} <= set(data):
            y = np.asarray(data["y_train"])
            classes = int(max(np.max(y), np.max(data["y_test"])) + 1) if y.dtype.kind in "iu" else None
            x = np.asarray(data["X_train"], dtype=np.float32)
            return Dataset("user", x.reshape(x.shape[0], -1), y,
                           np.asarray(data["X_test"], dtype=np.float32).reshape(len(data["X_test"]), -1),
                           np.asarray(data["y_test"]), tuple(x.shape[1:]), classes)
        raise AnalysisError("data= must be a trajkit.experiments.Dataset or a dict with X_train, y_train, X_test, "
                            "y_test")
    spec = (archive.metadata.get("dataset") or {}).get("spec")
    if not isinstance(spec, dict) or build_dataset is None:
        return None
    return build_dataset(spec)


def rebuild(archive: Any, step: int | None = None, *, data: Any = None, loss: str | None = None,
            device: str | None = "cpu", sample_batch: int = 4096,
            build_dataset: Callable[[dict[str, Any]], Any] | None = None) -> Rebuilt:
    """The run of ``archive`` (path or open Archive) at snapshot ``step`` (None: the last one).

    ``build_dataset(spec) -> Dataset`` rebuilds the archive's ``dataset.spec`` when ``data`` is None
    (None here: the rebuilt run has no data unless ``data`` is given). The caller's torch and numpy global
    RNG states are left as they were. Raises :class:`~trajkit.errors.TrajkitError` with a one-line fix when
    the step is not a snapshot, the model is not registered (the message says how to register it), or the
    layouts disagree.
    """
    arch = open_archive(archive) if isinstance(archive, str | os.PathLike) else archive
    where = str(arch.path)
    if arch.n_snapshots == 0:
        raise AnalysisError(f"{where}: archive has no committed snapshots")
    row = arch.n_snapshots - 1 if step is None else arch.row(int(step))
    entry = model_entry(arch.metadata, where)
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten; the caller's RNG is kept
        torch.manual_seed(0)
        module = entry.factory(model_spec_of(arch.metadata))
    built = layout_from_named_parameters([(n, p) for n, p in module.named_parameters() if p.requires_grad])
    ours = [(e["name"], list(e["shape"])) for e in built]
    theirs = [(e["name"], list(e["shape"])) for e in arch.layout]
    if ours != theirs:
        diff = next((f"{a} vs {b}" for a, b in zip(ours, theirs, strict=False) if a != b),
                    f"{len(ours)} vs {len(theirs)} tensors")
        raise AnalysisError(f"{where}: the rebuilt {entry.name!r} model's parameters do not match the archive "
                            f"layout (rebuilt vs archive: {diff}); the registered factory must build the recorded "
                            "architecture")
    params = np.asarray(arch.params[row:row + 1, :], dtype=np.float32)[0]
    dev = _resolve_device(device)
    module = module.to(dev)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.as_tensor(params).to(dev),
                                            [p for p in module.parameters() if p.requires_grad])
    module.eval()
    loss_name = loss or (arch.metadata.get("loss") or {}).get("name")
    if loss_name is None:
        raise AnalysisError(f"{where}: metadata has no loss.name; pass loss='cross_entropy' (or mse, "
                            "quadratic_hinge) to rebuild()")
    return Rebuilt(module=module, params=params, step=int(arch.steps[row]), row=int(row), layout=arch.layout,
                   data=_data_of(arch, data, build_dataset), loss_name=str(loss_name), device=dev,
                   sample_batch=sample_batch)
