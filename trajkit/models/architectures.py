"""The built-in architectures (``mlp``, ``cnn``, ``rnn``), rebuilt exactly from a declarative spec, with a
forward pass over stacked replicas.

Specs (stored in archive metadata as ``model.spec``):

- ``{"kind": "mlp", "in_features": D, "hidden": [h1, ...], "out_features": K, "bias": b, "activation": a}``
  — ``x → a(W1 x + b1) → … → W_L h + b_L`` (tensors ``layers.<i>.weight`` ``[out, in]``, ``layers.<i>.bias``).
- ``{"kind": "cnn", "in_shape": [C, H, W], "channels": [c1, ...], "kernel_size": k, "pool": p, ...}``
  — per layer ``conv k×k (padding k//2) → a → 2×2 max-pool`` (pool while the image is ≥ 2 px), then a
  linear read-out of the flattened maps (``convs.<i>.*``, ``head.*``).
- ``{"kind": "rnn", "seq_len": L, "input_size": F, "width": w, "depth": d, ...}`` — a tanh (or ``a``) RNN
  ``h_t = a(W_ih x_t + b + W_hh h_{t-1})`` per layer, read out linearly from the last layer's final
  state (``cells.<i>.ih.*``, ``cells.<i>.hh.weight``, ``head.*``). Inputs are the rows of an image
  (``L = H``, ``F = W``) or the features of a vector one at a time (``L = D``, ``F = 1``).
  Optional keys: ``"cell"`` — ``"tanh"`` (the cell above, default), ``"gru"`` or ``"lstm"`` (gates stacked
  along the rows of ``ih.weight [g·w, in]`` and ``hh.weight [g·w, w]``, g = 3 or 4; see :func:`cell_step`);
  ``"voices": C`` — *next-step* readout for sequences of C categorical variables one-hot over
  ``V = out_features`` values (samples ``[L, C, V]``, ``F = C·V``): the head reads every time step,
  ``ŷ_t = W h_t + b`` ``[C·V]``, and the output is ``[B, L, C, V]`` (``[R, B, L, C, V]`` batched).

``build_model(spec)`` returns the ``nn.Module``; its ``named_parameters()`` order is the archive layout
(:func:`trajkit.archive.layout.layout_from_named_parameters`). Every built-in module also has
``batched_forward(params, x)``: the forward pass of R replicas at once from stacked parameters
(``params[name]`` of shape ``[R, *shape]``), with ``x`` shared ``[B, D]`` or per replica ``[R, B, D]``,
returning ``[R, B, K]`` — batched GEMMs and grouped convolutions instead of R separate passes.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trajkit.errors import ConfigError

ACTIVATION_FUNCTIONS = {
    "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu, "elu": F.elu,
    "softplus": F.softplus, "linear": lambda x: x,
}
DEFAULT_ACTIVATION = {"mlp": "relu", "cnn": "relu", "rnn": "tanh"}


def _act(name: str):
    return ACTIVATION_FUNCTIONS[name]


def batched_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x W_r^T + b_r`` for every replica r: ``x`` ``[B, in]`` (shared) or ``[R, B, in]``,
    ``weight`` ``[R, out, in]``, ``bias`` ``[R, out]`` → ``[R, B, out]``."""
    R, out, _ = weight.shape
    if x.dim() == 2:
        h = (x @ weight.reshape(R * out, -1).T).view(x.shape[0], R, out).transpose(0, 1)
        return h if bias is None else h + bias.unsqueeze(1)
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


class MLP(nn.Module):
    """Fully connected network; ``hidden = []`` is a linear model."""

    def __init__(self, in_features: int, hidden: list[int], out_features: int, bias: bool = True,
                 activation: str = "relu"):
        super().__init__()
        widths = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in itertools.pairwise(widths))
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        act = _act(self.activation)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = act(h)
        return h

    def batched_forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        act = _act(self.activation)
        h = x
        n = len(self.layers)
        for i in range(n):
            h = batched_linear(h, params[f"layers.{i}.weight"], params.get(f"layers.{i}.bias"))
            if i < n - 1:
                h = act(h)
        return h


class CNN(nn.Module):
    """Small convolutional net: conv → activation → 2×2 max-pool per layer, then a linear read-out."""

    def __init__(self, in_shape: list[int], channels: list[int], out_features: int, kernel_size: int = 3,
                 pool: bool = True, bias: bool = True, activation: str = "relu"):
        super().__init__()
        c, h, w = in_shape
        self.in_shape, self.activation, self.kernel_size = (c, h, w), activation, kernel_size
        convs, self.pools = [], []
        for out_c in channels:
            convs.append(nn.Conv2d(c, out_c, kernel_size, padding=kernel_size // 2, bias=bias))
            do_pool = pool and h >= 2 and w >= 2
            self.pools.append(do_pool)
            c, h, w = out_c, (h // 2 if do_pool else h), (w // 2 if do_pool else w)
        self.convs = nn.ModuleList(convs)
        self.head = nn.Linear(c * h * w, out_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        act = _act(self.activation)
        h = x.reshape(x.shape[0], *self.in_shape)
        for conv, do_pool in zip(self.convs, self.pools, strict=True):
            h = act(conv(h))
            if do_pool:
                h = F.max_pool2d(h, 2)
        return self.head(h.flatten(1))

    def batched_forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        act = _act(self.activation)
        pad = self.kernel_size // 2
        W0 = params["convs.0.weight"]
        R = W0.shape[0]
        c, hh, ww = self.in_shape
        if x.dim() == 2:  # shared input: one ordinary conv with R*c_out output channels
            h, groups = x.reshape(x.shape[0], c, hh, ww), 1
        else:  # per replica: replicas become channel groups
            B = x.shape[1]
            h = x.reshape(R, B, c, hh, ww).transpose(0, 1).reshape(B, R * c, hh, ww)
            groups = R
        for i, do_pool in enumerate(self.pools):
            W = params[f"convs.{i}.weight"]
            b = params.get(f"convs.{i}.bias")
            h = F.conv2d(h, W.reshape(-1, *W.shape[2:]), None if b is None else b.reshape(-1), padding=pad,
                         groups=groups)
            groups = R
            h = act(h)
            if do_pool:
                h = F.max_pool2d(h, 2)
        B = h.shape[0]
        feats = h.reshape(B, R, -1).transpose(0, 1)
        return batched_linear(feats, params["head.weight"], params.get("head.bias"))


CELLS = {"tanh": 1, "gru": 3, "lstm": 4}  # cell kind -> gates g stacked in the ih / hh weights


class _Cell(nn.Module):
    def __init__(self, input_size: int, width: int, bias: bool, gates: int = 1):
        super().__init__()
        self.ih = nn.Linear(input_size, gates * width, bias=bias)
        self.hh = nn.Linear(width, gates * width, bias=False)


def cell_step(cell: str, act, pre: Tensor, hh: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """One time step of a recurrent cell on any leading dims (``[..., w]`` states).

    ``pre = W_ih x_t + b`` and ``hh = W_hh h_{t−1}`` are ``[..., g·w]`` (gates in the order below);
    returns ``(h_t, c_t)`` (``c`` is the LSTM cell state, None otherwise):

    - ``tanh``: ``h = a(pre + hh)``;
    - ``gru``: ``r = σ(pre_r + hh_r)``, ``u = σ(pre_u + hh_u)``, ``n = tanh(pre_n + r ⊙ hh_n)``,
      ``h = (1 − u) ⊙ n + u ⊙ h_{t−1}``;
    - ``lstm``: ``i, f, o = σ(·)``, ``g = tanh(pre_g + hh_g)`` (order i, f, g, o),
      ``c = f ⊙ c_{t−1} + i ⊙ g``, ``h = o ⊙ tanh(c)``.
    """
    if cell == "tanh":
        return act(pre + hh), None
    if cell == "gru":
        pr, pu, pn = pre.chunk(3, dim=-1)
        hr, hu, hn = hh.chunk(3, dim=-1)
        r, u = torch.sigmoid(pr + hr), torch.sigmoid(pu + hu)
        n = torch.tanh(pn + r * hn)
        return n + u * (h - n), None
    gi, gf, gg, go = (pre + hh).chunk(4, dim=-1)
    assert c is not None
    c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
    return torch.sigmoid(go) * torch.tanh(c), c


class RNN(nn.Module):
    """Stacked recurrent net (``cell`` tanh, gru or lstm): a linear read-out of the final state, or with
    ``voices`` a next-step read-out of every time step (see the module docstring)."""

    def __init__(self, seq_len: int, input_size: int, width: int, out_features: int, depth: int = 1,
                 bias: bool = True, activation: str = "tanh", cell: str = "tanh", voices: int | None = None):
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"model.cell = {cell!r} is unknown; use one of {', '.join(CELLS)}")
        if voices is not None and input_size % voices:
            raise ConfigError(f"rnn: input_size {input_size} is not a multiple of voices = {voices}")
        self.seq_len, self.input_size, self.width, self.activation = seq_len, input_size, width, activation
        self.cell, self.voices, self.out_features = cell, voices, out_features
        g = CELLS[cell]
        self.cells = nn.ModuleList(_Cell(input_size if i == 0 else width, width, bias, g) for i in range(depth))
        self.head = nn.Linear(width, out_features * (voices or 1), bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        act = _act(self.activation)
        B = x.shape[0]
        seq = x.reshape(B, self.seq_len, self.input_size)
        for cell in self.cells:
            pre = cell.ih(seq)  # [B, L, g·w]
            h = torch.zeros(B, self.width, dtype=x.dtype, device=x.device)
            c = torch.zeros_like(h) if self.cell == "lstm" else None
            outs = []
            for t in range(self.seq_len):
                h, c = cell_step(self.cell, act, pre[:, t], cell.hh(h), h, c)
                outs.append(h)
            seq = torch.stack(outs, dim=1)
        if self.voices is None:
            return self.head(seq[:, -1])
        return self.head(seq).view(B, self.seq_len, self.voices, self.out_features)

    def batched_forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        act = _act(self.activation)
        L, Fi = self.seq_len, self.input_size
        if x.dim() == 2:
            seq = x.reshape(x.shape[0] * L, Fi)  # shared: one GEMM for every replica and time step
        else:
            R0, B0 = x.shape[:2]
            seq = x.reshape(R0, B0 * L, Fi)
        B = x.shape[-2]
        for i in range(len(self.cells)):
            Wih = params[f"cells.{i}.ih.weight"]
            R = Wih.shape[0]
            pre = batched_linear(seq, Wih, params.get(f"cells.{i}.ih.bias")).view(R, B, L, -1)
            Whh_t = params[f"cells.{i}.hh.weight"].transpose(1, 2)
            h = torch.zeros(R, B, self.width, dtype=pre.dtype, device=pre.device)
            c = torch.zeros_like(h) if self.cell == "lstm" else None
            outs = []
            for t in range(L):
                if self.cell == "tanh":
                    h = act(torch.baddbmm(pre[:, :, t], h, Whh_t))
                else:
                    h, c = cell_step(self.cell, act, pre[:, :, t], torch.bmm(h, Whh_t), h, c)
                outs.append(h)
            seq = torch.stack(outs, dim=2).reshape(R, B * L, self.width)
        if self.voices is not None:
            out = batched_linear(seq, params["head.weight"], params.get("head.bias"))
            return out.view(-1, B, L, self.voices, self.out_features)
        last = seq.view(-1, B, L, self.width)[:, :, -1]
        return batched_linear(last, params["head.weight"], params.get("head.bias"))


MODEL_CLASSES = {"mlp": MLP, "cnn": CNN, "rnn": RNN}


def build_model(spec: dict[str, Any]) -> nn.Module:
    """The module described by ``spec`` (float32, on the CPU, initialised from torch's global RNG)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    cls = MODEL_CLASSES.get(kind)
    if cls is None:
        raise ConfigError(f"model.spec kind {kind!r} is not a built-in model (mlp, cnn, rnn)")
    try:
        return cls(**spec)
    except TypeError as e:
        raise ConfigError(f"model.spec for {kind!r} is invalid ({e}); it must be a spec written by trajkit "
                          "record") from None
