"""Twins of :mod:`fasttrap.ops.spectra`: input_jacobian, jacobian_gram (pure torch, torch.func).

Same names and signatures as the ops (without ``backend``); NumPy or torch in, torch out, on θ's
device. The Jacobian is the textbook one, ``torch.func.vmap(torch.func.jacrev(f))`` over the samples
for each model: reverse mode, one vector-Jacobian product per output class.
"""

from __future__ import annotations

from typing import Any

import torch

from ..model.mlp import MLP
from .common import ACT, as_tensor, unflatten


def _net_fn(mlp: MLP, theta_k: torch.Tensor) -> Any:
    """f(x) = Z_L [C] of one model (θ_k [1, P]) for one sample x [n0]."""
    layers = [(W[0], b[0]) for W, b in unflatten(mlp, theta_k)]
    act = ACT[mlp.activation]

    def f(x: torch.Tensor) -> torch.Tensor:
        h = x
        for l, (W, b) in enumerate(layers, start=1):
            h = torch.nn.functional.linear(h, W, b)
            if l < len(layers):
                h = act(h)
        return h

    return f


def input_jacobian(mlp: MLP, theta: Any, X: Any) -> torch.Tensor:
    """J [K, N, C, n0]: ∂f(x_i)/∂x_i of the outputs f = Z_L of every model, for every row of X [N, n0]."""
    th = as_tensor(theta).detach()
    Xt = as_tensor(X, th.dtype).to(th.device)
    out = []
    for k in range(th.shape[0]):
        f = _net_fn(mlp, th[k:k + 1])
        out.append(torch.func.vmap(torch.func.jacrev(f))(Xt))
    return torch.stack(out)


def jacobian_gram(mlp: MLP, theta: Any, X: Any, block: int = 256) -> torch.Tensor:
    """𝒥ᵀ𝒥 [K, C·n0, C·n0] of the stacked Jacobian 𝒥 [N, C·n0] (row i = vec J(x_i)), in blocks of rows."""
    th = as_tensor(theta).detach()
    Xt = as_tensor(X, th.dtype).to(th.device)
    K, kd = th.shape[0], mlp.n_out * mlp.n_in
    G = torch.zeros(K, kd, kd, dtype=th.dtype, device=th.device)
    for r0 in range(0, Xt.shape[0], block):
        J = input_jacobian(mlp, th, Xt[r0:r0 + block]).reshape(K, -1, kd)
        G += J.transpose(1, 2) @ J
    return G
