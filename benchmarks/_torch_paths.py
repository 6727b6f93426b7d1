"""The torch.func ways of computing ∇G = H∇L for K models, shared by the CPU and GPU suites."""

from __future__ import annotations

from typing import Any, Callable

import torch

from fasttrap import reference

_compiled: dict[tuple, Any] = {}


def func_grad_G(mlp: Any, kind: str, compiled: bool) -> Callable:
    """vmap over models of jvp(grad) ("fwdrev", forward-over-reverse) or of grad(½‖grad‖²)
    ("revrev", reverse-over-reverse); torch.compile'd (once per mlp and kind) when asked."""
    from torch.func import grad, jvp, vmap

    def loss1(t, X, y):
        return reference.losses(mlp, reference.outputs(mlp, t[None], X), y)[0]

    g1 = grad(loss1)

    def fwdrev(t, X, y):
        return jvp(lambda u: g1(u, X, y), (t,), (g1(t, X, y),))[1]

    def revrev(t, X, y):
        return grad(lambda u: 0.5 * (g1(u, X, y) ** 2).sum())(t)

    f = vmap(fwdrev if kind == "fwdrev" else revrev, in_dims=(0, None, None))
    if compiled:
        key = (mlp, kind)
        if key not in _compiled:
            _compiled[key] = torch.compile(f, dynamic=False)
        f = _compiled[key]
    return f
