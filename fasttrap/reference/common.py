"""What every twin shares: the flat layout as torch views, the forward pass, the losses."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..model.mlp import MLP

ACT = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": lambda z: z,
}


def as_tensor(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """x (NumPy array, list or tensor) as a torch tensor, optionally cast to ``dtype``."""
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
            h = ACT[mlp.activation](h)
    return h


def losses(mlp: MLP, Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-model loss [K] of outputs Z [K, B, C] against labels y [B] or [K, B]."""
    K, B, C = Z.shape
    yy = y.expand(K, B) if y.ndim == 1 else y
    if mlp.loss == "nll":
        l = torch.nn.functional.cross_entropy(Z.reshape(K * B, C), yy.reshape(K * B), reduction="none")
        return l.reshape(K, B).mean(1)
    o = torch.sigmoid(Z) if mlp.output == "sigmoid" else Z
    target = (yy[..., None] == torch.arange(C, device=Z.device)).to(Z.dtype)   # one-hot; vmap-safe
    return ((o - target) ** 2).mean(dim=(1, 2))


