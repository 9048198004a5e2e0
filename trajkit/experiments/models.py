"""The ``[model]`` config section of ``trajkit record`` turned into a model spec.

The architectures themselves (``MLP``, ``CNN``, ``RNN``, :func:`build_model`, their batched forward passes)
live in :mod:`trajkit.models.architectures`, the layer that ``trajkit.experiments`` and
``trajkit.landscape`` both build on; they are re-exported here under their old names.
"""

from __future__ import annotations

import math
from typing import Any

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
           "batched_linear", "build_model", "cell_step", "model_class_name", "model_spec"]


def model_spec(model: dict[str, Any], input_shape: tuple[int, ...], out_features: int) -> dict[str, Any]:
    """The declarative spec of the ``[model]`` config section for data of ``input_shape`` and K outputs."""
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


def model_class_name(module: nn.Module) -> str:
    """``module.qualname`` of the class, recorded as ``model.class``."""
    return f"{type(module).__module__}.{type(module).__qualname__}"
