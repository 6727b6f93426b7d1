"""Twins of :mod:`fasttrap.ops.grad`: value_and_grad, hvp, grad_G (pure torch, autograd).

Each function has the same name and signature as its op (without ``backend``), takes NumPy arrays
or torch tensors and returns torch tensors. Derivatives come from autograd: ∇L by backward, Hv and
∇G = H∇L by double backward (reverse-over-reverse). All K models are evaluated together with
batched matmuls; the models' losses are summed before differentiating, which is exact because the
models do not share parameters.
"""

from __future__ import annotations

from typing import Any

import torch

from ..model.mlp import MLP
from .common import as_tensor, losses, outputs


def _prep(mlp: MLP, theta: Any, X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    th = as_tensor(theta)
    return th.detach().clone().requires_grad_(True), as_tensor(X, th.dtype), as_tensor(y, torch.int64)


def value_and_grad(mlp: MLP, theta: Any, X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """L [K], ∇L [K, P] for θ [K, P], X [B, n0] or [K, B, n0], y [B] or [K, B]."""
    th, Xt, yt = _prep(mlp, theta, X, y)
    with torch.enable_grad():
        L = losses(mlp, outputs(mlp, th, Xt), yt)
        (g,) = torch.autograd.grad(L.sum(), th)
    return L.detach(), g


def hvp(mlp: MLP, theta: Any, X: Any, y: Any, v: Any) -> torch.Tensor:
    """H v [K, P] for a direction v [K, P] (double backward)."""
    th, Xt, yt = _prep(mlp, theta, X, y)
    vt = as_tensor(v, th.dtype)
    with torch.enable_grad():
        L = losses(mlp, outputs(mlp, th, Xt), yt)
        (g,) = torch.autograd.grad(L.sum(), th, create_graph=True)
        (Hv,) = torch.autograd.grad((g * vt).sum(), th)
    return Hv


def grad_G(mlp: MLP, theta: Any, X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L [K], G = ½‖∇L‖² [K] and ∇G = H∇L [K, P] (double backward)."""
    th, Xt, yt = _prep(mlp, theta, X, y)
    with torch.enable_grad():
        L = losses(mlp, outputs(mlp, th, Xt), yt)
        (g,) = torch.autograd.grad(L.sum(), th, create_graph=True)
        G = 0.5 * (g * g).sum(1)
        (dG,) = torch.autograd.grad(G.sum(), th)
    return L.detach(), G.detach(), dG
