"""Input ops: the per-sample input→output Jacobian of K models, and its accumulated Gram matrix.

Each function has a twin of the same name and signature in :mod:`fasttrap.reference.spectra`
(without ``backend``) and a kernel of the same name in the compiled core (``csrc/cpu/cpu_spectra.cpp``);
validation, routing and conversion happen once, in :mod:`fasttrap.ops._dispatch`. There is no CUDA
kernel for these yet: with CUDA inputs, or ``backend="cuda"``, the torch twin runs on the device.

Shapes: θ [K, P]; X [N, n0]; C = ``mlp.n_out`` outputs, so kd = C·n0.

See Also: :func:`fasttrap.jacobian_esd` (the spectrum of 𝒥ᵀ𝒥).
"""

from __future__ import annotations

from typing import Any

from . import _dispatch
from ..model.mlp import MLP


def input_jacobian(mlp: MLP, theta: Any, X: Any, *, backend: str = "auto") -> Any:
    """J_i = ∂f(x_i)/∂x_i of the outputs f = Z_L (the logits, before any output map) for every row.

    For a ReLU MLP J_i = W_L D_{L−1} W_{L−1} ⋯ D_1 W_1 with D_l the activation-derivative mask of
    sample i; the compiled kernel forms it as one GEMM per layer for a block of samples, with no
    backward pass per class.

    Args:
        mlp: the network spec.
        theta: θ [K, P].
        X: [N, n0].
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.

    Returns:
        J [K, N, C, n0] in θ's dtype (K·N·C·n0 numbers: for the whole of a data set use
        :func:`jacobian_gram`, which never holds J).
    """
    return _dispatch.input_op("input_jacobian", mlp, theta, X, backend=backend)


def jacobian_gram(mlp: MLP, theta: Any, X: Any, block: int = 256, *, backend: str = "auto") -> Any:
    """𝒥ᵀ𝒥 = Σ_i vec(J_i) vec(J_i)ᵀ, accumulated over blocks of ``block`` rows (a SYRK per block).

    𝒥 [N, C·n0] stacks the flattened per-sample Jacobians as rows (the layout of the WeightWatcher
    authors' draft); 𝒥ᵀ𝒥 [C·n0, C·n0] has the same non-zero eigenvalues as the N × N Gram 𝒥𝒥ᵀ.

    Args:
        mlp: the network spec.
        theta: θ [K, P].
        X: [N, n0].
        block: rows per block (memory: block·C·n0 numbers of workspace).
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.

    Returns:
        [K, C·n0, C·n0], symmetric, in θ's dtype.
    """
    return _dispatch.input_op("jacobian_gram", mlp, theta, X, ("block", block, 1, 1 << 20), backend=backend)
