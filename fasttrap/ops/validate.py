"""Argument checks that run before any compiled call.

Every failure raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong shape, range or
value) and names the argument. Arrays that are valid but not C-contiguous are **copied**, never
rejected; X and v are converted to θ's dtype (float32 or float64). NaN or ±inf in θ, X or v is
an error.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..model.base import is_model

BACKENDS = ("auto", "cpu", "cuda", "torch")
_INT32_MAX = 2**31 - 1


def _torch() -> Any:
    return sys.modules.get("torch")


def is_torch(x: Any) -> bool:
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


def is_device_array(x: Any) -> bool:
    """A CUDA array: a torch CUDA tensor or anything with ``__cuda_array_interface__``."""
    if is_torch(x):
        return x.device.type == "cuda"
    return hasattr(x, "__cuda_array_interface__")


def as_numpy(x: Any, name: str) -> np.ndarray:
    """A NumPy view (or copy) of a NumPy array, a CPU torch tensor, or a nested list."""
    if isinstance(x, np.ndarray):
        return x
    if is_torch(x):
        if x.device.type != "cpu":
            raise TypeError(f"{name}: is on {x.device}; the CPU backends take CPU arrays "
                            "(use backend='cuda' or 'auto' for device arrays)")
        return x.detach().resolve_conj().resolve_neg().numpy()
    if is_device_array(x):
        raise TypeError(f"{name}: is a device array; use backend='cuda' or 'auto'")
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{name}: expected a NumPy array or a torch.Tensor, got {type(x).__name__}")


def check_backend(backend: Any) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    return backend


def check_mlp(mlp: Any) -> Any:
    """A model the compiled core runs (``model.compiled``: a fasttrap.MLP), for the ops that have no torch path."""
    if not is_model(mlp) or not mlp.compiled:
        raise TypeError(f"mlp: expected a fasttrap.MLP, got {type(mlp).__name__}")
    return mlp


def check_model(model: Any) -> Any:
    """Any model (:class:`fasttrap.model.base.Model`: a fasttrap.MLP, a fasttrap.TorchModel, or another type)."""
    if not is_model(model):
        raise TypeError(f"mlp: expected a fasttrap.MLP or a fasttrap.TorchModel (a fasttrap.model.base.Model), got "
                        f"{type(model).__name__}")
    return model


def check_finite(a: np.ndarray, name: str) -> None:
    """Raise ValueError naming ``name`` if ``a`` holds a NaN or an infinity."""
    # A finite sum proves every element finite (NaN and ±inf propagate); it needs no temporary.
    # Only when the sum is not finite (bad values, or overflow of huge ones) look element-wise.
    with np.errstate(over="ignore", invalid="ignore"):
        if a.size == 0 or np.isfinite(a.sum()):
            return
    if not np.isfinite(a).all():
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s)")


def check_theta(mlp: Any, theta: Any, name: str = "theta") -> np.ndarray:
    """θ [K, P] as a C-contiguous float32/float64 array (a 1-D [P] row is not accepted)."""
    a = as_numpy(theta, name)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name}: expected shape [K, P] = [K, {mlp.n_params}], got {list(a.shape)}"
                         + (" (use theta[None, :] for one model)" if a.ndim == 1 else ""))
    if a.shape[1] != mlp.n_params:
        raise ValueError(f"{name}: expected P = {mlp.n_params} columns for {mlp!r}, got {a.shape[1]}")
    if a.shape[0] < 1:
        raise ValueError(f"{name}: needs at least one model (K >= 1)")
    a = np.ascontiguousarray(a)
    check_finite(a, name)
    return a


def check_float_array(x: Any, name: str, dtype: np.dtype) -> np.ndarray:
    a = as_numpy(x, name)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {a.dtype}"
                        + (" (normalise pixels first, e.g. with fasttrap.model.data.load)"
                           if np.issubdtype(a.dtype, np.integer) else ""))
    a = np.ascontiguousarray(a, dtype=dtype)
    return a


def check_labels(mlp: Any, y: Any, shape: tuple[int, ...], name: str = "y") -> np.ndarray:
    a = as_numpy(y, name)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name}: expected integer class labels, got dtype {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {list(shape)}, got {list(a.shape)}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.size and (a.min() < 0 or a.max() >= mlp.n_out):
        raise ValueError(f"{name}: labels must lie in [0, {mlp.n_out}), got range "
                         f"[{int(a.min())}, {int(a.max())}]")
    return a


def check_batch(mlp: Any, X: Any, y: Any, K: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """X [B, n0] with y [B] (shared by all K models) or X [K, B, n0] with y [K, B]."""
    Xa = check_float_array(X, "X", dtype)
    n0 = mlp.n_in
    if Xa.ndim == 2:
        if Xa.shape[1] != n0:
            raise ValueError(f"X: expected shape [B, {n0}], got {list(Xa.shape)}")
        yshape: tuple[int, ...] = (Xa.shape[0],)
    elif Xa.ndim == 3:
        if Xa.shape[0] != K or Xa.shape[2] != n0:
            raise ValueError(f"X: a per-model batch must have shape [K, B, n0] = [{K}, B, {n0}], "
                             f"got {list(Xa.shape)}")
        yshape = (Xa.shape[0], Xa.shape[1])
    else:
        raise ValueError(f"X: expected [B, {n0}] or [K, B, {n0}], got {Xa.ndim} dimension(s)")
    B = Xa.shape[-2]
    if B < 1:
        raise ValueError("X: the batch is empty (B = 0)")
    if B * max(mlp.widths) * 8 > _INT32_MAX:
        raise ValueError(f"X: batch of {B} rows is too large for one call; split it")
    check_finite(Xa, "X")
    ya = check_labels(mlp, y, yshape)
    return Xa, ya


def check_direction(mlp: Any, v: Any, K: int, dtype: np.dtype, name: str = "v") -> np.ndarray:
    a = check_float_array(v, name, dtype)
    if a.shape != (K, mlp.n_params):
        raise ValueError(f"{name}: expected shape [K, P] = [{K}, {mlp.n_params}], got {list(a.shape)}")
    check_finite(a, name)
    return a


def check_bool(x: Any, name: str) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(x).__name__}")
    return bool(x)


def check_int(x: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(x).__name__}")
    x = int(x)
    if lo is not None and x < lo:
        raise ValueError(f"{name}: must be >= {lo}, got {x}")
    if hi is not None and x > hi:
        raise ValueError(f"{name}: must be <= {hi}, got {x}")
    return x


def check_float(x: Any, name: str, lo: float | None = None, positive: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(x).__name__}")
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"{name}: must be finite, got {x}")
    if positive and x <= 0:
        raise ValueError(f"{name}: must be > 0, got {x}")
    if lo is not None and x < lo:
        raise ValueError(f"{name}: must be >= {lo}, got {x}")
    return x


def check_inputs(mlp: Any, X: Any, dtype: np.dtype, name: str = "X") -> np.ndarray:
    """Inputs alone: X [N, …] finite, in ``dtype``, N >= 1, of a trailing shape the model takes.

    An MLP takes flat rows [N, n0]; a :class:`fasttrap.TorchModel` X [N, *input_shape] or flat rows
    [N, prod(input_shape)] (any trailing shape when the model has no input_shape). A model that does not
    know its number of outputs yet learns it from the first row (``model.probe``).
    """
    Xa = check_float_array(X, name, dtype)
    if Xa.ndim < 2 or Xa.shape[0] < 1:
        raise ValueError(f"{name}: expected shape [N, {mlp.n_in if mlp.n_in is not None else '…'}] with N >= 1, got "
                         f"{list(Xa.shape)}")
    try:
        mlp.check_inputs(Xa, 1)
    except ValueError as exc:
        raise ValueError(f"{name}: {str(exc).split(': ', 1)[-1]}") from None
    check_finite(Xa, name)
    mlp.probe(Xa[:1])
    return Xa


def check_torch_call(model: Any, theta: Any, X: Any, y: Any, directions: tuple[Any, ...], *, dataset: bool,
                     to_cuda: bool) -> tuple[Any, Any, Any, tuple[Any, ...]]:
    """The arguments of an op on the torch path, as torch tensors: (θ [K, P], X, y, directions).

    Args:
        model: a model with ``compiled`` False (it has ``check``, ``check_inputs``, ``probe``).
        theta: θ [K, P], NumPy or torch, float32 or float64, finite.
        X: [B, …] (shared batch, or the data set of a dataset op) or [K, B, …] (a batch per model).
        y: [B] or [K, B] integer labels in [0, n_out).
        directions: arrays [K, P] (``v`` of ``hvp``), moved to θ's device and dtype.
        dataset: a dataset op (X [N, …], y [N] only).
        to_cuda: move θ to the GPU (``backend="cuda"``, or ``auto`` with NumPy θ where torch sees one).

    Raises:
        TypeError: a dtype that is not float32/float64 (θ) or integer (y).
        ValueError: a shape, a non-finite value or a label out of range, naming the argument.
    """
    import torch

    model.check()                                  # e.g. module.train() may have been called since wrapping
    th = theta if is_torch(theta) else torch.from_numpy(np.ascontiguousarray(np.asarray(theta)))
    if th.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"theta: dtype must be float32 or float64, got {th.dtype}")
    if th.ndim != 2 or th.shape[1] != model.n_params or th.shape[0] < 1:
        raise ValueError(f"theta: expected shape [K, {model.n_params}] (K >= 1, P = the {model.noun}'s "
                         f"parameters), got {list(th.shape)}")
    if not bool(torch.isfinite(th).all()):
        raise ValueError("theta: contains NaN or Inf")
    if to_cuda:
        th = th.to("cuda")
    yt = y if is_torch(y) else torch.from_numpy(np.asarray(y))
    if yt.dtype.is_floating_point or yt.dtype == torch.bool:
        raise TypeError(f"y: expected integer labels, got {yt.dtype}")
    per = yt.ndim == 2 and not dataset
    if yt.ndim != (2 if per else 1) or (per and yt.shape[0] != th.shape[0]):
        raise ValueError(f"y: expected [B] (shared) or [K, B] with K = {th.shape[0]}, got {list(yt.shape)}")
    Xt = X if is_torch(X) else torch.from_numpy(np.ascontiguousarray(np.asarray(X)))
    lead = 2 if per else 1
    if Xt.ndim < lead or tuple(Xt.shape[:lead]) != tuple(yt.shape) or yt.numel() == 0:
        raise ValueError(f"X: expected {'[K, B, …]' if per else '[B, …]'} with the same leading dimensions as y "
                         f"{list(yt.shape)} (and B >= 1), got {list(Xt.shape)}")
    model.check_inputs(Xt[(0,) * lead][None], 1)                   # the input shape, checked on one row
    n_out = model.probe(Xt.reshape(-1, *Xt.shape[lead:])[:2].to(th.device, th.dtype), th[0])
    if int(yt.min()) < 0 or int(yt.max()) >= n_out:
        raise ValueError(f"y: labels must lie in [0, {n_out}) (the {model.noun} has {n_out} "
                         f"outputs), got [{int(yt.min())}, {int(yt.max())}]; does its output match the number of "
                         "classes?")
    if Xt.dtype.is_floating_point and not bool(torch.isfinite(Xt).all()):
        raise ValueError("X: contains NaN or Inf")
    dirs = []
    for v in directions:
        vt = v if is_torch(v) else torch.from_numpy(np.ascontiguousarray(np.asarray(v)))
        if tuple(vt.shape) != tuple(th.shape):
            raise ValueError(f"v: expected shape {list(th.shape)}, got {list(vt.shape)}")
        dirs.append(vt.to(th.device, th.dtype))
    return th, Xt, yt, tuple(dirs)


def check_dataset(mlp: Any, X: Any, y: Any, dtype: np.dtype, name: str = "X") -> tuple[np.ndarray, np.ndarray]:
    """A whole data set: X [N, n0] finite, in ``dtype``; y [N] labels in [0, n_out)."""
    Xa = check_inputs(mlp, X, dtype, name)
    yname = "y" if name == "X" else name.replace("X", "y")
    return Xa, check_labels(mlp, y, (Xa.shape[0],), yname)
