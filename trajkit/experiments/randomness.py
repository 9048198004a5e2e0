"""Seeded random streams: every random number of a run is a function of (seed, purpose, index).

Replica r of a run with seed s uses seed ``s + r``. Its initial parameters come from
``derive_seed(seed, "init")``, the minibatch order of epoch e from ``derive_seed(seed, "batches", e)``
(a permutation of the P training samples, cut into consecutive batches of B; the last batch of an
epoch is smaller when B does not divide P) and the Langevin noise of step t from
``derive_seed(seed, "noise", t)``; the k-th minibatch of the gradient statistics at snapshot step t is the
first b entries of a permutation of the P samples drawn from ``derive_seed(seed, "gradient_stats", t, k)``
(:func:`gradient_sample_indices`: samples without replacement within a minibatch, independent across
minibatches). So a replica draws the same numbers whether it is trained alone or
in a batch of replicas, and a run resumed at step t continues exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the parts (blake2b of their text): independent streams per purpose and index."""
    digest = hashlib.blake2b(":".join(str(p) for p in ("trajkit", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class MinibatchStream:
    """Indices of each replica's minibatch at a step: ``indices(step)`` → int64 ``[R, b]`` (CPU).

    ``b = B`` except for the last batch of an epoch (``P mod B`` samples when B does not divide P).
    """

    def __init__(self, seeds: Sequence[int], n_train: int, batch_size: int):
        self.seeds = list(seeds)
        self.n_train, self.batch_size = int(n_train), int(batch_size)
        self.steps_per_epoch = math.ceil(self.n_train / self.batch_size)
        self._epoch = -1
        self._perms: torch.Tensor | None = None
        self._gen = torch.Generator()

    def epoch_of(self, step: int) -> float:
        """Epochs completed after ``step`` updates."""
        return step / self.steps_per_epoch

    def _permutations(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            perms = torch.empty(len(self.seeds), self.n_train, dtype=torch.int64)
            for i, s in enumerate(self.seeds):
                self._gen.manual_seed(derive_seed(s, "batches", epoch))
                torch.randperm(self.n_train, generator=self._gen, out=perms[i])
            self._epoch, self._perms = epoch, perms
        assert self._perms is not None
        return self._perms

    def indices(self, step: int) -> torch.Tensor:
        epoch, k = divmod(int(step), self.steps_per_epoch)
        perms = self._permutations(epoch)
        return perms[:, k * self.batch_size:(k + 1) * self.batch_size]

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only the replicas at ``rows`` (the others stopped)."""
        self.seeds = [self.seeds[i] for i in rows]
        if self._perms is not None:
            self._perms = self._perms[list(rows)]


class NoiseStream:
    """Standard normal ξ for each replica at a step: ``draw(step)`` → ``[R, N]`` on ``device`` (float32, or
    ``dtype``: float64 runs draw float64 normals).

    Row r is ``randn(N)`` from a generator seeded with ``derive_seed(seeds[r], "noise", step)`` — on the
    CPU, bit for bit the same whatever the other replicas; a CUDA generator gives other (equally valid)
    numbers.
    """

    def __init__(self, seeds: Sequence[int], n_params: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.seeds = list(seeds)
        self.n_params = int(n_params)
        self.device = torch.device(device)
        self._gen = torch.Generator(device=self.device)
        self._out = torch.empty(len(self.seeds), self.n_params, device=self.device, dtype=dtype)

    def draw(self, step: int) -> torch.Tensor:
        for i, s in enumerate(self.seeds):
            self._gen.manual_seed(derive_seed(s, "noise", int(step)))
            torch.randn(self.n_params, generator=self._gen, out=self._out[i])
        return self._out

    def keep(self, rows: Sequence[int]) -> None:
        self.seeds = [self.seeds[i] for i in rows]
        self._out = self._out[list(rows)].contiguous()


def gradient_sample_indices(seed: int, step: int, n_train: int, n_batches: int, batch_size: int) -> torch.Tensor:
    """The minibatches of the gradient statistics of replica seed ``seed`` at snapshot ``step``: int64
    ``[K, b]`` (row k: the first b entries of ``randperm(P)`` seeded with ``derive_seed(seed, "gradient_stats",
    step, k)``)."""
    gen = torch.Generator()
    rows = []
    for k in range(n_batches):
        gen.manual_seed(derive_seed(seed, "gradient_stats", int(step), k))
        rows.append(torch.randperm(n_train, generator=gen)[:batch_size])
    return torch.stack(rows)
