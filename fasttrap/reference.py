"""The pure-torch twins of the compiled functions: the specification, and the fallback.

Each function has the same name and signature as its compiled counterpart in
:mod:`fasttrap.kernels` (without ``backend``). They take NumPy arrays or torch tensors and return
torch tensors. Derivatives come from autograd: ∇L by backward, Hv and ∇G = H∇L by double
backward (reverse-over-reverse). All K models are evaluated together with batched matmuls; the
models' losses are summed before differentiating, which is exact because the models do not
share parameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .mlp import MLP

_ACT = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": lambda z: z,
}


def _t(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def unflatten(mlp: MLP, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Views (W_l [K, n_l, n_{l-1}], b_l [K, n_l]) of θ [K, P], layer by layer."""
    K = theta.shape[0]
    out = []
    for l, (ow, ob, oe) in enumerate(mlp.layer_offsets(), start=1):
        W = theta[:, ow:ob].reshape(K, mlp.widths[l], mlp.widths[l - 1])
        b = theta[:, ob:oe]
        out.append((W, b))
    return out


def outputs(mlp: MLP, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Z_L [K, B, C] for X [B, n0] (shared) or [K, B, n0] (per model)."""
    h = X
    layers = unflatten(mlp, theta)
    for l, (W, b) in enumerate(layers, start=1):
        h = torch.matmul(h, W.transpose(1, 2)) + b[:, None, :]
        if l < len(layers):
            h = _ACT[mlp.activation](h)
    return h


def losses(mlp: MLP, Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-model loss [K] of outputs Z [K, B, C] against labels y [B] or [K, B]."""
    K, B, C = Z.shape
    yy = y.expand(K, B) if y.ndim == 1 else y
    if mlp.loss == "nll":
        l = torch.nn.functional.cross_entropy(Z.reshape(K * B, C), yy.reshape(K * B), reduction="none")
        return l.reshape(K, B).mean(1)
    o = torch.sigmoid(Z) if mlp.output == "sigmoid" else Z
    target = (yy[..., None] == torch.arange(C, device=Z.device)).to(Z.dtype)   # one-hot; vmap-safe
    return ((o - target) ** 2).mean(dim=(1, 2))


def _prep(mlp: MLP, theta: Any, X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    th = _t(theta)
    return th.detach().clone().requires_grad_(True), _t(X, th.dtype), _t(y, torch.int64)


def value_and_grad(mlp: MLP, theta: Any, X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """L [K], ∇L [K, P] for θ [K, P], X [B, n0] or [K, B, n0], y [B] or [K, B]."""
    th, Xt, yt = _prep(mlp, theta, X, y)
    with torch.enable_grad():
        L = losses(mlp, outputs(mlp, th, Xt), yt)
        (g,) = torch.autograd.grad(L.sum(), th)
    return L.detach(), g


def hvp(mlp: MLP, theta: Any, X: Any, y: Any, v: Any) -> torch.Tensor:
    """H v [K, P] for a direction v [K, P] (double backward)."""
    th, Xt, yt = _prep(mlp, theta, X, y)
    vt = _t(v, th.dtype)
    with torch.enable_grad():
        L = losses(mlp, outputs(mlp, th, Xt), yt)
        (g,) = torch.autograd.grad(L.sum(), th, create_graph=True)
        (Hv,) = torch.autograd.grad((g * vt).sum(), th)
    return Hv


def grad_G(mlp: MLP, theta: Any, X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L [K], G = ½‖∇L‖² [K] and ∇G = H∇L [K, P] (double backward)."""
    th, Xt, yt = _prep(mlp, theta, X, y)
    with torch.enable_grad():
        L = losses(mlp, outputs(mlp, th, Xt), yt)
        (g,) = torch.autograd.grad(L.sum(), th, create_graph=True)
        G = 0.5 * (g * g).sum(1)
        (dG,) = torch.autograd.grad(G.sum(), th)
    return L.detach(), G.detach(), dG


def evaluate(mlp: MLP, theta: Any, X: Any, y: Any, want_grad: bool = False, block: int = 1024
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mean loss [K], accuracy [K] and (optionally) ∇L [K, P] over all N rows of X [N, n0], y [N]."""
    th0 = _t(theta)
    Xt, yt = _t(X, th0.dtype), _t(y, torch.int64)
    N = Xt.shape[0]
    K = th0.shape[0]
    loss = torch.zeros(K, dtype=torch.float64)
    hits = torch.zeros(K, dtype=torch.int64)
    grad = torch.zeros_like(th0) if want_grad else None
    for r0 in range(0, N, block):
        xb, yb = Xt[r0:r0 + block], yt[r0:r0 + block]
        th = th0.detach().clone().requires_grad_(want_grad)
        with torch.set_grad_enabled(want_grad):
            Z = outputs(mlp, th, xb)
            Lb = losses(mlp, Z, yb) * (xb.shape[0] / N)
            if want_grad:
                (g,) = torch.autograd.grad(Lb.sum(), th)
                grad += g
        loss += Lb.detach().to(torch.float64)
        hits += (Z.detach().argmax(-1) == yb[None, :]).sum(1)
    return loss.to(th0.dtype), (hits.to(torch.float64) / N).to(th0.dtype), grad


def per_sample_grad_sq(mlp: MLP, theta: Any, X: Any, y: Any, want_grad: bool = False, block: int = 1024
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """‖∇ℓ_α‖² [K, N] of every sample's own loss ℓ_α (L = mean_α ℓ_α), and optionally ∇L [K, P].

    The textbook way, as in torch.func's per-sample-gradient tutorial: per-sample gradients of
    each layer's (W, b) from ``torch.func.vmap(torch.func.grad(ℓ))``, formed in full ([block, P]
    at a time), then squared and summed. Runs on θ's device.
    """
    th0 = _t(theta).detach()
    dev = th0.device
    Xt, yt = _t(X, th0.dtype).to(dev), _t(y, torch.int64).to(dev)
    K, N = th0.shape[0], Xt.shape[0]
    act = _ACT[mlp.activation]
    n_layers = len(mlp.widths) - 1

    def loss_one(params: tuple[torch.Tensor, ...], x: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        h = x
        for l in range(n_layers):
            h = torch.nn.functional.linear(h, params[2 * l], params[2 * l + 1])
            if l < n_layers - 1:
                h = act(h)
        return losses(mlp, h[None, None], yy[None])[0]

    per_sample = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))
    sq = torch.empty(K, N, dtype=th0.dtype, device=dev)
    grad = torch.zeros_like(th0) if want_grad else None
    for k in range(K):
        params = tuple(p[0] for Wb in unflatten(mlp, th0[k:k + 1]) for p in Wb)   # W_1, b_1, W_2, …
        for r0 in range(0, N, block):
            gs = per_sample(params, Xt[r0:r0 + block], yt[r0:r0 + block])      # per layer [b, n_l(, n_l-1)]
            sq[k, r0:r0 + gs[0].shape[0]] = sum(torch.linalg.vector_norm(g.flatten(1), dim=1, dtype=torch.float64) ** 2
                                                for g in gs).to(th0.dtype)
            if grad is not None:
                grad[k] += torch.cat([g.sum(0).flatten() for g in gs]) / N
    return sq, grad


STATUS_RUNNING, STATUS_CONVERGED, STATUS_MAX_STEPS, STATUS_DIVERGED, STATUS_NONFINITE = 0, 1, 2, 3, 4


def _judge(G: float, G0: float, first: bool, tol: float, growth: float) -> int:
    if not np.isfinite(G):
        return STATUS_NONFINITE
    if not first and growth > 0 and G > growth * G0:
        return STATUS_DIVERGED
    if G < tol:
        return STATUS_CONVERGED
    return STATUS_RUNNING


def inner_descent(mlp: MLP, theta0: Any, X: Any, y: Any, lr: Any, batch_size: int, steps: int, shared: bool,
                  streams: Any, drop_last: bool, full_batch: bool, eval_block: int, G_tol: float, growth: float,
                  record_every: int) -> dict[str, np.ndarray]:
    """The torch twin of the core's inner descent: same batches, same stopping rules, same outputs.

    θ0 [K, P], X [N, n0], y [N], lr [K], streams [K] (uint64). Returns the dict the core returns:
    theta [K, P], status [K] (int8 codes), steps_done [K], G_first [K], G_last [K],
    G_trace [K, ceil(steps/record_every)].
    """
    from . import rng

    th = _t(theta0).detach().clone()
    dtype = th.dtype
    Xt, yt = _t(X, dtype), _t(y, torch.int64)
    lr_t = _t(lr, dtype)
    K, N = th.shape[0], Xt.shape[0]
    n_rec = max(1, -(-steps // record_every))
    out_theta = th.clone()
    status = np.zeros(K, np.int8)
    steps_done = np.zeros(K, np.int64)
    G_first = np.full(K, np.nan)
    G_last = np.full(K, np.nan)
    trace = np.full((K, n_rec), np.nan, dtype=np.float32 if dtype == torch.float32 else np.float64)
    active = np.ones(K, bool)
    caches: dict[int, dict] = {}
    s_done = 0
    for s in range(steps):
        idx_act = np.flatnonzero(active)
        if idx_act.size == 0:
            break
        ta = th[idx_act]
        if full_batch:
            _, _, g = evaluate(mlp, ta, Xt, yt, True, eval_block)
            G = 0.5 * (g.to(torch.float64) ** 2).sum(1)
            dG = torch.zeros_like(ta)
            for r0 in range(0, N, eval_block):
                xb, yb = Xt[r0:r0 + eval_block], yt[r0:r0 + eval_block]
                dG += hvp(mlp, ta, xb, yb, g) * (xb.shape[0] / N)
        else:
            if shared:
                bidx = rng.batch_indices(int(streams[0]), s, N, batch_size, drop_last, caches.setdefault(0, {}))
                _, Gt, dG = grad_G(mlp, ta, Xt[bidx], yt[bidx])
            else:
                Xs, ys = [], []
                for k in idx_act:
                    bidx = rng.batch_indices(int(streams[k]), s, N, batch_size, drop_last, caches.setdefault(int(k), {}))
                    Xs.append(Xt[bidx])
                    ys.append(yt[bidx])
                _, Gt, dG = grad_G(mlp, ta, torch.stack(Xs), torch.stack(ys))
            G = Gt.to(torch.float64)
        for j, k in enumerate(idx_act):
            Gk = float(G[j])
            if s == 0:
                G_first[k] = Gk
            v = _judge(Gk, G_first[k], s == 0, G_tol, growth)
            if s % record_every == 0:
                trace[k, s // record_every] = Gk
            G_last[k] = Gk
            if v != STATUS_RUNNING:
                status[k] = v
                steps_done[k] = s
                out_theta[k] = th[k]
                active[k] = False
            else:
                th[k] = th[k] - lr_t[k] * dG[j]
        s_done = s + 1
    for k in np.flatnonzero(active):
        steps_done[k] = s_done
        out_theta[k] = th[k]
        status[k] = STATUS_MAX_STEPS if bool(torch.isfinite(th[k]).all()) else STATUS_NONFINITE
    return {"theta": out_theta.numpy(), "status": status, "steps_done": steps_done, "G_first": G_first,
            "G_last": G_last, "G_trace": trace}
