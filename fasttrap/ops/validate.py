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

from ..model.mlp import MLP

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


def check_mlp(mlp: Any) -> MLP:
    if not isinstance(mlp, MLP):
        raise TypeError(f"mlp: expected a fasttrap.MLP, got {type(mlp).__name__}")
    return mlp


def check_model(model: Any) -> Any:
    """A fasttrap.MLP or a fasttrap.TorchModel (the analyses that run on the torch path for modules)."""
    from ..model.torchmodel import TorchModel

    if not isinstance(model, (MLP, TorchModel)):
        raise TypeError(f"mlp: expected a fasttrap.MLP or a fasttrap.TorchModel, got {type(model).__name__}")
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


def check_theta(mlp: MLP, theta: Any, name: str = "theta") -> np.ndarray:
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


def check_labels(mlp: MLP, y: Any, shape: tuple[int, ...], name: str = "y") -> np.ndarray:
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


def check_batch(mlp: MLP, X: Any, y: Any, K: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
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


def check_direction(mlp: MLP, v: Any, K: int, dtype: np.dtype, name: str = "v") -> np.ndarray:
    a = check_float_array(v, name, dtype)
    if a.shape != (K, mlp.n_params):
        raise ValueError(f"{name}: expected shape [K, P] = [{K}, {mlp.n_params}], got {list(a.shape)}")
    check_finite(a, name)
    return a


def check_bool(x: Any, name: str) -> bool:
    if not isinstance(x, bool):
        raise TypeError(f"{name}: expected a bool, got {type(x).__name__}")
    return x


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


def check_inputs(mlp: MLP, X: Any, dtype: np.dtype, name: str = "X") -> np.ndarray:
    """Inputs alone: X [N, n0] finite, in ``dtype``, N >= 1.

    For a :class:`fasttrap.TorchModel`: X [N, *input_shape] or flat rows [N, prod(input_shape)]
    (any trailing shape when the model has no input_shape); the model learns its number of outputs
    from the first row if it does not know it yet.
    """
    Xa = check_float_array(X, name, dtype)
    if not isinstance(mlp, MLP):
        if Xa.ndim < 2 or Xa.shape[0] < 1:
            raise ValueError(f"{name}: expected [N, ...] inputs with N >= 1, got {list(Xa.shape)}")
        try:
            mlp.shape_inputs(Xa[:1], 1)
        except ValueError as exc:
            raise ValueError(f"{name}: {str(exc).split(': ', 1)[-1]}") from None
        check_finite(Xa, name)
        mlp.probe(Xa[:1])
        return Xa
    if Xa.ndim != 2 or Xa.shape[1] != mlp.n_in or Xa.shape[0] < 1:
        raise ValueError(f"{name}: expected shape [N, {mlp.n_in}] with N >= 1, got {list(Xa.shape)}")
    check_finite(Xa, name)
    return Xa


def check_dataset(mlp: MLP, X: Any, y: Any, dtype: np.dtype, name: str = "X") -> tuple[np.ndarray, np.ndarray]:
    """A whole data set: X [N, n0] finite, in ``dtype``; y [N] labels in [0, n_out)."""
    Xa = check_inputs(mlp, X, dtype, name)
    yname = "y" if name == "X" else name.replace("X", "y")
    return Xa, check_labels(mlp, y, (Xa.shape[0],), yname)
