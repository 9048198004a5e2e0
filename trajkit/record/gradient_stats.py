"""Gradient statistics at a snapshot: the mean gradient, its minibatch variance and the noise strength.

Over K minibatch gradients ``g_1 … g_K`` (each the gradient of the mean loss over one minibatch of b
samples; weight decay, being deterministic, is not part of g):

- ``grad_mean_norm2 = |ḡ|²`` with ``ḡ = (1/K) Σ_k g_k``;
- ``grad_var = (1/K) Σ_k |g_k|² − |ḡ|²`` (the trace of the sample covariance, normalised by K);
- ``noise_D = η² · grad_var / (2 B)``, with η the learning rate and B the training batch size.

``noise_D`` is the diffusion coefficient of SGD's minibatch noise when ``grad_var`` is the per-sample
variance (b = 1, the default of ``trajkit record``): one SGD step adds the noise ``−η (g_B − ∇L)``, of
covariance ``η² Σ / B`` for per-sample gradient covariance Σ (sampling with replacement), so over t steps
it alone spreads the weights by ``2 D t`` with ``D = η² tr Σ / (2 B)`` — the "SGD as Langevin" reading
(Mandt, Hoffman & Blei 2017, arXiv:1704.04289; Jastrzębski et al. 2017, arXiv:1711.04623, whose noise
scale is η/B). See docs/EXPERIMENTS.md ("Gradient statistics") for the expectation of ``grad_var`` when
minibatches are drawn without replacement.

:class:`GradientStats` measures them in a user's loop (``Recorder(..., gradient_stats=GradientStats(...))``):

>>> def loss(model, batch):                                   # doctest: +SKIP
...     x, y = batch
...     return torch.nn.functional.cross_entropy(model(x), y)
>>> stats = GradientStats(loss, DataLoader(train, batch_size=1, shuffle=True), batches=64, lr=0.1,
...                       batch_size=100)                     # doctest: +SKIP
>>> rec = trajkit.Recorder("run.trajkit", model, gradient_stats=stats)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from trajkit.errors import TrajkitError

GRADIENT_METRICS = ("grad_mean_norm2", "grad_var", "noise_D")


class GradientMoments:
    """Running sums of K gradients ``[..., N]`` (float64): :meth:`add` each, then :meth:`result`."""

    def __init__(self) -> None:
        self.k = 0
        self._sum: torch.Tensor | None = None
        self._sum_norm2: torch.Tensor | None = None

    def add(self, g: torch.Tensor) -> None:
        g = g.detach().to(torch.float64)
        norm2 = (g * g).sum(dim=-1)
        self._sum = g.clone() if self._sum is None else self._sum + g
        self._sum_norm2 = norm2 if self._sum_norm2 is None else self._sum_norm2 + norm2
        self.k += 1

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(|ḡ|², (1/K) Σ|g_k|² − |ḡ|²)``, each ``[...]`` float64 (the variance clipped at 0 for rounding)."""
        if self._sum is None or self._sum_norm2 is None:
            raise TrajkitError("gradient statistics need at least one minibatch gradient")
        mean = self._sum / self.k
        mean_norm2 = (mean * mean).sum(dim=-1)
        return mean_norm2, (self._sum_norm2 / self.k - mean_norm2).clamp_min(0.0)


def noise_strength(lr: float, grad_var: Any, batch_size: int) -> Any:
    """``noise_D = η² · grad_var / (2 B)``."""
    return lr * lr * grad_var / (2.0 * batch_size)


def gradient_metrics(mean_norm2: float, var: float, lr: float | None, batch_size: int | None) -> dict[str, float]:
    """The metrics ``{grad_mean_norm2, grad_var[, noise_D]}`` (noise_D needs ``lr`` and ``batch_size``)."""
    out = {"grad_mean_norm2": float(mean_norm2), "grad_var": float(var)}
    if lr is not None and batch_size is not None:
        out["noise_D"] = float(noise_strength(lr, var, batch_size))
    return out


class GradientStats:
    """Gradient statistics of a model over ``batches`` minibatches of ``loader``, for the Recorder.

    Parameters
    ----------
    loss : ``loss(model, batch) -> scalar tensor``, the mean loss of one minibatch as ``loader`` yields it.
    loader : an iterable of minibatches (e.g. a ``DataLoader``, seeded with its ``generator`` for a seeded
        sample); each snapshot takes the first ``batches`` items of a fresh iteration.
    batches : K, the number of minibatch gradients per snapshot (≥ 2).
    lr, batch_size : η and the training batch size B of ``noise_D``; without both, noise_D is not recorded.
    """

    def __init__(self, loss: Callable[[torch.nn.Module, Any], torch.Tensor], loader: Iterable[Any],
                 batches: int = 32, lr: float | None = None, batch_size: int | None = None):
        if not callable(loss):
            raise TrajkitError(f"GradientStats: loss must be callable loss(model, batch), got {type(loss).__name__}")
        if not isinstance(batches, int) or batches < 2:
            raise TrajkitError(f"GradientStats: batches={batches!r} must be an integer >= 2 (a variance needs two "
                               "minibatches)")
        if (lr is None) != (batch_size is None):
            raise TrajkitError("GradientStats: give both lr and batch_size (for noise_D) or neither")
        self.loss, self.loader, self.batches, self.lr, self.batch_size = loss, loader, batches, lr, batch_size

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        params = [p for p in model.parameters() if p.requires_grad]
        moments = GradientMoments()
        for batch in self.loader:
            value = self.loss(model, batch)
            grads = torch.autograd.grad(value, params)
            moments.add(torch.cat([g.reshape(-1) for g in grads]))
            if moments.k == self.batches:
                break
        if moments.k < self.batches:
            raise TrajkitError(f"GradientStats: the loader gave {moments.k} minibatches, fewer than batches="
                               f"{self.batches}; lower batches or give a longer loader")
        mean_norm2, var = moments.result()
        return gradient_metrics(float(mean_norm2), float(var), self.lr, self.batch_size)

    def __repr__(self) -> str:
        return f"GradientStats(batches={self.batches}, lr={self.lr}, batch_size={self.batch_size})"
