"""Shared by the CPU and GPU grad_G suites: the torch.func ways of computing ∇G = H∇L for K models,
and the per-model agreement check."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from fasttrap import reference

_compiled: dict[tuple, Any] = {}


def func_grad_G(mlp: Any, kind: str, compiled: bool | str) -> Callable:
    """vmap over models of jvp(grad) ("fwdrev", forward-over-reverse) or of grad(½‖grad‖²)
    ("revrev", reverse-over-reverse); torch.compile'd (once per mlp, kind and mode) when asked:
    ``compiled`` True for torch.compile's default mode, or a mode name ("reduce-overhead", which
    replays CUDA graphs as fasttrap does; "max-autotune")."""
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
        mode = compiled if isinstance(compiled, str) else None
        key = (mlp, kind, mode)
        if key not in _compiled:
            _compiled[key] = torch.compile(f, dynamic=False, mode=mode)
        f = _compiled[key]
    return f


def agreement(out, ref):
    """Per-model relative errors against the float64 reference: (overall, median, models > 1e-4).

    ReLU networks have kinks: where a pre-activation lies within float32 rounding of 0 (among the
    23 M of 900 models × 128 rows × 200 units some do; measured: 1.6e-8), φ' differs between any
    float32 computation and float64, so ∇G of that model differs by a finite amount, for the torch
    paths as much as for ours. Agreement is therefore judged per model: the median must be at
    rounding level and at most 1% of models may sit on a kink.
    """
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    per = np.linalg.norm(out - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-300)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref)), float(np.median(per)), int((per > 1e-4).sum())
