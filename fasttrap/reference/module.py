"""The ops for a model on the torch path (a :class:`fasttrap.TorchModel`, wrapping any ``torch.nn.Module``, or
another :class:`fasttrap.model.base.TorchPathModel`), via torch.func.

Same names and signatures as the MLP ops (without ``backend``): value_and_grad, hvp, grad_G, evaluate,
per_sample_grad_sq. The K parameter rows are mapped with ``torch.func.vmap`` over
``functional_call`` where the module allows it, else looped (``vmap`` fails on some operators; the
loop gives the same numbers). Hessian-vector products are forward-over-reverse (``jvp`` of
``grad``), falling back to reverse-over-reverse where an operator has no forward-mode rule.
Everything runs on θ's device and in θ's dtype; NumPy or torch in, torch out.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch

from ..model.base import TorchPathModel
from .common import as_tensor


def _losses(model: TorchPathModel, Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean loss of outputs Z [B, C] against labels y [B] (one model)."""
    if model.loss == "nll":
        return torch.nn.functional.cross_entropy(Z, y)
    o = torch.sigmoid(Z) if model.output == "sigmoid" else Z
    target = (y[:, None] == torch.arange(Z.shape[1], device=Z.device)).to(Z.dtype)
    return ((o - target) ** 2).mean()


def _loss_fn(model: TorchPathModel) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def L(th: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _losses(model, model.forward(th, X), y)
    return L


def _prep(model: TorchPathModel, theta: Any, X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """θ, X shaped [B, *input_shape] or [K, B, *input_shape], y, and whether the batch is per model
    (y [K, B]) or shared (y [B])."""
    th = as_tensor(theta).detach()
    yt = as_tensor(y, torch.int64).to(th.device)
    per = yt.ndim == 2
    Xt = model.shape_inputs(as_tensor(X, th.dtype).to(th.device), 2 if per else 1)
    return th, Xt, yt, per


def _map(fn: Callable[..., Any], th: torch.Tensor, X: torch.Tensor, y: torch.Tensor, per: bool, *extra: torch.Tensor) -> Any:
    """fn(θ_k, X_k, y_k, *extra_k) for every model k: vmap where it works, else a loop."""
    dims = (0, 0 if per else None, 0 if per else None) + (0,) * len(extra)
    try:
        return torch.func.vmap(fn, in_dims=dims)(th, X, y, *extra)
    except (RuntimeError, NotImplementedError, ValueError):
        outs = [fn(th[k], X[k] if per else X, y[k] if per else y, *(e[k] for e in extra)) for k in range(th.shape[0])]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(z) for z in zip(*outs))
        return torch.stack(outs)


def value_and_grad(model: TorchPathModel, theta: Any, X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """L [K], ∇L [K, P] for θ [K, P], X [B, …] or [K, B, …], y [B] or [K, B]."""
    th, Xt, yt, per = _prep(model, theta, X, y)
    f = torch.func.grad_and_value(_loss_fn(model))
    g, L = _map(f, th, Xt, yt, per)
    return L.detach(), g.detach()


def _hvp_one(model: TorchPathModel) -> Callable[..., torch.Tensor]:
    g = torch.func.grad(_loss_fn(model))

    def fwd(t: torch.Tensor, X: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(lambda u: g(u, X, y), (t,), (v,))[1]

    def rev(t: torch.Tensor, X: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.func.grad(lambda u: (g(u, X, y) * v).sum())(t)

    def hv(t: torch.Tensor, X: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        try:
            return fwd(t, X, y, v)
        except (RuntimeError, NotImplementedError):     # an operator without a forward-mode rule
            return rev(t, X, y, v)
    return hv


def hvp(model: TorchPathModel, theta: Any, X: Any, y: Any, v: Any) -> torch.Tensor:
    """H v [K, P] for a direction v [K, P] (forward-over-reverse)."""
    th, Xt, yt, per = _prep(model, theta, X, y)
    vt = as_tensor(v, th.dtype).to(th.device)
    return _map(_hvp_one(model), th, Xt, yt, per, vt).detach()


def grad_G(model: TorchPathModel, theta: Any, X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L [K], G = ½‖∇L‖² [K] and ∇G = H∇L [K, P]."""
    L, g = value_and_grad(model, theta, X, y)
    th, Xt, yt, per = _prep(model, theta, X, y)
    dG = _map(_hvp_one(model), th, Xt, yt, per, g.to(th.dtype))
    return L, 0.5 * (g * g).sum(1), dG.detach()


def evaluate(model: TorchPathModel, theta: Any, X: Any, y: Any, want_grad: bool = False, block: int = 1024
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mean loss [K], accuracy [K] and (optionally) ∇L [K, P] over all N rows of X [N, …], y [N]."""
    th = as_tensor(theta).detach()
    Xt = model.shape_inputs(as_tensor(X, th.dtype).to(th.device), 1)
    yt = as_tensor(y, torch.int64).to(th.device)
    N, K = Xt.shape[0], th.shape[0]
    loss = torch.zeros(K, dtype=torch.float64, device=th.device)
    hits = torch.zeros(K, dtype=torch.int64, device=th.device)
    grad = torch.zeros_like(th) if want_grad else None

    def one(t: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        Z = model.forward(t, xb)
        return _losses(model, Z, yb), (Z.argmax(-1) == yb).sum()

    for r0 in range(0, N, block):
        xb, yb = Xt[r0:r0 + block], yt[r0:r0 + block]
        w = xb.shape[0] / N
        Lb, hb = _map(one, th, xb, yb, False)
        loss += Lb.detach().to(torch.float64) * w
        hits += hb
        if grad is not None:
            gb, _ = _map(torch.func.grad_and_value(_loss_fn(model)), th, xb, yb, False)
            grad += gb.detach() * w
    return loss.to(th.dtype), (hits.to(torch.float64) / N).to(th.dtype), grad


_COMPILED: "weakref.WeakKeyDictionary[TorchPathModel, Callable[..., Any]]" = weakref.WeakKeyDictionary()


def _per_sample_fn(model: TorchPathModel) -> Callable[..., Any]:
    """vmap(grad) over the rows of a block for one parameter row: [b, P]; torch.compile'd once per
    model when ``model.compile`` (measured on the small conv net: 1.45× on 2 CPU cores, 3.4× on an
    H100, after a compile of 18–22 s: benchmarks/bench_module.py)."""
    L = _loss_fn(model)
    f = torch.func.vmap(torch.func.grad(lambda t, x, yy: L(t, x[None], yy[None])), in_dims=(None, 0, 0))
    if not model.compile:
        return f
    if model not in _COMPILED:
        _COMPILED[model] = torch.compile(f, dynamic=False)
    return _COMPILED[model]


def per_sample_grad_sq(model: TorchPathModel, theta: Any, X: Any, y: Any, want_grad: bool = False, block: int = 1024
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """‖∇ℓ_α‖² [K, N] of every sample's own loss, from ``vmap(grad)`` over the samples in blocks of at most
    ``block`` rows (memory block × P per model), and optionally ∇L [K, P]."""
    th = as_tensor(theta).detach()
    Xt = model.shape_inputs(as_tensor(X, th.dtype).to(th.device), 1)
    yt = as_tensor(y, torch.int64).to(th.device)
    K, N = th.shape[0], Xt.shape[0]
    per_sample = _per_sample_fn(model)
    sq = torch.empty(K, N, dtype=th.dtype, device=th.device)
    grad = torch.zeros_like(th) if want_grad else None
    # On the CPU the [b, P] per-sample gradients are cheapest while they stay in cache: blocks of about
    # 2^22 values (measured, MLP 784-100-100-10 on 4,096 rows: 64 rows 3.1 s, 1,024 rows 6.9 s); the GPU
    # wants them large. Either way the result does not depend on the block.
    step = block if th.device.type == "cuda" else min(block, max(8, (1 << 22) // th.shape[1]))
    for k in range(K):
        for r0 in range(0, N, step):
            gs = per_sample(th[k], Xt[r0:r0 + step], yt[r0:r0 + step])         # [b, P]
            sq[k, r0:r0 + gs.shape[0]] = torch.linalg.vector_norm(gs, dim=1, dtype=torch.float64).square().to(th.dtype)
            if grad is not None:
                grad[k] += gs.sum(0) / N
    return sq, grad
