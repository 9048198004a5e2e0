"""Training losses and accuracy, for one network (``out`` ``[B, K]``) or R replicas (``[R, B, K]``).

The loss of a set of P samples is the mean of a per-sample loss ``ℓ(f_μ, y_μ)``:

- ``cross_entropy``: ``ℓ = logsumexp_k f_k − f_{c}`` with class index c; K = number of classes.
- ``mse``: ``ℓ = (1/K) Σ_k (f_k − y_k)²``. Classification targets are ±1 codes: one output with
  ``y = +1`` for class 1 and ``−1`` for class 0 when there are two classes, else one-vs-all
  (``y_k = +1`` for the true class, ``−1`` otherwise); regression targets are used as given.
- ``quadratic_hinge``: ``ℓ = (1/K) Σ_k ½ max(0, 1 − y_k f_k)²`` with the same ±1 codes (so ``ℓ = ½`` at
  ``f = 0``, the value of the trivial minimum ``w = 0``).

Sequences of categorical variables (outputs ``[..., B, L, C, V]``, four or more dims, with targets
``[..., B, L, C]``: the next-step read-out of the ``rnn`` with ``voices``) have the per-sample loss
``ℓ_μ = (1/(L·C)) Σ_{t,c} ℓ(f_{μtc}, y_{μtc})`` — e.g. the negative log-likelihood per time step and voice
— and the accuracy is the fraction of the L·C predictions that are right.

Accuracy: with one output, the sign of ``f`` agrees with the ±1 label; with K outputs, ``argmax f`` is the
class. Regression has no accuracy. Weight decay is not part of the loss: the dynamics add ``λ w`` to
the gradient (see :mod:`trajkit.experiments.dynamics`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from trajkit.errors import ConfigError

LOSSES = ("cross_entropy", "mse", "quadratic_hinge")


def targets(loss: str, y: Tensor, n_classes: int | None) -> Tensor:
    """The tensor the loss compares outputs with: class indices (cross-entropy) or ±1 / real codes."""
    if n_classes is None or loss == "cross_entropy":
        return y
    if n_classes == 2:
        return (2.0 * y.to(torch.float32) - 1.0).unsqueeze(-1)
    return 2.0 * torch.nn.functional.one_hot(y, n_classes).to(torch.float32) - 1.0


def _per_step_mean(value: Tensor, out: Tensor) -> Tensor:
    """``value`` (``out.shape[:-1]``) averaged over the (time step, voice) axes of sequence outputs."""
    return value.mean(dim=(-2, -1)) if out.dim() >= 4 else value


def per_sample(loss: str, out: Tensor, target: Tensor) -> Tensor:
    """``ℓ(f_μ, y_μ)``: ``out`` ``[..., B, K]``, ``target`` ``[B]``/``[B, K]`` (shared) or with the same
    leading dims as ``out`` → ``[..., B]`` (sequence outputs ``[..., B, L, C, V]``: the mean over L, C)."""
    if loss == "cross_entropy":
        idx = target.expand(out.shape[:-1]).unsqueeze(-1)
        shift = out.detach().amax(dim=-1, keepdim=True)  # log-sum-exp, written out: torch.logsumexp over
        shifted = out - shift                            # a short last axis is slow on CPU with 2 threads
        return _per_step_mean(shifted.exp().sum(dim=-1).log() - shifted.gather(-1, idx).squeeze(-1), out)
    if loss == "mse":
        return _per_step_mean((out - target).square().mean(dim=-1), out)
    if loss == "quadratic_hinge":
        return _per_step_mean(0.5 * torch.relu(1.0 - target * out).square().mean(dim=-1), out)
    raise ConfigError(f"loss.name = {loss!r} is unknown; use {', '.join(LOSSES)}")


def correct(out: Tensor, classes: Tensor) -> Tensor:
    """1.0 where the prediction is the class: ``out`` ``[..., B, K]``, ``classes`` ``[B]`` → ``[..., B]``
    (sequence outputs: the fraction of right predictions over the L·C steps and voices)."""
    if out.shape[-1] == 1:
        return _per_step_mean(((out[..., 0] > 0) == (classes > 0)).to(out.dtype), out)
    return _per_step_mean((out.argmax(dim=-1) == classes).to(out.dtype), out)
