"""Permutation symmetries of a network's parameters, as data: which axes of which tensors share a permutation.

Hidden units of a layer can be relabelled without changing the function a network computes: permuting
the rows of the layer's incoming weight matrix and bias, and the columns of the next layer's weight
matrix, by the same permutation leaves every output unchanged. A :class:`PermutationSpec` describes these
symmetries declaratively (as in git-re-basin's ``weight_matching.py``): a dict from a group name to the
``(tensor, axis)`` pairs that the group's permutation acts on, for example for a two-hidden-layer MLP
``nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)``::

    {"P0": [("0.weight", 0), ("0.bias", 0), ("2.weight", 1)],
     "P1": [("2.weight", 0), ("2.bias", 0), ("4.weight", 1)]}

The group's size ``n`` is the number of units it permutes. An axis whose length is ``n·k`` holds ``k``
entries per unit: by default each unit owns ``k`` *contiguous* entries (``Axis(..., stacked=False)``: the
input axis of a linear layer after ``flatten`` of ``[C, H, W]`` channel maps, ``k = H·W``); with
``stacked=True`` the axis holds ``k`` stacked copies of the ``n`` units (the gate blocks of an LSTM/GRU
weight, ``[4n, ·]``).

A permutation set ``perms`` is ``{group: int64 [n]}``; it acts on ``b`` as ``b'[i] = b[perm[i]]`` along
every axis of the group (unit ``i`` of the result is unit ``perm[i]`` of ``b``). On a flat parameter
vector (in the archive layout's order) the whole set is one gather: ``w' = w[..., permutation_index(...)]``.

>>> layout = [{"name": "0.weight", "shape": [3, 2], "offset": 0, "size": 6, "layer": 0},
...           {"name": "0.bias", "shape": [3], "offset": 6, "size": 3, "layer": 0},
...           {"name": "2.weight", "shape": [1, 3], "offset": 9, "size": 3, "layer": 1}]
>>> spec = feedforward_spec(layout)
>>> dict(spec.sizes)
{'P0': 3}
>>> permutation_index(layout, spec, {"P0": np.array([2, 0, 1])}).tolist()
[4, 5, 0, 1, 2, 3, 8, 6, 7, 11, 9, 10]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from trajkit.errors import AnalysisError

Layout = list[dict[str, Any]]
Perms = dict[str, np.ndarray]


class Axis(NamedTuple):
    """One axis of one tensor acted on by a permutation group (``stacked``: see the module docstring)."""

    tensor: str
    axis: int
    stacked: bool = False


@dataclass(frozen=True)
class PermutationSpec:
    """The permutation symmetries of a parameter layout: ``groups`` name → axes, ``sizes`` name → n.

    Build one with :meth:`from_groups` (sizes inferred and everything checked against a layout) or
    :func:`feedforward_spec` (derived automatically for a chain of linear/convolutional layers).
    ``axes_of(tensor)`` maps a tensor's axis index to the name of the group permuting it.
    """

    groups: Mapping[str, tuple[Axis, ...]]
    sizes: Mapping[str, int]
    _by_tensor: dict[str, dict[int, tuple[str, bool]]] = field(default_factory=dict, repr=False,
                                                               compare=False)

    def __post_init__(self) -> None:
        by_tensor: dict[str, dict[int, tuple[str, bool]]] = {}
        for g, axes in self.groups.items():
            for ax in axes:
                slots = by_tensor.setdefault(ax.tensor, {})
                if ax.axis in slots:
                    raise AnalysisError(f"permutation spec: axis {ax.axis} of tensor {ax.tensor!r} is in "
                                        f"groups {slots[ax.axis][0]!r} and {g!r}; an axis can belong to one "
                                        "group only")
                slots[ax.axis] = (g, ax.stacked)
        self._by_tensor.update(by_tensor)

    @classmethod
    def from_groups(cls, groups: Mapping[str, Iterable[Sequence[Any]]], layout: Layout,
                    sizes: Mapping[str, int] | None = None) -> PermutationSpec:
        """A spec from ``{group: [(tensor, axis[, stacked]), ...]}``, checked against ``layout``.

        A group's size defaults to the shortest of its axes (every other axis must be a multiple of it).
        """
        shapes = {e["name"]: list(e["shape"]) for e in layout}
        norm: dict[str, tuple[Axis, ...]] = {}
        out_sizes: dict[str, int] = {}
        for g, entries in groups.items():
            axes = tuple(Axis(str(t[0]), int(t[1]), bool(t[2]) if len(t) > 2 else False) for t in entries)
            if not axes:
                raise AnalysisError(f"permutation spec: group {g!r} has no axes; list (tensor, axis) pairs")
            lengths = []
            for ax in axes:
                if ax.tensor not in shapes:
                    names = ", ".join(list(shapes)[:8])
                    more = ", ..." if len(shapes) > 8 else ""
                    raise AnalysisError(f"permutation spec: group {g!r} names tensor {ax.tensor!r}, which is "
                                        f"not in the layout (tensors: {names}{more})")
                shape = shapes[ax.tensor]
                if not 0 <= ax.axis < len(shape):
                    raise AnalysisError(f"permutation spec: group {g!r}: tensor {ax.tensor!r} of shape "
                                        f"{shape} has no axis {ax.axis}")
                lengths.append(shape[ax.axis])
            n = int(sizes[g]) if sizes and g in sizes else min(lengths)
            for ax, length in zip(axes, lengths, strict=True):
                if n <= 0 or length % n:
                    raise AnalysisError(f"permutation spec: group {g!r} permutes {n} units but axis "
                                        f"{ax.axis} of {ax.tensor!r} has length {length}, not a multiple "
                                        f"of {n}")
            norm[g] = axes
            out_sizes[g] = n
        return cls(groups=norm, sizes=out_sizes)

    def axes_of(self, tensor: str) -> dict[int, tuple[str, bool]]:
        """``{axis: (group, stacked)}`` for the permuted axes of ``tensor`` (empty when none)."""
        return self._by_tensor.get(tensor, {})

    def to_json(self) -> dict[str, list[list[Any]]]:
        """Plain JSON form ``{group: [[tensor, axis, stacked], ...]}`` (sizes come from a layout)."""
        return {g: [[a.tensor, a.axis, a.stacked] for a in axes] for g, axes in self.groups.items()}

    def __repr__(self) -> str:
        inner = ", ".join(f"{g}[{self.sizes[g]}]: " + " ".join(f"{a.tensor}:{a.axis}" for a in axes)
                          for g, axes in self.groups.items())
        return f"PermutationSpec({inner})"


def feedforward_spec(layout: Layout) -> PermutationSpec:
    """The hidden-unit / channel symmetries of a chain of linear and convolutional layers.

    Walks the layout's layers in order. Each layer with a weight of 2 dims (linear ``[out, in]``) or more
    (convolution ``[out, in, *kernel]``) opens a group ``P<k>`` over its output units (``axis 0`` of the
    weight and of every 1-D tensor of that layer, e.g. the bias) that also acts on the input axis (``axis
    1``) of the next such layer; when that input axis is ``k`` times longer (a flatten of ``[C, H, W]``
    after a convolution) each unit owns ``k`` contiguous inputs. A layer made only of 1-D tensors whose
    length equals the open group's size (a per-unit scale/shift) joins that group. The last weighted
    layer's outputs are the network's outputs and are not permuted. Valid for networks whose nonlinearities
    and pooling act unit by unit (ReLU, tanh, max/avg pooling), i.e. the built-in MLP and CNN.
    """
    layers: dict[int, list[dict[str, Any]]] = {}
    for e in layout:
        layers.setdefault(int(e.get("layer", 0)), []).append(e)
    groups: dict[str, list[tuple[str, int]]] = {}
    open_group: tuple[str, int] | None = None
    for k in sorted(layers):
        entries = layers[k]
        weights = [e for e in entries if len(e["shape"]) >= 2]
        if not weights:
            if open_group is not None and all(len(e["shape"]) == 1 and e["shape"][0] == open_group[1]
                                              for e in entries):
                groups[open_group[0]].extend((e["name"], 0) for e in entries)
                continue
            names = ", ".join(e["name"] for e in entries)
            raise AnalysisError(f"feedforward permutation spec: layer {k} ({names}) "
                                "is neither a linear/conv layer nor a per-unit scale; register the model's "
                                "symmetries explicitly (see trajkit.landscape.registry)")
        if len(weights) != 1:
            raise AnalysisError(f"feedforward permutation spec: layer {k} has {len(weights)} weight tensors "
                                f"({', '.join(e['name'] for e in weights)}); a chain layer has one")
        w = weights[0]
        if open_group is not None:
            g, n = open_group
            if w["shape"][1] % n:
                raise AnalysisError(f"feedforward permutation spec: {w['name']} has {w['shape'][1]} inputs, "
                                    f"not a multiple of the {n} outputs of the previous layer; not a simple "
                                    "chain")
            groups[g].append((w["name"], 1))
        g = f"P{len(groups)}"
        groups[g] = [(e["name"], 0) for e in entries if e["shape"] and e["shape"][0] == w["shape"][0]]
        open_group = (g, int(w["shape"][0]))
    if open_group is not None:
        del groups[open_group[0]]
    sizes = {}
    shapes = {e["name"]: e["shape"] for e in layout}
    for g, axes in groups.items():
        sizes[g] = int(shapes[axes[0][0]][0])
    return PermutationSpec.from_groups(groups, layout, sizes=sizes)


def recurrent_spec(layout: Layout, prefix: str = "cells", head: str = "head") -> PermutationSpec:
    """Hidden-unit symmetries of trajkit's built-in stacked RNN (``h_t = a(W_ih x_t + b + W_hh h_{t−1})``).

    Cell ``i``'s hidden units are group ``P<i>``: rows of ``<prefix>.<i>.ih.weight`` and ``.ih.bias``, both
    axes of ``<prefix>.<i>.hh.weight``, and the input axis of the next cell's ``ih.weight`` (or of
    ``<head>.weight`` for the last cell). GRU/LSTM cells stack their g gates along the rows
    (``ih.weight [g·w, in]``, ``ih.bias [g·w]``, ``hh.weight [g·w, w]``, gate-major): those row axes are
    ``stacked`` — the permutation acts on each gate block alike (g = 1, the tanh cell, is the same as
    unstacked). The group size is the width w, the length of ``hh.weight``'s column axis.
    """
    names = {e["name"] for e in layout}
    groups: dict[str, list[tuple[str, int, bool]]] = {}
    i = 0
    while f"{prefix}.{i}.ih.weight" in names:
        g = [(f"{prefix}.{i}.ih.weight", 0, True), (f"{prefix}.{i}.hh.weight", 0, True),
             (f"{prefix}.{i}.hh.weight", 1, False)]
        if f"{prefix}.{i}.ih.bias" in names:
            g.insert(1, (f"{prefix}.{i}.ih.bias", 0, True))
        if f"{prefix}.{i}.hh.bias" in names:
            g.insert(3, (f"{prefix}.{i}.hh.bias", 0, True))
        nxt = f"{prefix}.{i + 1}.ih.weight" if f"{prefix}.{i + 1}.ih.weight" in names else f"{head}.weight"
        g.append((nxt, 1, False))
        groups[f"P{i}"] = g
        i += 1
    if not groups:
        raise AnalysisError(f"recurrent permutation spec: the layout has no {prefix}.0.ih.weight tensor; "
                            "register the model's symmetries explicitly (see trajkit.landscape.registry)")
    shapes = {e["name"]: e["shape"] for e in layout}
    sizes = {g: int(shapes[f"{prefix}.{k}.hh.weight"][1]) for k, g in enumerate(groups)}
    return PermutationSpec.from_groups(groups, layout, sizes=sizes)


def builtin_spec(kind: str, layout: Layout) -> PermutationSpec:
    """The symmetries of a built-in model kind (``mlp``, ``cnn``: :func:`feedforward_spec`; ``rnn``:
    :func:`recurrent_spec`)."""
    if kind in ("mlp", "cnn"):
        return feedforward_spec(layout)
    if kind == "rnn":
        return recurrent_spec(layout)
    raise AnalysisError(f"no built-in permutation symmetries for model kind {kind!r} (built-in: mlp, cnn, "
                        "rnn)")


def unit_view(tensor: np.ndarray, axis: int, n: int, stacked: bool = False) -> np.ndarray:
    """``tensor`` reshaped to ``[n, rest]`` with unit ``i``'s entries on row ``i`` (a view when possible).

    The permuted axis of length ``n·k`` is split into ``[n, k]`` (or ``[k, n]`` when ``stacked``), the
    unit axis moved to the front and everything else flattened into the second axis.
    """
    shape = list(tensor.shape)
    k = shape[axis] // n
    split = [k, n] if stacked else [n, k]
    t = tensor.reshape([*shape[:axis], *split, *shape[axis + 1:]])
    unit_axis = axis + 1 if stacked else axis
    return np.moveaxis(t, unit_axis, 0).reshape(n, -1)


def permute_tensor(tensor: np.ndarray, axes: Mapping[int, tuple[str, bool]], spec: PermutationSpec,
                   perms: Mapping[str, np.ndarray], skip: str | None = None) -> np.ndarray:
    """``tensor`` with the permutations of ``axes`` (``{axis: (group, stacked)}``) but ``skip`` applied."""
    out = tensor
    for axis, (g, stacked) in axes.items():
        if g == skip or g not in perms:
            continue
        n = spec.sizes[g]
        shape = list(out.shape)
        k = shape[axis] // n
        split = [k, n] if stacked else [n, k]
        t = out.reshape([*shape[:axis], *split, *shape[axis + 1:]])
        t = np.take(t, np.asarray(perms[g]), axis=axis + 1 if stacked else axis)
        out = t.reshape(shape)
    return out


def permutation_index(layout: Layout, spec: PermutationSpec, perms: Mapping[str, np.ndarray]) -> np.ndarray:
    """int64 ``[N]`` gather index with ``w[..., index]`` = the flat vector(s) ``w`` permuted by ``perms``."""
    parts = []
    for e in layout:
        size = int(e["size"])
        idx = np.arange(e["offset"], e["offset"] + size, dtype=np.int64)
        axes = spec.axes_of(e["name"])
        if axes:
            idx = permute_tensor(idx.reshape(e["shape"]), axes, spec, perms).reshape(-1)
        parts.append(idx)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def apply_permutations(w: np.ndarray, layout: Layout, spec: PermutationSpec,
                       perms: Mapping[str, np.ndarray]) -> np.ndarray:
    """Flat parameter vector(s) ``w`` (``[N]`` or ``[..., N]``) with ``perms`` applied: ``w[..., index]``."""
    return np.asarray(w)[..., permutation_index(layout, spec, perms)]


def identity_permutations(spec: PermutationSpec) -> Perms:
    """``{group: arange(n)}``."""
    return {g: np.arange(n, dtype=np.int64) for g, n in spec.sizes.items()}


def random_permutations(spec: PermutationSpec, seed: int | np.random.Generator | None = None) -> Perms:
    """``{group: a uniformly random permutation of n}``."""
    rng = np.random.default_rng(seed)
    return {g: rng.permutation(n).astype(np.int64) for g, n in spec.sizes.items()}


def compose(first: Mapping[str, np.ndarray], then: Mapping[str, np.ndarray]) -> Perms:
    """Applying ``first`` and then ``then``: ``b''[i] = b'[then[i]] = b[first[then[i]]]``."""
    return {g: np.asarray(first[g])[np.asarray(then[g])] for g in first}


def invert(perms: Mapping[str, np.ndarray]) -> Perms:
    """The inverse set: applying ``perms`` then ``invert(perms)`` is the identity."""
    return {g: np.argsort(np.asarray(p)).astype(np.int64) for g, p in perms.items()}
