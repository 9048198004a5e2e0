"""The ``[model]`` config section of ``trajkit record`` turned into a model spec.

The architectures themselves (``MLP``, ``CNN``, ``RNN``, :func:`build_model`, their batched forward passes)
live in :mod:`trajkit.models.architectures`, the layer that ``trajkit.experiments`` and
``trajkit.landscape`` both build on; they are re-exported here under their old names.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from trajkit.errors import ConfigError
from trajkit.models.architectures import (
    ACTIVATION_FUNCTIONS,
    CELLS,
    CNN,
    DEFAULT_ACTIVATION,
    MLP,
    MODEL_CLASSES,
    RNN,
    batched_linear,
    build_model,
    cell_step,
)

__all__ = ["ACTIVATION_FUNCTIONS", "CELLS", "CNN", "DEFAULT_ACTIVATION", "MLP", "MODEL_CLASSES", "RNN",
           "batched_linear", "build_model", "cell_step", "count_parameters", "model_class_name", "model_spec",
           "width_for_n_params"]


def model_spec(model: dict[str, Any], input_shape: tuple[int, ...], out_features: int) -> dict[str, Any]:
    """The declarative spec of the ``[model]`` config section for data of ``input_shape`` and K outputs
    (with ``n_params``: the width of :func:`width_for_n_params`)."""
    if model.get("n_params") is not None:
        width = width_for_n_params(model, input_shape, out_features)
        model = {**model, "n_params": None, "hidden": [width] * int(model["depth"]), "width": width}
    kind = model["kind"]
    act = model["activation"] if model["activation"] != "auto" else DEFAULT_ACTIVATION[kind]
    common = {"out_features": int(out_features), "bias": bool(model["bias"]), "activation": act}
    if kind == "mlp":
        return {"kind": "mlp", "in_features": math.prod(input_shape), "hidden": list(model["hidden"]), **common}
    if kind == "cnn":
        if len(input_shape) == 2:
            shape = [1, *input_shape]
        elif len(input_shape) == 3:
            shape = list(input_shape)
        else:
            raise ConfigError(f"model.kind = \"cnn\" needs image data (samples of shape [H, W] or [C, H, W]), "
                              f"but the data's samples have shape {list(input_shape)}; use digits or an npz of "
                              "images, or model.kind = \"mlp\"")
        return {"kind": "cnn", "in_shape": shape, "channels": list(model["channels"]),
                "kernel_size": int(model["kernel_size"]), "pool": bool(model["pool"]), **common}
    if kind == "rnn":
        extra: dict[str, Any] = {}
        if len(input_shape) == 3:  # [L, C, V]: C categorical voices, next-step read-out
            L, C, V = input_shape
            Fi = C * V
            extra["voices"] = int(C)
        elif len(input_shape) == 2:
            L, Fi = input_shape
        elif len(input_shape) == 1:
            L, Fi = input_shape[0], 1
        else:
            raise ConfigError(f"model.kind = \"rnn\" needs sequences (samples of shape [L, F], [D] or [L, C, V]), "
                              f"but the data's samples have shape {list(input_shape)}")
        if model.get("cell", "tanh") != "tanh":
            extra["cell"] = model["cell"]
        return {"kind": "rnn", "seq_len": int(L), "input_size": int(Fi), "width": int(model["width"]),
                "depth": int(model["depth"]), **common, **extra}
    raise ConfigError(f"model.kind = {kind!r} is unknown; use mlp, cnn or rnn")


def count_parameters(spec: dict[str, Any]) -> int:
    """The number of parameters of the model of ``spec`` (built on the meta device: no memory, no RNG)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(spec).parameters())


def width_for_n_params(model: dict[str, Any], input_shape: tuple[int, ...], out_features: int) -> int:
    """The width w ≥ 1 of ``model``'s ``depth`` hidden layers (mlp) or recurrent layers (rnn) whose total
    parameter count is closest to ``model["n_params"]`` (the smaller width on a tie).

    Raises a one-line :class:`~trajkit.errors.ConfigError` when even width 1 has more parameters."""
    target, depth = int(model["n_params"]), int(model["depth"])

    def count(w: int) -> int:
        return count_parameters(model_spec({**model, "n_params": None, "hidden": [w] * depth, "width": w},
                                           input_shape, out_features))

    smallest = count(1)
    if smallest > target:
        raise ConfigError(f"model.n_params = {target} is unreachable with model.depth = {depth}: the smallest "
                          f"{model['kind']} of that depth (width 1) has {smallest} parameters on this data; raise "
                          "model.n_params or lower model.depth")
    lo, hi = 1, 2
    while count(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:            # count is increasing in w: count(lo) < target <= count(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return lo if target - count(lo) <= count(hi) - target else hi


def model_class_name(module: nn.Module) -> str:
    """``module.qualname`` of the class, recorded as ``model.class``."""
    return f"{type(module).__module__}.{type(module).__qualname__}"
