"""The CUDA backend: the compiled functions on the GPU, behind the same public API.

Inputs may be NumPy arrays (copied to the device and back), torch CUDA tensors, or CuPy arrays (via
DLPack, zero-copy). Work runs on the caller's current stream (torch's, or CuPy's for CuPy inputs)
and the results come back in the caller's kind of array. The core never links libtorch: it gets
raw device addresses and the stream; memory for outputs is allocated here through torch.

TF32: ``set_tf32(True)`` lets cuBLAS use the tensor cores' TF32 mode for float32 GEMMs (about 3e-4
relative error per product; see benchmarks/README.md for its measured effect on ∇G). Off by default.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any

import numpy as np

from . import _loader
from .validate import check_mlp
from ..model.mlp import MLP

_tf32 = False
_use_graph = True
_cublas_ready = False


def set_tf32(on: bool) -> None:
    """Allow TF32 tensor-core math for float32 GEMMs on the GPU (default off)."""
    global _tf32
    if not isinstance(on, bool):
        raise TypeError(f"on: expected a bool, got {type(on).__name__}")
    _tf32 = on


def get_tf32() -> bool:
    return _tf32


def set_graphs(on: bool) -> None:
    """Use CUDA graphs (default on; off is for debugging and profiling): the inner-descent step
    is captured once and replayed, and value_and_grad / hvp / grad_G of modest size replay a
    cached graph per problem shape."""
    global _use_graph
    _use_graph = bool(on)
    if _loader.core is not None and hasattr(_loader.core, "cuda_set_graph_calls"):
        _loader.core.cuda_set_graph_calls(_use_graph)


def _cublas_candidates() -> list[str]:
    out = []
    env = os.environ.get("FASTTRAP_CUBLAS")
    if env:
        out.append(env)
    for base in sys.path:
        for pat in ("nvidia/cublas/lib/libcublas.so*", "nvidia/cu13/lib/libcublas.so*", "nvidia/cu12/lib/libcublas.so*",
                    "torch/lib/libcublas.so*"):
            out += sorted(glob.glob(os.path.join(base, pat)), reverse=True)
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            out += sorted(glob.glob(os.path.join(root, "lib64", "libcublas.so*")), reverse=True)
    return [p for p in out if not p.endswith(".a")]


def _ensure_cublas() -> None:
    """Point the core's dlopen at a cuBLAS it can use (pip's nvidia-cublas wheel, torch's, CUDA_HOME)."""
    global _cublas_ready
    if _cublas_ready:
        return
    core = _loader.core
    for p in reversed(_cublas_candidates()):
        core.cuda_cublas_hint(p)
    try:
        import torch  # noqa: F401  (torch's CUDA libraries, if any, are then already mapped)
    except ImportError:  # pragma: no cover
        pass
    core.cuda_load_cublas()
    _cublas_ready = True


# ---------------------------------------------------------------------------- arrays ----------
def _kind(x: Any) -> str:
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        return "torch"
    if mod == "cupy":
        return "cupy"
    return "numpy"


def _device() -> Any:
    import torch

    return torch.device("cuda", torch.cuda.current_device())


def _to_torch(x: Any, name: str, dtype: Any, device: Any) -> Any:
    """A contiguous torch CUDA tensor of the given dtype holding x (zero-copy where possible)."""
    import torch

    k = _kind(x)
    if k == "torch":
        t = x.detach()
    elif k == "cupy":
        t = torch.utils.dlpack.from_dlpack(x)
    else:
        a = np.asarray(x)
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.is_floating_point() != dtype.is_floating_point:
        raise TypeError(f"{name}: expected a {'floating-point' if dtype.is_floating_point else 'integer'} array, got {t.dtype}")
    t = t.to(device=device, dtype=dtype, non_blocking=False)
    return t.contiguous()


def _stream_for(*xs: Any) -> int:
    import torch

    for x in xs:
        if _kind(x) == "cupy":
            import cupy

            return int(cupy.cuda.get_current_stream().ptr)
    return int(torch.cuda.current_stream().cuda_stream)


def _back(like: Any, t: Any) -> Any:
    """Result in the caller's kind of array."""
    k = _kind(like)
    if k == "torch":
        return t if like.is_cuda else t.cpu()
    if k == "cupy":
        import cupy

        return cupy.from_dlpack(t)
    return t.cpu().numpy()


def _float_dtype(theta: Any) -> Any:
    import torch

    dt = getattr(theta, "dtype", None)
    name = str(dt).replace("torch.", "")
    if name in ("float32", "float64"):
        return torch.float32 if name == "float32" else torch.float64
    raise TypeError(f"theta: expected dtype float32 or float64, got {dt}")




def _prepare(mlp: MLP, theta: Any, X: Any, y: Any, v: Any = None) -> tuple:
    import torch

    check_mlp(mlp)
    if mlp.depth > 16:
        raise ValueError(f"mlp: the CUDA backend supports at most 16 layers, got {mlp.depth}")
    dtype = _float_dtype(theta)
    dev = _device()
    th = _to_torch(theta, "theta", dtype, dev)
    if th.ndim != 2 or th.shape[1] != mlp.n_params or th.shape[0] < 1:
        raise ValueError(f"theta: expected shape [K, {mlp.n_params}], got {list(th.shape)}")
    K = th.shape[0]
    Xt = _to_torch(X, "X", dtype, dev)
    if Xt.ndim == 2 and Xt.shape[1] == mlp.n_in:
        per_model, B, yshape = False, Xt.shape[0], (Xt.shape[0],)
    elif Xt.ndim == 3 and Xt.shape[0] == K and Xt.shape[2] == mlp.n_in:
        per_model, B, yshape = True, Xt.shape[1], (K, Xt.shape[1])
    else:
        raise ValueError(f"X: expected [B, {mlp.n_in}] or [{K}, B, {mlp.n_in}], got {list(Xt.shape)}")
    if B < 1:
        raise ValueError("X: the batch is empty (B = 0)")
    yt = _to_torch(y, "y", torch.int64, dev)
    if tuple(yt.shape) != yshape:
        raise ValueError(f"y: expected shape {list(yshape)}, got {list(yt.shape)}")
    vt = None
    if v is not None:
        vt = _to_torch(v, "v", dtype, dev)
        if tuple(vt.shape) != tuple(th.shape):
            raise ValueError(f"v: expected shape {list(th.shape)}, got {list(vt.shape)}")
    # Every value check on the device, with one synchronisation for all of them.
    checks = [torch.isfinite(th).all(), torch.isfinite(Xt).all(), (yt >= 0).all() & (yt < mlp.n_out).all()]
    if vt is not None:
        checks.append(torch.isfinite(vt).all())
    ok = torch.stack(checks).tolist()
    for good, msg in zip(ok, ["theta: contains NaN or infinite values", "X: contains NaN or infinite values",
                              f"y: labels must lie in [0, {mlp.n_out})", "v: contains NaN or infinite values"]):
        if not good:
            raise ValueError(msg)
    _ensure_cublas()
    return th, Xt, yt, vt, K, B, per_model, (0 if dtype == torch.float32 else 1)


# ---------------------------------------------------------------------------- functions -------
def _net(mlp: MLP) -> dict[str, Any]:
    """The layout codes of the network, as the keyword arguments every ``cuda_*`` net op takes first."""
    widths, act, loss, out_act = mlp.codes
    return {"widths": widths, "act": act, "loss": loss, "out_act": out_act}


def value_and_grad(mlp: MLP, theta: Any, X: Any, y: Any) -> tuple[Any, Any]:
    """See :func:`fasttrap.value_and_grad`."""
    import torch

    th, Xt, yt, _, K, B, per, dc = _prepare(mlp, theta, X, y)
    L = torch.empty(K, dtype=th.dtype, device=th.device)
    g = torch.empty_like(th)
    _loader.core.cuda_value_and_grad(**_net(mlp), dtype=dc, K=K, B=B, per_model=per, theta=th.data_ptr(),
                                     X=Xt.data_ptr(), y=yt.data_ptr(), L=L.data_ptr(), g=g.data_ptr(),
                                     stream=_stream_for(theta, X), tf32=_tf32)
    return _back(theta, L), _back(theta, g)


def hvp(mlp: MLP, theta: Any, X: Any, y: Any, v: Any) -> Any:
    """See :func:`fasttrap.hvp`."""
    import torch

    th, Xt, yt, vt, K, B, per, dc = _prepare(mlp, theta, X, y, v)
    Hv = torch.empty_like(th)
    _loader.core.cuda_hvp(**_net(mlp), dtype=dc, K=K, B=B, per_model=per, theta=th.data_ptr(), X=Xt.data_ptr(),
                          y=yt.data_ptr(), v=vt.data_ptr(), Hv=Hv.data_ptr(), stream=_stream_for(theta, X, v),
                          tf32=_tf32)
    return _back(theta, Hv)


def grad_G(mlp: MLP, theta: Any, X: Any, y: Any) -> tuple[Any, Any, Any]:
    """See :func:`fasttrap.grad_G`."""
    import torch

    th, Xt, yt, _, K, B, per, dc = _prepare(mlp, theta, X, y)
    L = torch.empty(K, dtype=th.dtype, device=th.device)
    G = torch.empty_like(L)
    dG = torch.empty_like(th)
    _loader.core.cuda_grad_G(**_net(mlp), dtype=dc, K=K, B=B, per_model=per, theta=th.data_ptr(), X=Xt.data_ptr(),
                             y=yt.data_ptr(), L=L.data_ptr(), G=G.data_ptr(), dG=dG.data_ptr(),
                             stream=_stream_for(theta, X), tf32=_tf32)
    return _back(theta, L), _back(theta, G), _back(theta, dG)


def evaluate(mlp: MLP, theta: Any, X: Any, y: Any, want_grad: bool = False, block: int = 1024) -> tuple:
    """See :func:`fasttrap.evaluate`."""
    import torch

    th, Xt, yt, _, K, N, per, dc = _prepare(mlp, theta, X, y)
    if per:
        raise ValueError(f"X: expected shape [N, {mlp.n_in}] for evaluate")
    loss = torch.empty(K, dtype=th.dtype, device=th.device)
    acc = torch.empty_like(loss)
    grad = torch.empty_like(th) if want_grad else None
    _loader.core.cuda_evaluate(**_net(mlp), dtype=dc, K=K, N=N, block=int(block), theta=th.data_ptr(),
                               X=Xt.data_ptr(), y=yt.data_ptr(), L=loss.data_ptr(), acc=acc.data_ptr(),
                               grad=grad.data_ptr() if grad is not None else 0, stream=_stream_for(theta, X),
                               tf32=_tf32)
    return _back(theta, loss), _back(theta, acc), (_back(theta, grad) if grad is not None else None)


def descent_loop(mlp: MLP, theta0: np.ndarray, X: np.ndarray, y: np.ndarray, lr: np.ndarray, *, progress: np.ndarray,
                  batch_size: int, steps: int, shared: bool, streams: np.ndarray, drop_last: bool, full_batch: bool,
                  eval_block: int, G_tol: float, growth: float, record_every: int,
                  snap_steps: np.ndarray = np.zeros(0, np.int64)) -> dict[str, np.ndarray]:
    """The core's inner descent on the GPU; arguments and result as :func:`fasttrap.reference.descent_loop`.

    Called through :func:`fasttrap.ops._dispatch.descent_loop` by :func:`fasttrap.inner_descent` (which validates everything first) from its worker
    thread; the host arrays are copied to the device and the results back.
    """
    import torch

    dtype = torch.float32 if theta0.dtype == np.float32 else torch.float64
    dev = _device()
    _ensure_cublas()
    K, P = theta0.shape
    th0 = torch.from_numpy(theta0).to(dev)
    Xt = torch.from_numpy(np.ascontiguousarray(X)).to(dev, dtype)
    yt = torch.from_numpy(np.ascontiguousarray(y)).to(dev, torch.int64)
    lrt = torch.from_numpy(np.ascontiguousarray(lr)).to(dev, dtype)
    n_rec = max(1, -(-steps // record_every))
    theta = torch.empty_like(th0)
    status = torch.zeros(K, dtype=torch.int8, device=dev)
    steps_done = torch.zeros(K, dtype=torch.int64, device=dev)
    G_first = torch.empty(K, dtype=torch.float64, device=dev)
    G_last = torch.empty_like(G_first)
    trace = torch.full((K, n_rec), float("nan"), dtype=dtype, device=dev)
    snap_steps = np.ascontiguousarray(snap_steps, dtype=np.int64).reshape(-1)
    snaps = torch.empty((snap_steps.size, K, P), dtype=dtype, device=dev)
    stream = int(torch.cuda.current_stream().cuda_stream)
    _loader.core.cuda_descent_loop(
        **_net(mlp), dtype=0 if dtype == torch.float32 else 1, K=K, theta0=th0.data_ptr(), theta=theta.data_ptr(),
        X=Xt.data_ptr(), y=yt.data_ptr(), N=X.shape[0], lr=lrt.data_ptr(), B=batch_size, steps=steps, shared=shared,
        streams=np.ascontiguousarray(streams, dtype=np.uint64), drop_last=drop_last, full_batch=full_batch,
        eval_block=eval_block, G_tol=G_tol, growth=growth, record_every=record_every, n_rec=n_rec,
        status=status.data_ptr(), steps_done=steps_done.data_ptr(), G_first=G_first.data_ptr(),
        G_last=G_last.data_ptr(), G_trace=trace.data_ptr(), progress=progress, snap_steps=snap_steps,
        snaps=snaps.data_ptr() if snap_steps.size else 0, stream=stream, tf32=_tf32, use_graph=_use_graph)
    torch.cuda.current_stream().synchronize()
    return {"theta": theta.cpu().numpy(), "status": status.cpu().numpy(), "steps_done": steps_done.cpu().numpy(),
            "G_first": G_first.cpu().numpy(), "G_last": G_last.cpu().numpy(), "G_trace": trace.cpu().numpy(),
            "snaps": snaps.cpu().numpy()}
