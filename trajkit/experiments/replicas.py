"""R replicas of one configuration: trained as one batched computation, or one at a time.

:class:`BatchedReplicas` keeps each parameter tensor stacked over replicas (``[R, *shape]``) and runs
the built-in model's ``batched_forward`` (batched GEMMs, grouped convolutions; any other module goes
through ``torch.func.functional_call`` + ``vmap``). The per-replica losses are summed before the
backward pass: replicas share no parameters, so the gradient of the sum with respect to replica r's
parameters is the gradient of replica r's own loss. :class:`SequentialReplicas` holds R ordinary modules
and loops over them — the reference path (``run.vectorize = false``) that the batched one must match to
floating-point tolerance.

Both take the initial parameters as a flat ``[R, N]`` tensor in layout order (float32, or float64 for
``run.dtype = "float64"``: the parameters, data and arithmetic then stay in that dtype) and expose the same
methods: ``train_step``, ``evaluate``, ``flat`` and ``keep``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from trajkit.archive.layout import Layout
from trajkit.experiments import losses
from trajkit.experiments.dynamics import Dynamics
from trajkit.experiments.models import build_model

#: samples per forward pass in full-batch gradients and evaluations (bounds memory as R·chunk·width)
EVAL_CHUNK = 8192


def _views(flat: Tensor, layout: Layout, lead: tuple[int, ...]) -> list[Tensor]:
    """Views of ``flat`` (``[*lead, N]``) shaped like each layout tensor (``[*lead, *shape]``)."""
    return [flat[..., e["offset"]:e["offset"] + e["size"]].view(*lead, *e["shape"]) for e in layout]


class BatchedReplicas:
    """R replicas as stacked parameters; one forward/backward serves them all."""

    def __init__(self, model: nn.Module, layout: Layout, init: Tensor, device: torch.device | str = "cpu"):
        self.model, self.layout = model, layout
        self.names = [e["name"] for e in layout]
        R = init.shape[0]
        self.params = [v.to(device).clone().requires_grad_(True) for v in _views(init, layout, (R,))]
        self.buffers: list[Tensor] | None = None
        if hasattr(model, "batched_forward"):
            self._forward = model.batched_forward
        else:
            self._forward = self._vmap_forward

    @property
    def n_replicas(self) -> int:
        return int(self.params[0].shape[0])

    def _vmap_forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        from torch.func import functional_call, vmap

        def one(p, xi):
            return functional_call(self.model, p, (xi,))

        return vmap(one, in_dims=(0, 0 if x.dim() == 3 else None))(params, x)

    def forward(self, x: Tensor) -> Tensor:
        """Outputs ``[R, B, K]`` for inputs ``[B, D]`` (shared) or ``[R, B, D]``."""
        return self._forward(dict(zip(self.names, self.params, strict=True)), x)

    def _loss_grad(self, loss: str, x: Tensor, target: Tensor) -> tuple[Tensor, list[Tensor]]:
        dim = x.dim() - 2  # the sample axis of x and target alike
        n = x.shape[dim]
        total: Tensor | None = None
        grads: list[Tensor] | None = None
        for lo in range(0, n, EVAL_CHUNK):
            m = min(EVAL_CHUNK, n - lo)
            xs, ts = x.narrow(dim, lo, m), target.narrow(dim, lo, m)
            part = losses.per_sample(loss, self.forward(xs), ts).sum(dim=-1) / n  # [R]
            g = torch.autograd.grad(part.sum(), self.params)
            total = part.detach() if total is None else total + part.detach()
            grads = list(g) if grads is None else [a + b for a, b in zip(grads, g, strict=True)]
        assert total is not None and grads is not None
        return total, grads

    def train_step(self, dynamics: Dynamics, loss: str, x: Tensor, target: Tensor, noise: Tensor | None) -> Tensor:
        """One update of every replica; returns the loss ``[R]`` at the parameters before the update.

        ``noise`` is ``[R, N]`` in layout order (or None)."""
        value, grads = self._loss_grad(loss, x, target)
        if dynamics.momentum and self.buffers is None:
            self.buffers = [torch.zeros_like(p) for p in self.params]
        nviews = _views(noise, self.layout, (self.n_replicas,)) if noise is not None else None
        dynamics.update(self.params, grads, self.buffers, nviews)
        return value

    def gradients(self, loss: str, x: Tensor, target: Tensor) -> Tensor:
        """Each replica's gradient of its mean loss on its own minibatch ``x`` ``[R, b, D]``: ``[R, N]`` in
        layout order (the parameters are not changed)."""
        _, grads = self._loss_grad(loss, x, target)
        R = self.n_replicas
        return torch.cat([g.reshape(R, -1) for g in grads], dim=1)

    @torch.no_grad()
    def evaluate(self, loss: str, x: Tensor, target: Tensor, classes: Tensor | None,
                 params: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """Mean loss ``[R]`` and accuracy ``[R]`` (None without classes) over all of ``x`` ``[P, D]``, at the
        current parameters or at ``params`` (stacked ``[R, *shape]`` in layout order)."""
        params = self.params if params is None else params
        named = dict(zip(self.names, params, strict=True))
        R = int(params[0].shape[0])
        n = x.shape[0]
        tot = torch.zeros(R, device=x.device, dtype=x.dtype)
        acc = torch.zeros(R, device=x.device, dtype=x.dtype) if classes is not None else None
        for lo in range(0, n, EVAL_CHUNK):
            out = self._forward(named, x[lo:lo + EVAL_CHUNK])
            tot += losses.per_sample(loss, out, target[lo:lo + EVAL_CHUNK]).sum(dim=-1)
            if acc is not None and classes is not None:
                acc += losses.correct(out, classes[lo:lo + EVAL_CHUNK]).sum(dim=-1)
        return tot / n, (acc / n if acc is not None else None)

    @property
    def evaluates_off_thread(self) -> bool:
        """Whether :meth:`evaluate` with ``params`` may run on another thread while this one trains: a
        built-in ``batched_forward`` on the CPU (pure functions of ``params``; the ``vmap`` fallback swaps
        the module's parameters and is not thread-safe). The copies it then evaluates must hold the engine's
        dtype (a recorder whose archives store it: float64 archives for a float64 run)."""
        return hasattr(self.model, "batched_forward") and self.params[0].device.type == "cpu"

    def params_from_flat(self, flat: Tensor) -> list[Tensor]:
        """Stacked parameter tensors ``[R, *shape]`` (contiguous copies, laid out as the engine's own, so an
        evaluation gives the same bits) from a flat ``[R, N]`` tensor in layout order."""
        return [v.contiguous() for v in _views(flat, self.layout, (int(flat.shape[0]),))]

    @torch.no_grad()
    def flat(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Current parameters as a CPU tensor ``[R, N]`` (float32 unless ``dtype``) in layout order."""
        R = self.n_replicas
        return torch.cat([p.detach().reshape(R, -1) for p in self.params], dim=1).to("cpu", dtype)

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only the replicas at ``rows`` (e.g. drop diverged ones)."""
        idx = torch.as_tensor(list(rows), dtype=torch.int64, device=self.params[0].device)
        self.params = [p.detach().index_select(0, idx).requires_grad_(True) for p in self.params]
        if self.buffers is not None:
            self.buffers = [b.index_select(0, idx) for b in self.buffers]


class SequentialReplicas:
    """R ordinary modules trained one after the other (the reference for :class:`BatchedReplicas`)."""

    def __init__(self, model_spec: dict, layout: Layout, init: Tensor, device: torch.device | str = "cpu"):
        self.layout = layout
        self.models: list[nn.Module] = []
        for r in range(init.shape[0]):
            with torch.random.fork_rng(devices=[]):  # the default init is overwritten: keep the caller's RNG
                m = build_model(model_spec).to(init.dtype)
            with torch.no_grad():
                for p, v in zip(m.parameters(), _views(init[r], layout, ()), strict=True):
                    p.copy_(v)
            self.models.append(m.to(device))
        self.buffers: list[list[Tensor]] | None = None

    @property
    def n_replicas(self) -> int:
        return len(self.models)

    def train_step(self, dynamics: Dynamics, loss: str, x: Tensor, target: Tensor, noise: Tensor | None) -> Tensor:
        values = []
        if dynamics.momentum and self.buffers is None:
            self.buffers = [[torch.zeros_like(p) for p in m.parameters()] for m in self.models]
        for r, m in enumerate(self.models):
            xr = x[r] if x.dim() == 3 else x
            tr = target[r] if x.dim() == 3 else target
            params = list(m.parameters())
            n = xr.shape[0]
            total, grads = None, None
            for lo in range(0, n, EVAL_CHUNK):
                part = losses.per_sample(loss, m(xr[lo:lo + EVAL_CHUNK]), tr[lo:lo + EVAL_CHUNK]).sum() / n
                g = torch.autograd.grad(part, params)
                total = part.detach() if total is None else total + part.detach()
                grads = list(g) if grads is None else [a + b for a, b in zip(grads, g, strict=True)]
            assert total is not None and grads is not None
            nviews = _views(noise[r], self.layout, ()) if noise is not None else None
            dynamics.update(params, grads, self.buffers[r] if self.buffers is not None else None, nviews)
            values.append(total)
        return torch.stack(values)

    def gradients(self, loss: str, x: Tensor, target: Tensor) -> Tensor:
        """As :meth:`BatchedReplicas.gradients`: ``[R, N]`` for minibatches ``x`` ``[R, b, D]``."""
        rows = []
        for r, m in enumerate(self.models):
            params = list(m.parameters())
            value = losses.per_sample(loss, m(x[r]), target[r]).mean()
            rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)]))
        return torch.stack(rows)

    @torch.no_grad()
    def evaluate(self, loss: str, x: Tensor, target: Tensor, classes: Tensor | None) -> tuple[Tensor, Tensor | None]:
        n = x.shape[0]
        tots, accs = [], []
        for m in self.models:
            tot, acc = torch.zeros((), device=x.device, dtype=x.dtype), torch.zeros((), device=x.device, dtype=x.dtype)
            for lo in range(0, n, EVAL_CHUNK):
                out = m(x[lo:lo + EVAL_CHUNK])
                tot += losses.per_sample(loss, out, target[lo:lo + EVAL_CHUNK]).sum()
                if classes is not None:
                    acc += losses.correct(out, classes[lo:lo + EVAL_CHUNK]).sum()
            tots.append(tot / n)
            accs.append(acc / n)
        return torch.stack(tots), (torch.stack(accs) if classes is not None else None)

    @torch.no_grad()
    def flat(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in self.models]
                           ).to("cpu", dtype)

    def keep(self, rows: Sequence[int]) -> None:
        self.models = [self.models[i] for i in rows]
        if self.buffers is not None:
            self.buffers = [self.buffers[i] for i in rows]
