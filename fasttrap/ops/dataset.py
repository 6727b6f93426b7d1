"""Dataset ops: passes over all N rows of a data set, in blocks, for K models.

Each function has a twin of the same name and signature in :mod:`fasttrap.reference.dataset` (without
``backend``) and a kernel of the same name in the compiled core; validation, routing and conversion
happen once, in :mod:`fasttrap.ops._dispatch`. Every op also takes a :class:`fasttrap.TorchModel`
(any ``torch.nn.Module``) in place of the MLP; it runs on the torch.func path
(:mod:`fasttrap.reference.module`), and ``backend="cpu"`` is refused for it.

Shapes: θ [K, P]; X [N, n0]; y [N].

See Also: :mod:`fasttrap.ops.grad` (one minibatch).
"""

from __future__ import annotations

from typing import Any

from . import _dispatch
from ..model.mlp import MLP


def evaluate(mlp: MLP, theta: Any, X: Any, y: Any, want_grad: bool = False, block: int = 1024,
             *, backend: str = "auto") -> tuple[Any, Any, Any]:
    """Mean loss, accuracy and (optionally) the full-data gradient over a whole data set.

    Args:
        mlp: the network spec.
        theta: θ [K, P].
        X: [N, n0], all rows (processed in blocks of ``block``).
        y: [N].
        want_grad: also return ∇L [K, P] of the mean loss over all N rows.
        block: rows per block.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.

    Returns:
        ``(loss [K], accuracy [K], ∇L [K, P] or None)``. G on the data set is ½‖∇L‖².
    """
    return _dispatch.dataset_op("evaluate", mlp, theta, X, y, want_grad, block, backend=backend)


def per_sample_grad_sq(mlp: MLP, theta: Any, X: Any, y: Any, want_grad: bool = False, block: int = 1024,
                       *, backend: str = "auto") -> tuple[Any, Any]:
    """Squared gradient norm of every sample's own loss, without forming per-sample gradients.

    With L = (1/N) Σ_α ℓ_α, this returns ‖∇ℓ_α‖² for every α. For a dense layer the per-sample
    gradient is an outer product, so ‖∂ℓ_α/∂W‖² + ‖∂ℓ_α/∂b‖² = (‖a_α‖² + 1)‖e_α‖²: the cost is one
    forward and one backward pass, against forming N × P numbers for ``vmap(grad)``. The gradient
    noise of the data set is then D = mean_α ‖∇ℓ_α‖² − ‖∇L‖² (:func:`fasttrap.analysis.diffusion.gradient_noise`).

    There is no fused CUDA kernel for this yet: with CUDA inputs, or ``backend="cuda"``, the torch
    twin (``torch.func.vmap(grad)``) runs on the device.

    Args:
        mlp: the network spec.
        theta: θ [K, P].
        X: [N, n0], all rows (processed in blocks of ``block``).
        y: [N] integer labels.
        want_grad: also return ∇L [K, P] of the mean loss (from the same pass).
        block: rows per block.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.

    Returns:
        ``(sq [K, N], ∇L [K, P] or None)`` in θ's dtype.
    """
    return _dispatch.dataset_op("per_sample_grad_sq", mlp, theta, X, y, want_grad, block, backend=backend)
