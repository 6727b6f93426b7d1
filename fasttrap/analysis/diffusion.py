"""Gradient noise: how far the per-sample gradients scatter around the full gradient.

For a data set of M samples with L = (1/M) Σ_α ℓ_α,

    D = (1/M) Σ_α ‖∇ℓ_α − ∇L‖²  =  mean_α ‖∇ℓ_α‖² − ‖∇L‖².

The first form needs every per-sample gradient (M × P numbers); the second needs only their
squared norms, which the compiled core gets without forming them
(:func:`fasttrap.per_sample_grad_sq`), and ∇L from the same pass. D is the trace of the
per-sample gradient covariance: the SGD noise of batch size B has covariance of trace D/B (up to
the finite-population factor (M − B)/(M − 1)), so D(t) along training says how strongly the
minibatch noise drives the weights at time t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import ops
from ..ops.validate import check_model
from ..model.mlp import MLP


@dataclass
class GradientNoise:
    """D and its two terms, per model (float64).

    Attributes:
        D: [K] mean_α ‖∇ℓ_α − ∇L‖².
        mean_sq: [K] mean_α ‖∇ℓ_α‖².
        grad_sq: [K] ‖∇L‖².
    """

    D: np.ndarray
    mean_sq: np.ndarray
    grad_sq: np.ndarray


def gradient_noise(mlp: MLP, theta: Any, X: Any, y: Any, block: int = 1024, *,
                   backend: str = "auto") -> GradientNoise:
    """The gradient noise D = mean_α ‖∇ℓ_α‖² − ‖∇L‖² of K models over a data set.

    Both terms come from one pass of :func:`fasttrap.per_sample_grad_sq` and are summed in
    float64. The subtraction loses digits only when D ≪ mean_sq (a coherent gradient): the
    relative error of D is then about ε · mean_sq / D, with ε the precision of θ's dtype, so the
    result also reports ``mean_sq`` and ``grad_sq`` for the reader to judge.

    Args:
        mlp: the network spec.
        theta: θ [K, P] (NumPy or torch).
        X: [M, n0] the data set (e.g. all training rows).
        y: [M] labels.
        block: rows per block of the pass.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.

    Returns:
        :class:`GradientNoise` with NumPy float64 arrays.
    """
    check_model(mlp)
    sq, g = ops.per_sample_grad_sq(mlp, theta, X, y, True, block, backend=backend)
    sq = _np64(sq)
    g = _np64(g)
    mean_sq = sq.mean(axis=1)
    grad_sq = np.einsum("kp,kp->k", g, g)
    return GradientNoise(D=mean_sq - grad_sq, mean_sq=mean_sq, grad_sq=grad_sq)


def _np64(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)
