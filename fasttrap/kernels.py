"""The public compiled functions, batched over K models, with backend dispatch.

Each takes ``backend="auto" | "cpu" | "cuda" | "torch"`` and has a twin of the same name and
signature in :mod:`fasttrap.reference`. Inputs are validated before any compiled call (see
:mod:`fasttrap._validate`). Outputs follow θ: NumPy in, NumPy out; torch in, torch out (same
device).

Shapes: θ [K, P]; X [B, n0] with y [B] (one batch shared by all models) or X [K, B, n0] with
y [K, B] (a batch per model); v [K, P].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _loader, backend as _backend
from ._validate import (_finite, check_batch, check_direction, check_float_array, check_int, check_labels,
                        check_mlp, check_theta, is_device_array, is_torch)
from .mlp import MLP


def _out(like: Any, *arrays: np.ndarray) -> Any:
    if is_torch(like):
        import torch

        res = tuple(torch.from_numpy(np.asarray(a)) for a in arrays)
    else:
        res = arrays
    return res if len(res) > 1 else res[0]


def _from_torch(like: Any, *tensors: Any) -> Any:
    if is_torch(like):
        res = tuple(t.detach() for t in tensors)
    else:
        res = tuple(t.detach().cpu().numpy() for t in tensors)
    return res if len(res) > 1 else res[0]


def _on_device(*arrays: Any) -> bool:
    return any(is_device_array(a) for a in arrays)


def _check_dataset(mlp: MLP, X: Any, y: Any, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """A whole data set: X [N, n0] finite, in θ's dtype; y [N] labels."""
    Xa = check_float_array(X, "X", dtype)
    if Xa.ndim != 2 or Xa.shape[1] != mlp.n_in or Xa.shape[0] < 1:
        raise ValueError(f"X: expected shape [N, {mlp.n_in}] with N >= 1, got {list(Xa.shape)}")
    _finite(Xa, "X")
    return Xa, check_labels(mlp, y, (Xa.shape[0],))


def _dataset_pass_args(mlp: MLP, theta: Any, X: Any, y: Any, want_grad: Any, block: Any, backend: str
                       ) -> tuple[bool, int, str]:
    """The checks shared by the whole-data-set passes (evaluate, per_sample_grad_sq): flags and backend."""
    check_mlp(mlp)
    if not isinstance(want_grad, (bool, np.bool_)):
        raise TypeError(f"want_grad: expected a bool, got {type(want_grad).__name__}")
    return bool(want_grad), check_int(block, "block", lo=1, hi=1 << 20), _route(backend, theta, X, y)


def _route(backend: str, *arrays: Any) -> str:
    be = _backend.resolve(backend)
    if be != "cuda" and any(is_device_array(a) for a in arrays):
        if backend == "auto":
            raise _backend.BackendUnavailable("inputs are CUDA arrays but the CUDA backend is not available: "
                                              + ("no device" if _backend.built_with_cuda() else "core built without CUDA"))
    return be


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
    check_mlp(mlp)
    be = _route(backend, theta, X, y)
    if be == "cuda" and _on_device(theta, X, y):
        from . import cuda as _cuda

        return _cuda.value_and_grad(mlp, theta, X, y)
    th = check_theta(mlp, theta)
    Xa, ya = check_batch(mlp, X, y, th.shape[0], th.dtype)
    if be == "cuda":
        from . import cuda as _cuda

        return _out(theta, *_cuda.value_and_grad(mlp, th, Xa, ya))
    if be == "torch":
        from . import reference

        return _from_torch(theta, *reference.value_and_grad(mlp, th, Xa, ya))
    L, g = _loader.core.value_and_grad(*mlp.codes, th, Xa, ya, _backend.get_num_threads(), _backend.get_chunk())
    return _out(theta, L, g)


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
    check_mlp(mlp)
    be = _route(backend, theta, X, y, v)
    if be == "cuda" and _on_device(theta, X, y, v):
        from . import cuda as _cuda

        return _cuda.hvp(mlp, theta, X, y, v)
    th = check_theta(mlp, theta)
    Xa, ya = check_batch(mlp, X, y, th.shape[0], th.dtype)
    va = check_direction(mlp, v, th.shape[0], th.dtype)
    if be == "cuda":
        from . import cuda as _cuda

        return _out(theta, _cuda.hvp(mlp, th, Xa, ya, va))
    if be == "torch":
        from . import reference

        return _from_torch(theta, reference.hvp(mlp, th, Xa, ya, va))
    Hv = _loader.core.hvp(*mlp.codes, th, Xa, ya, va, _backend.get_num_threads(), _backend.get_chunk())
    return _out(theta, Hv)


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
    check_mlp(mlp)
    be = _route(backend, theta, X, y)
    if be == "cuda" and _on_device(theta, X, y):
        from . import cuda as _cuda

        return _cuda.grad_G(mlp, theta, X, y)
    th = check_theta(mlp, theta)
    Xa, ya = check_batch(mlp, X, y, th.shape[0], th.dtype)
    if be == "cuda":
        from . import cuda as _cuda

        return _out(theta, *_cuda.grad_G(mlp, th, Xa, ya))
    if be == "torch":
        from . import reference

        return _from_torch(theta, *reference.grad_G(mlp, th, Xa, ya))
    L, G, dG = _loader.core.grad_G(*mlp.codes, th, Xa, ya, _backend.get_num_threads(), _backend.get_chunk())
    return _out(theta, L, G, dG)


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
    want_grad, block, be = _dataset_pass_args(mlp, theta, X, y, want_grad, block, backend)
    if be == "cuda" and _on_device(theta, X, y):
        from . import cuda as _cuda

        return _cuda.evaluate(mlp, theta, X, y, want_grad, block)
    th = check_theta(mlp, theta)
    Xa, ya = _check_dataset(mlp, X, y, th.dtype)
    if be == "cuda":
        from . import cuda as _cuda

        loss, acc, grad = _cuda.evaluate(mlp, th, Xa, ya, want_grad, block)
        return _out(theta, loss, acc) + ((_out(theta, grad),) if grad is not None else (None,))
    if be == "torch":
        from . import reference

        loss, acc, grad = reference.evaluate(mlp, th, Xa, ya, want_grad, block)
        res = _from_torch(theta, loss, acc) + ((_from_torch(theta, grad),) if grad is not None else (None,))
        return res
    loss, acc, grad = _loader.core.evaluate(*mlp.codes, th, Xa, ya, block, want_grad, _backend.get_num_threads())
    if grad is None:
        return _out(theta, loss, acc) + (None,)
    return _out(theta, loss, acc, grad)


def per_sample_grad_sq(mlp: MLP, theta: Any, X: Any, y: Any, want_grad: bool = False, block: int = 1024,
                       *, backend: str = "auto") -> tuple[Any, Any]:
    """Squared gradient norm of every sample's own loss, without forming per-sample gradients.

    With L = (1/N) Σ_α ℓ_α, this returns ‖∇ℓ_α‖² for every α. For a dense layer the per-sample
    gradient is an outer product, so ‖∂ℓ_α/∂W‖² + ‖∂ℓ_α/∂b‖² = (‖a_α‖² + 1)‖e_α‖²: the cost is one
    forward and one backward pass, against forming N × P numbers for ``vmap(grad)``. The gradient
    noise of the data set is then D = mean_α ‖∇ℓ_α‖² − ‖∇L‖² (:func:`fasttrap.diffusion.gradient_noise`).

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
    want_grad, block, be = _dataset_pass_args(mlp, theta, X, y, want_grad, block, backend)
    if be == "cuda" and _on_device(theta, X, y):
        from . import reference

        for name, a in (("theta", theta), ("X", X), ("y", y)):
            if is_device_array(a) and not is_torch(a):
                raise TypeError(f"{name}: per_sample_grad_sq takes torch CUDA tensors on the device (its CUDA path is "
                                "the torch twin); wrap CuPy arrays with torch.as_tensor")
        return reference.per_sample_grad_sq(mlp, theta, X, y, want_grad, block)
    th = check_theta(mlp, theta)
    Xa, ya = _check_dataset(mlp, X, y, th.dtype)
    if be in ("cuda", "torch"):
        import torch

        from . import reference

        dev = "cuda" if be == "cuda" else "cpu"
        sq, grad = reference.per_sample_grad_sq(mlp, torch.from_numpy(th).to(dev), Xa, ya, want_grad, block)
        sq = _from_torch(theta, sq.cpu())
        return sq, (None if grad is None else _from_torch(theta, grad.cpu()))
    sq, grad = _loader.core.per_sample_grad_sq(*mlp.codes, th, Xa, ya, block, want_grad,
                                               _backend.get_num_threads())
    return (_out(theta, sq), None) if grad is None else _out(theta, sq, grad)
