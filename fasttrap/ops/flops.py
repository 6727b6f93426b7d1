"""Counting the arithmetic of one step, for honest GFLOP/s figures.

Only matrix products are counted (2·m·n·k per GEMM); the elementwise work is a few percent and is
left out of both counts alike.
"""

from __future__ import annotations

from ..model.mlp import MLP


def _gemm(m: int, n: int, k: int) -> int:
    return 2 * m * n * k


def uses_gram(mlp: MLP, B: int, sharing: int) -> bool:
    """The core's cost model for the layer-1 Gram trick (csrc/cpu/cpu_engine.h, use_gram)."""
    n0, n1 = mlp.widths[0], mlp.widths[1]
    direct = 2.0 * B * n0 * n1
    gram = B * B * n0 / max(sharing, 1) + B * B * n1
    return gram < direct


def textbook_grad_G(mlp: MLP, B: int) -> int:
    """FLOPs of one model-step of ∇G = H∇L by generic forward + backward + R-operator.

    Layer 1 takes 4 GEMMs (forward, g_W, A_0 V_1, (Hv)_W — R{A_0} = 0 and no E_0),
    every other layer 9 (forward, g_W, E_{l-1}, two for R{Z}, two for R{E_{l-1}}, two for (Hv)_W).
    For 784-100-100-10 at B = 128 this is 105.6 MFLOP.
    """
    w = mlp.widths
    total = 4 * _gemm(B, w[1], w[0])
    for l in range(2, len(w)):
        total += 9 * _gemm(B, w[l], w[l - 1])
    return total


def fused_grad_G(mlp: MLP, B: int, K: int, shared: bool = True) -> float:
    """FLOPs per model-step that fasttrap's fused grad_G actually performs.

    With the Gram trick (when the cost model picks it), layer 1 costs the forward GEMM, the (Hv)_W
    GEMM, (X Xᵀ) E_1, and X Xᵀ itself shared by the K models of a common batch.
    """
    w = mlp.widths
    gram = uses_gram(mlp, B, K if shared else 1)
    if gram:
        total = 2 * _gemm(B, w[1], w[0]) + _gemm(B, w[1], B) + _gemm(B, B, w[0]) / (K if shared else 1)
    else:
        total = 4 * _gemm(B, w[1], w[0])
    for l in range(2, len(w)):
        total += 9 * _gemm(B, w[l], w[l - 1])
    return float(total)
