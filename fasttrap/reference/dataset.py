"""Twins of :mod:`fasttrap.ops.dataset`: evaluate, per_sample_grad_sq (pure torch).

Same names and signatures as the ops (without ``backend``); NumPy or torch in, torch out.
"""

from __future__ import annotations

from typing import Any

import torch

from ..model.mlp import MLP
from .common import ACT, as_tensor, losses, outputs, unflatten


def evaluate(mlp: MLP, theta: Any, X: Any, y: Any, want_grad: bool = False, block: int = 1024
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mean loss [K], accuracy [K] and (optionally) ∇L [K, P] over all N rows of X [N, n0], y [N]."""
    th0 = as_tensor(theta)
    Xt, yt = as_tensor(X, th0.dtype), as_tensor(y, torch.int64)
    N = Xt.shape[0]
    K = th0.shape[0]
    loss = torch.zeros(K, dtype=torch.float64)
    hits = torch.zeros(K, dtype=torch.int64)
    grad = torch.zeros_like(th0) if want_grad else None
    for r0 in range(0, N, block):
        xb, yb = Xt[r0:r0 + block], yt[r0:r0 + block]
        th = th0.detach().clone().requires_grad_(want_grad)
        with torch.set_grad_enabled(want_grad):
            Z = outputs(mlp, th, xb)
            Lb = losses(mlp, Z, yb) * (xb.shape[0] / N)
            if want_grad:
                (g,) = torch.autograd.grad(Lb.sum(), th)
                grad += g
        loss += Lb.detach().to(torch.float64)
        hits += (Z.detach().argmax(-1) == yb[None, :]).sum(1)
    return loss.to(th0.dtype), (hits.to(torch.float64) / N).to(th0.dtype), grad


def per_sample_grad_sq(mlp: MLP, theta: Any, X: Any, y: Any, want_grad: bool = False, block: int = 1024
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """‖∇ℓ_α‖² [K, N] of every sample's own loss ℓ_α (L = mean_α ℓ_α), and optionally ∇L [K, P].

    The textbook way, as in torch.func's per-sample-gradient tutorial: per-sample gradients of
    each layer's (W, b) from ``torch.func.vmap(torch.func.grad(ℓ))``, formed in full ([block, P]
    at a time), then squared and summed. Runs on θ's device.
    """
    th0 = as_tensor(theta).detach()
    dev = th0.device
    Xt, yt = as_tensor(X, th0.dtype).to(dev), as_tensor(y, torch.int64).to(dev)
    K, N = th0.shape[0], Xt.shape[0]
    act = ACT[mlp.activation]
    n_layers = len(mlp.widths) - 1

    def loss_one(params: tuple[torch.Tensor, ...], x: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        h = x
        for l in range(n_layers):
            h = torch.nn.functional.linear(h, params[2 * l], params[2 * l + 1])
            if l < n_layers - 1:
                h = act(h)
        return losses(mlp, h[None, None], yy[None])[0]

    per_sample = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))
    sq = torch.empty(K, N, dtype=th0.dtype, device=dev)
    grad = torch.zeros_like(th0) if want_grad else None
    for k in range(K):
        params = tuple(p[0] for Wb in unflatten(mlp, th0[k:k + 1]) for p in Wb)   # W_1, b_1, W_2, …
        for r0 in range(0, N, block):
            gs = per_sample(params, Xt[r0:r0 + block], yt[r0:r0 + block])      # per layer [b, n_l(, n_l-1)]
            sq[k, r0:r0 + gs[0].shape[0]] = sum(torch.linalg.vector_norm(g.flatten(1), dim=1, dtype=torch.float64) ** 2
                                                for g in gs).to(th0.dtype)
            if grad is not None:
                grad[k] += torch.cat([g.sum(0).flatten() for g in gs]) / N
    return sq, grad
