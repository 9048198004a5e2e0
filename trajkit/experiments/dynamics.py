"""Update rules: SGD with momentum, full-batch GD, overdamped Langevin.

With the gradient ``g = ∇L(w)`` of the mean loss (over a minibatch for sgd, over all P training samples
for gd and langevin) and weight decay λ:

- ``sgd``: ``v ← μ v + (g + λ w)``, ``w ← w − η v`` (PyTorch's convention, dampening 0; ``v = 0`` at the
  start and after a resume, so a resumed run with μ > 0 differs from an uninterrupted one);
- ``gd``: ``w ← w − η (g + λ w)``;
- ``langevin``: ``w ← w − η (g + λ w) + sqrt(2 T η / P) · ξ``, ξ standard normal per parameter and step
  (:class:`trajkit.experiments.randomness.NoiseStream`). Its stationary density is
  ``∝ exp(−P (L(w) + λ|w|²/2) / T)``; over a lag of t steps where the noise dominates, the mean-square
  displacement per parameter is ``2 T η t / P``. ``T = 0`` is exactly ``gd`` (no noise is added).

The same code updates one network (tensors of their own shapes) or R stacked replicas (``[R, ...]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

NOISE_CONVENTION = "w <- w - lr*(grad + wd*w) + sqrt(2*T*lr/P)*xi, P=n_train"
MOMENTUM_CONVENTION = "v <- momentum*v + (grad + wd*w); w <- w - lr*v; v = 0 at start and on resume"


@dataclass(frozen=True)
class Dynamics:
    """One update rule with its hyper-parameters; ``n_train`` is P."""

    kind: str
    lr: float
    n_train: int
    temperature: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 64
    momentum: float = 0.0

    @classmethod
    def from_config(cls, dynamics: dict[str, Any], n_train: int) -> Dynamics:
        return cls(kind=dynamics["kind"], lr=float(dynamics["lr"]), n_train=int(n_train),
                   temperature=float(dynamics["temperature"]), weight_decay=float(dynamics["weight_decay"]),
                   batch_size=int(dynamics["batch_size"]), momentum=float(dynamics["momentum"]))

    @property
    def full_batch(self) -> bool:
        return self.kind in ("gd", "langevin")

    @property
    def effective_batch_size(self) -> int:
        return self.n_train if self.full_batch else min(self.batch_size, self.n_train)

    @property
    def noisy(self) -> bool:
        return self.kind == "langevin" and self.temperature > 0

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise added to each parameter per step: ``sqrt(2 T η / P)``."""
        return math.sqrt(2.0 * self.temperature * self.lr / self.n_train) if self.noisy else 0.0

    def update(self, params: list[Tensor], grads: list[Tensor], buffers: list[Tensor] | None,
               noise: list[Tensor] | None) -> None:
        """Apply one step in place. ``grads`` is overwritten; ``buffers`` (momentum) and ``noise`` match
        ``params`` in shape (``noise`` is ignored unless the dynamics are noisy)."""
        with torch.no_grad():
            if self.weight_decay:
                torch._foreach_add_(grads, params, alpha=self.weight_decay)
            direction = grads
            if self.momentum and buffers is not None:
                torch._foreach_mul_(buffers, self.momentum)
                torch._foreach_add_(buffers, grads)
                direction = buffers
            torch._foreach_add_(params, direction, alpha=-self.lr)
            if self.noisy and noise is not None:
                torch._foreach_add_(params, noise, alpha=self.noise_std)

    def metadata(self) -> dict[str, Any]:
        """The ``dynamics`` metadata block (batch_size is the effective one: P for full-batch rules)."""
        return {"kind": self.kind, "lr": self.lr, "temperature": self.temperature if self.kind == "langevin" else 0.0,
                "weight_decay": self.weight_decay, "batch_size": self.effective_batch_size,
                "momentum": self.momentum, "noise_convention": NOISE_CONVENTION, "n_train": self.n_train}

    def optimizer_metadata(self) -> dict[str, Any]:
        """The ``optimizer`` metadata block."""
        return {"name": self.kind, "lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "dampening": 0.0, "nesterov": False, "momentum_convention": MOMENTUM_CONVENTION}
