"""Batch ops: loss, gradient, Hessian-vector products and ∇G = H∇L for K models on one minibatch.

Each function has a twin of the same name and signature in :mod:`fasttrap.reference.grad` (without
``backend``) and a kernel of the same name in the compiled core; validation, routing and conversion
happen once, in :mod:`fasttrap.ops._dispatch`. Every op also takes a :class:`fasttrap.TorchModel`
(any ``torch.nn.Module``) in place of the MLP; it runs on the torch.func path
(:mod:`fasttrap.reference.module`), and ``backend="cpu"`` is refused for it.

Shapes: θ [K, P]; X [B, n0] with y [B] (one batch shared by all models) or X [K, B, n0] with
y [K, B] (a batch per model); v [K, P]. Outputs follow θ: NumPy in, NumPy out; torch in, torch out
(same device); CuPy in, CuPy out.

See Also: :mod:`fasttrap.ops.dataset` (passes over a whole data set).
"""

from __future__ import annotations

from typing import Any

from . import _dispatch
from ..model.mlp import MLP


def value_and_grad(mlp: MLP, theta: Any, X: Any, y: Any, *, backend: str = "auto") -> tuple[Any, Any]:
    """Loss and its gradient for K models.

    Args:
        mlp: the network spec.
        theta: θ [K, P], float32 or float64.
        X: [B, n0] (shared batch) or [K, B, n0] (a batch per model).
        y: [B] or [K, B] integer labels in [0, n_out).
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.

    Returns:
        ``(L [K], ∇L [K, P])`` in θ's dtype.
    """
    return _dispatch.batch_op("value_and_grad", mlp, theta, X, y, backend=backend)


def hvp(mlp: MLP, theta: Any, X: Any, y: Any, v: Any, *, backend: str = "auto") -> Any:
    """Hessian-vector product H v of the loss, for any direction v.

    Args:
        mlp: the network spec.
        theta: θ [K, P].
        X: [B, n0] or [K, B, n0].
        y: [B] or [K, B].
        v: direction [K, P] (converted to θ's dtype).
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.

    Returns:
        H v [K, P].
    """
    return _dispatch.batch_op("hvp", mlp, theta, X, y, v, backend=backend)


def grad_G(mlp: MLP, theta: Any, X: Any, y: Any, *, backend: str = "auto") -> tuple[Any, Any, Any]:
    """The fused step: L, G = ½‖∇L‖² and ∇G = H∇L for K models.

    On the compiled backends this is one pass of forward, backward and R-operator, with the
    layer-1 Gram trick where it pays (g_{W_1} is then never formed).

    Args:
        mlp: the network spec.
        theta: θ [K, P].
        X: [B, n0] or [K, B, n0].
        y: [B] or [K, B].
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.

    Returns:
        ``(L [K], G [K], ∇G [K, P])``.
    """
    return _dispatch.batch_op("grad_G", mlp, theta, X, y, backend=backend)
