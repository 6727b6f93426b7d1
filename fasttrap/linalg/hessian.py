"""The full-batch Hessian of the mean loss over a data set, as a batched operator on the compiled HVP.

With L = (1/N) Σ_α ℓ_α, H = Σ_b (N_b/N) H_b over blocks b of rows, so a product H v over all N rows
is a sum of compiled HVP calls on blocks (bounding memory), in float64. One call serves all K
models: ``matvec(V)`` with V [K, P] returns H_k V_k for every k.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import ops
from ..model.mlp import MLP


def full_batch_hvp(mlp: MLP, theta: np.ndarray, X: np.ndarray, y: np.ndarray, block: int = 8192,
                   backend: str = "auto", counter: list[int] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The operator V [K, P] → H V [K, P] (float64) of the full-batch Hessian at θ [K, P] on X [N, n0], y [N].

    Args:
        mlp: the network.
        theta: [K, P] float64 (or float32: products in float32, summed over the blocks in float64),
            validated by the caller.
        X: [N, n0] in θ's dtype; y: [N] labels.
        block: rows per compiled call.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.
        counter: if given, counter[0] is increased by K for every product (HVPs per model).
    """
    N = X.shape[0]
    blocks = [(a, min(N, a + block)) for a in range(0, N, block)]

    def matvec(V: np.ndarray) -> np.ndarray:
        out = np.zeros(theta.shape)             # the blocks add up in float64 whatever the products' dtype
        for a, b in blocks:
            out += np.asarray(ops.hvp(mlp, theta, X[a:b], y[a:b], V, backend=backend), dtype=np.float64) * ((b - a) / N)
        if counter is not None:
            counter[0] += theta.shape[0]
        return out

    return matvec


def full_batch_gradient(mlp: MLP, theta: np.ndarray, X: np.ndarray, y: np.ndarray, block: int = 8192,
                        backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(loss [K], ∇L [K, P]) of the mean loss over all N rows, float64."""
    loss, _, g = ops.evaluate(mlp, theta, X, y, True, block, backend=backend)
    return np.asarray(loss, dtype=np.float64), np.asarray(g, dtype=np.float64)


def as_float64(x: Any) -> np.ndarray:
    """A C-contiguous float64 copy (or view) of an array."""
    return np.ascontiguousarray(np.asarray(x, dtype=np.float64))


def lambda_max(mlp: MLP, theta: np.ndarray, X: np.ndarray, y: np.ndarray, steps: int = 20, seed: int = 0,
               block: int = 8192, backend: str = "auto") -> np.ndarray:
    """λ_max(H) [K] of the mean loss over (X, y) at each row of θ [K, P], by ``steps`` Lanczos steps
    on the batched compiled HVP (the largest Ritz value converges first; a few dozen products give
    it to a few digits, which is all a step-size rule needs). Works in θ's dtype."""
    from .lanczos import lanczos, ritz

    th = np.ascontiguousarray(theta)
    Xd = np.ascontiguousarray(X, dtype=th.dtype)
    H = full_batch_hvp(mlp, th, Xd, y, block, backend)
    v0 = np.random.default_rng([seed, 11]).standard_normal(th.shape)
    lz = lanczos(lambda V: H(V.astype(th.dtype)), v0, min(steps, th.shape[1]))
    return np.array([ritz(lz, k)[0][-1] for k in range(th.shape[0])])
