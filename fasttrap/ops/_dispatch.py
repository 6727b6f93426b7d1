"""The one dispatch point of the compiled ops: validate, route to cpu / cuda / torch, convert back.

Every public op in :mod:`fasttrap.ops` is a thin function that names itself and hands its arguments
here. The op's name is also the name of

* its kernel in the compiled core (``fasttrap._core.<name>``),
* its CUDA wrapper in :mod:`fasttrap.ops.cuda` (optional: an op without one runs its torch twin on
  the device),
* its pure-torch twin in :mod:`fasttrap.reference` (the specification and the fallback),

so adding an op means writing its kernel, one binding line and its twin, plus a public function of
three lines that calls :func:`batch_op` or :func:`dataset_op`. Validation, routing and conversion of
arrays happen only here (pattern 2 and 3 of shared/STYLE.md).

Families (they differ in what they validate and in the core's trailing arguments):

* **batch ops** — ``(mlp, θ [K, P], X [B, n0] | [K, B, n0], y [B] | [K, B], *directions [K, P])``;
  core: ``core.<name>(*codes, θ, X, y, *directions, threads, chunk)``.
* **dataset ops** — ``(mlp, θ [K, P], X [N, n0], y [N], want_grad, block)``, a pass over a whole
  data set in blocks of rows; core: ``core.<name>(*codes, θ, X, y, block, want_grad, threads)``.
* **input ops** — ``(mlp, θ [K, P], X [N, n0], *ints)``, functions of the inputs alone (no labels),
  such as the input→output Jacobian; core: ``core.<name>(*codes, θ, X, *ints, threads)``.
* **a model on the torch path** (``model.compiled`` False: a :class:`fasttrap.TorchModel`, any
  ``torch.nn.Module``, or another :class:`fasttrap.model.base.TorchPathModel`) in a batch or dataset
  op: validated by :func:`fasttrap.ops.validate.check_torch_call` and run by the torch.func
  implementation in :mod:`fasttrap.reference.module` (:func:`module_op`); ``backend="cpu"`` (the
  compiled MLP core) is refused. Nothing here tests a model's class: it asks ``model.compiled``.
* **the descent loop** — the inner descent with all its steps inside the core
  (:func:`descent_loop`); the driver (:mod:`fasttrap.dynamics.inner`) validates its settings.

Outputs follow θ: NumPy in, NumPy out; torch in, torch out (same device); CuPy in, CuPy out.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _loader, backend as _backend
from .validate import (check_batch, check_bool, check_dataset, check_direction, check_inputs, check_int, check_mlp,
                       check_model, check_theta, check_torch_call, is_device_array, is_torch)


def route(backend: str, *arrays: Any) -> str:
    """The backend that runs a call (``cpu``, ``cuda`` or ``torch``) for inputs ``arrays``.

    ``auto`` with device arrays but no usable CUDA backend raises :class:`BackendUnavailable`.
    """
    be = _backend.resolve(backend)
    if be != "cuda" and backend == "auto" and any(is_device_array(a) for a in arrays):
        raise _backend.BackendUnavailable("inputs are CUDA arrays but the CUDA backend is not available: "
                                          + ("no device" if _backend.built_with_cuda() else "core built without CUDA"))
    return be


def convert(like: Any, x: Any) -> Any:
    """One result (NumPy array, torch tensor or None) in the kind of array ``like`` is."""
    if x is None:
        return None
    if is_torch(x):
        x = x.detach()
        if is_torch(like):
            return x.to(like.device)
        return x.cpu().numpy()
    if is_torch(like):
        import torch

        return torch.from_numpy(np.asarray(x)).to(like.device)
    return x


def _convert_all(like: Any, res: Any) -> Any:
    if isinstance(res, tuple):
        return tuple(convert(like, r) for r in res)
    return convert(like, res)


def _twin(name: str) -> Callable[..., Any]:
    from .. import reference

    return getattr(reference, name)


def _cuda(name: str) -> Callable[..., Any] | None:
    from . import cuda

    return getattr(cuda, name, None)


def _twin_on_device(name: str, **arrays: Any) -> None:
    # The twin takes torch tensors; CuPy arrays would be copied to the host silently otherwise.
    for label, a in arrays.items():
        if is_device_array(a) and not is_torch(a):
            raise TypeError(f"{label}: {name} takes torch CUDA tensors on the device (its CUDA path is the torch "
                            "twin); wrap CuPy arrays with torch.as_tensor")


def batch_op(name: str, mlp: Any, theta: Any, X: Any, y: Any, *directions: Any, backend: str = "auto") -> Any:
    """Run batch op ``name`` on K models with one minibatch (shared or per model).

    Args:
        name: the op (``value_and_grad``, ``hvp``, ``grad_G`` …).
        mlp: the network spec.
        theta: θ [K, P].
        X: [B, n0] (shared batch) or [K, B, n0] (a batch per model).
        y: [B] or [K, B] integer labels.
        *directions: arrays [K, P] the op also takes (``v`` of ``hvp``).
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.
    """
    if not check_model(mlp).compiled:
        return module_op(name, mlp, theta, X, y, *directions, backend=backend)
    be = route(backend, theta, X, y, *directions)
    if be == "cuda" and any(is_device_array(a) for a in (theta, X, y, *directions)):
        fn = _cuda(name)
        if fn is None:
            _twin_on_device(name, theta=theta, X=X, y=y, **{f"v{i or ''}": v for i, v in enumerate(directions)})
            return _convert_all(theta, _twin(name)(mlp, theta, X, y, *directions))
        return fn(mlp, theta, X, y, *directions)
    th = check_theta(mlp, theta)
    Xa, ya = check_batch(mlp, X, y, th.shape[0], th.dtype)
    vs = [check_direction(mlp, v, th.shape[0], th.dtype, name="v" if len(directions) == 1 else f"v{i}")
          for i, v in enumerate(directions)]
    if be == "cuda" and _cuda(name) is not None:
        res = _cuda(name)(mlp, th, Xa, ya, *vs)
    elif be in ("cuda", "torch"):
        res = _twin_on(be, name, mlp, th, Xa, ya, *vs)
    else:
        res = getattr(_loader.core, name)(*mlp.codes, th, Xa, ya, *vs, _backend.get_num_threads(), _backend.get_chunk())
    return _convert_all(theta, res)


def dataset_op(name: str, mlp: Any, theta: Any, X: Any, y: Any, want_grad: Any, block: Any,
               backend: str = "auto") -> Any:
    """Run dataset op ``name``: a pass over all N rows of X [N, n0], y [N], in blocks of ``block`` rows.

    Args:
        name: the op (``evaluate``, ``per_sample_grad_sq`` …).
        mlp: the network spec.
        theta: θ [K, P].
        X: [N, n0].
        y: [N].
        want_grad: also return ∇L [K, P] of the mean loss.
        block: rows per block.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.
    """
    check_model(mlp)
    want_grad = check_bool(want_grad, "want_grad")
    block = check_int(block, "block", lo=1, hi=1 << 20)
    if not mlp.compiled:
        return module_op(name, mlp, theta, X, y, want_grad, block, backend=backend, dataset=True)
    be = route(backend, theta, X, y)
    if be == "cuda" and any(is_device_array(a) for a in (theta, X, y)):
        fn = _cuda(name)
        if fn is None:
            _twin_on_device(name, theta=theta, X=X, y=y)
            return _convert_all(theta, _twin(name)(mlp, theta, X, y, want_grad, block))
        return fn(mlp, theta, X, y, want_grad, block)
    th = check_theta(mlp, theta)
    Xa, ya = check_dataset(mlp, X, y, th.dtype)
    if be == "cuda" and _cuda(name) is not None:
        res = _cuda(name)(mlp, th, Xa, ya, want_grad, block)
    elif be in ("cuda", "torch"):
        res = _twin_on(be, name, mlp, th, Xa, ya, want_grad, block)
    else:
        res = getattr(_loader.core, name)(*mlp.codes, th, Xa, ya, block, want_grad, _backend.get_num_threads())
    return _convert_all(theta, res)


def input_op(name: str, mlp: Any, theta: Any, X: Any, *ints: tuple[str, Any, int, int], backend: str = "auto") -> Any:
    """Run input op ``name`` on K models and all N rows of X [N, n0] (no labels).

    Args:
        name: the op (``input_jacobian``, ``jacobian_gram``).
        mlp: the network spec.
        theta: θ [K, P].
        X: [N, n0].
        *ints: integer settings the op takes after X, each ``(name, value, lo, hi)`` (checked here).
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.
    """
    check_mlp(mlp)
    vals = [check_int(v, label, lo=lo, hi=hi) for label, v, lo, hi in ints]
    be = route(backend, theta, X)
    if be == "cuda" and any(is_device_array(a) for a in (theta, X)):
        fn = _cuda(name)
        if fn is None:
            _twin_on_device(name, theta=theta, X=X)
            return _convert_all(theta, _twin(name)(mlp, theta, X, *vals))
        return fn(mlp, theta, X, *vals)
    th = check_theta(mlp, theta)
    Xa = check_inputs(mlp, X, th.dtype)
    if be == "cuda" and _cuda(name) is not None:
        res = _cuda(name)(mlp, th, Xa, *vals)
    elif be in ("cuda", "torch"):
        res = _twin_on(be, name, mlp, th, Xa, *vals)
    else:
        res = getattr(_loader.core, name)(*mlp.codes, th, Xa, *vals, _backend.get_num_threads())
    return _convert_all(theta, res)


def module_op(name: str, model: Any, theta: Any, X: Any, y: Any, *rest: Any, backend: str = "auto",
              dataset: bool = False) -> Any:
    """Op ``name`` for a model on the torch path (``model.compiled`` False): checks, then torch.func on θ's device.

    Args:
        name: the op (``value_and_grad``, ``hvp``, ``grad_G``, ``evaluate``, ``per_sample_grad_sq``).
        model: the model (a :class:`fasttrap.TorchModel`, or another torch-path model).
        theta: θ [K, P] (NumPy or torch; float32 or float64).
        X: [B, *input_shape] or [B, n_in] (shared batch, or a data set for the dataset ops), or
            [K, B, …] (a batch per model, batch ops only); y: [B] or [K, B] integer labels.
        *rest: directions [K, P] (``hvp``), or (want_grad, block) (dataset ops).
        backend: ``auto`` (a torch θ: its device; a NumPy θ: the GPU where torch sees one, else the
            CPU), ``torch`` (θ's device: the CPU for NumPy), or ``cuda`` (θ moved to the GPU); not ``cpu``.
    """
    from ..reference import module as impl

    be = resolve_module_backend(backend)           # refuses 'cpu', unknown names and 'cuda' without a GPU
    # torch tensors stay where they are under 'auto'; NumPy θ goes to the GPU where torch sees one, as
    # 'auto' routes an MLP's NumPy arrays to the CUDA core (the results come back as NumPy either way)
    to_cuda = backend == "cuda" or (backend == "auto" and be == "cuda" and not is_torch(theta))
    directions = () if dataset else rest
    th, Xt, yt, dirs = check_torch_call(model, theta, X, y, directions, dataset=dataset, to_cuda=to_cuda)
    return _convert_all(theta, getattr(impl, name)(model, th, Xt, yt, *(rest if dataset else dirs)))


def _twin_on(be: str, name: str, mlp: Any, th: np.ndarray, *args: Any) -> Any:
    """The torch twin on the host (``torch``) or on the device (``cuda`` for an op with no kernel there)."""
    if be == "cuda":
        import torch

        th = torch.from_numpy(th).to("cuda")
    return _twin(name)(mlp, th, *args)


def resolve_for(model: Any, backend: str) -> str:
    """The backend that runs ``model``'s work for the drivers (descents, certificates, aging).

    A compiled model (an MLP): :func:`fasttrap.ops.backend.resolve` (``cpu``, ``cuda`` or ``torch``).
    A model on the torch path (a TorchModel): ``auto`` → ``cuda`` (torch on the GPU) where torch sees
    one, else ``torch``; ``cpu`` (the compiled MLP core) is refused.
    """
    if check_model(model).compiled:
        return _backend.resolve(backend)
    return resolve_module_backend(backend)


def resolve_module_backend(backend: str) -> str:
    """``torch`` or ``cuda``: where a TorchModel's work runs for ``backend`` (see :func:`resolve_for`)."""
    if backend == "cpu":
        raise ValueError("backend: 'cpu' is the compiled core, which runs fasttrap.MLP only; a TorchModel runs on "
                         "the torch path: use backend='auto' or 'torch' (or 'cuda' on a GPU)")
    if backend not in ("auto", "torch", "cuda"):
        raise ValueError(f"backend: expected 'auto', 'torch' or 'cuda' for a TorchModel, got {backend!r}")
    import torch

    if backend == "cuda" and not torch.cuda.is_available():
        raise _backend.BackendUnavailable("backend 'cuda': torch sees no CUDA device")
    if backend == "auto":
        return "cuda" if torch.cuda.is_available() else "torch"
    return backend


def descent_loop(mlp: Any, theta0: np.ndarray, X: np.ndarray, y: np.ndarray, lr: np.ndarray, *,
                 progress: np.ndarray, backend: str, **settings: Any) -> dict[str, np.ndarray]:
    """The inner-descent loop on the resolved backend ``backend`` (``cpu``, ``cuda`` or ``torch``).

    Arguments as :func:`fasttrap.reference.descent_loop`; the caller
    (:func:`fasttrap.inner_descent`) has validated them all and resolved the backend. A model on the
    torch path runs the twin's loop on its torch.func ops, on the GPU for ``cuda`` (θ, X and y moved
    there once).
    """
    if not mlp.compiled and backend == "cuda":
        import torch

        theta0, X, y = (torch.as_tensor(a).to("cuda") for a in (theta0, X, y))
    if backend == "torch" or not mlp.compiled:
        return _twin("descent_loop")(mlp, theta0, X, y, lr, progress=progress, **settings)
    if backend == "cuda":
        return _cuda("descent_loop")(mlp, theta0, X, y, lr, progress=progress, **settings)
    settings.setdefault("snap_steps", np.zeros(0, np.int64))     # no checkpoints
    return _loader.core.descent_loop(*mlp.codes, theta0, X, y, lr, progress=progress,
                                     threads=_backend.get_num_threads(), chunk=_backend.get_chunk(), **settings)
