"""The pure-torch twins of the compiled functions: the specification, and the fallback.

Each function has the same name and signature as its compiled counterpart in
:mod:`fasttrap.kernels` (without ``backend``). They take NumPy arrays or torch tensors and return
torch tensors. Derivatives come from autograd: ∇L by backward, Hv and ∇G = H∇L by double
backward (reverse-over-reverse). All K models are evaluated together with batched matmuls; the
models' losses are summed before differentiating, which is exact because the models do not
share parameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .mlp import MLP

_ACT = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": lambda z: z,
}


def _t(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def unflatten(mlp: MLP, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Views (W_l [K, n_l, n_{l-1}], b_l [K, n_l]) of θ [K, P], layer by layer."""
    K = theta.shape[0]
    out = []
    for l, (ow, ob, oe) in enumerate(mlp.layer_offsets(), start=1):
        W = theta[:, ow:ob].reshape(K, mlp.widths[l], mlp.widths[l - 1])
        b = theta[:, ob:oe]
        out.append((W, b))
    return out


def outputs(mlp: MLP, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Z_L [K, B, C] for X [B, n0] (shared) or [K, B, n0] (per model)."""
    h = X
    layers = unflatten(mlp, theta)
    for l, (W, b) in enumerate(layers, start=1):
        h = torch.matmul(h, W.transpose(1, 2)) + b[:, None, :]
        if l < len(layers):
            h = _ACT[mlp.activation](h)
    return h


def losses(mlp: MLP, Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-model loss [K] of outputs Z [K, B, C] against labels y [B] or [K, B]."""
    K, B, C = Z.shape
    yy = y.expand(K, B) if y.ndim == 1 else y
    if mlp.loss == "nll":
        l = torch.nn.functional.cross_entropy(Z.reshape(K * B, C), yy.reshape(K * B), reduction="none")
        return l.reshape(K, B).mean(1)
    o = torch.sigmoid(Z) if mlp.output == "sigmoid" else Z
    target = torch.nn.functional.one_hot(yy, C).to(Z.dtype)
    return ((o - target) ** 2).mean(dim=(1, 2))


def _prep(mlp: MLP, theta: Any, X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    th = _t(theta)
    return th.detach().clone().requires_grad_(True), _t(X, th.dtype), _t(y, torch.int64)


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
    vt = _t(v, th.dtype)
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


def evaluate(mlp: MLP, theta: Any, X: Any, y: Any, want_grad: bool = False, block: int = 1024
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mean loss [K], accuracy [K] and (optionally) ∇L [K, P] over all N rows of X [N, n0], y [N]."""
    th0 = _t(theta)
    Xt, yt = _t(X, th0.dtype), _t(y, torch.int64)
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
