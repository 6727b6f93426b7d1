"""Twin of the core's inner-descent loop (:func:`fasttrap.ops.descent_loop`): same batches, same
stopping rules, same outputs, in pure torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..model import rng
from ..model.mlp import MLP
from .common import as_tensor
from . import dataset as _mlp_dataset, grad as _mlp_grad, module as _module


STATUS_RUNNING, STATUS_CONVERGED, STATUS_MAX_STEPS, STATUS_DIVERGED, STATUS_NONFINITE, STATUS_INTERRUPTED = 0, 1, 2, 3, 4, 5


def _judge(G: float, G0: float, first: bool, tol: float, growth: float) -> int:
    if not np.isfinite(G):
        return STATUS_NONFINITE
    if not first and growth > 0 and G > growth * G0:
        return STATUS_DIVERGED
    if G < tol:
        return STATUS_CONVERGED
    return STATUS_RUNNING


def descent_loop(mlp: MLP, theta0: Any, X: Any, y: Any, lr: Any, *, progress: np.ndarray | None = None,
                 batch_size: int, steps: int, shared: bool, streams: Any, drop_last: bool, full_batch: bool,
                 eval_block: int, G_tol: float, growth: float, record_every: int,
                 snap_steps: Any = ()) -> dict[str, np.ndarray]:
    """The torch twin of the core's inner descent: same batches, same stopping rules, same outputs.

    θ0 [K, P], X [N, n0] (for a TorchModel [N, ...]), y [N], lr [K], streams [K] (uint64),
    snap_steps [J] (int64, strictly increasing in [1, steps]: the checkpoints); the loop runs on θ0's
    device. Returns the dict the core returns:
    theta [K, P], status [K] (int8 codes), steps_done [K], G_first [K], G_last [K],
    G_trace [K, ceil(steps/record_every)], snaps [J, K, P] (θ after snap_steps[j] updates; a model
    that stopped earlier gives its endpoint, one cut off by an interruption NaN). ``progress`` [4] (int64), when given, is advanced as the
    core advances it: [0] steps begun, [1] model-steps executed, [3] models still running; a
    non-zero [2] asks the loop to stop at the end of the step.
    """
    # the MLP's twin ops, or the torch.func ops of any module (same names, same signatures)
    if mlp.compiled:
        grad_G, hvp, evaluate = _mlp_grad.grad_G, _mlp_grad.hvp, _mlp_dataset.evaluate
    else:
        grad_G, hvp, evaluate = _module.grad_G, _module.hvp, _module.evaluate
    th = as_tensor(theta0).detach().clone()
    dtype = th.dtype
    Xt, yt = as_tensor(X, dtype).to(th.device), as_tensor(y, torch.int64).to(th.device)
    lr_t = as_tensor(lr, dtype).to(th.device)
    K, N = th.shape[0], Xt.shape[0]
    n_rec = max(1, -(-steps // record_every))
    out_theta = th.clone()
    status = np.zeros(K, np.int8)
    steps_done = np.zeros(K, np.int64)
    G_first = np.full(K, np.nan)
    G_last = np.full(K, np.nan)
    trace = np.full((K, n_rec), np.nan, dtype=np.float32 if dtype == torch.float32 else np.float64)
    active = np.ones(K, bool)
    snap_steps = np.asarray(snap_steps, dtype=np.int64).reshape(-1)
    if snap_steps.size and (snap_steps.min() < 1 or snap_steps.max() > steps or np.any(np.diff(snap_steps) <= 0)):
        raise ValueError("snap_steps: must be strictly increasing and lie in [1, steps]")
    snaps = torch.full((snap_steps.size, K, th.shape[1]), float("nan"), dtype=dtype, device=th.device)
    jsnap = 0
    caches: dict[int, dict] = {}
    s_done = 0
    interrupted = False
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
        while jsnap < snap_steps.size and snap_steps[jsnap] == s_done:
            snaps[jsnap] = torch.where(torch.as_tensor(active, device=th.device)[:, None], th, out_theta)
            jsnap += 1
        if progress is not None:
            progress[0] = s + 1
            progress[1] += int(idx_act.size)
            progress[3] = int(active.sum())
            if progress[2] != 0:
                interrupted = True
                break
    for k in np.flatnonzero(active):
        steps_done[k] = s_done
        out_theta[k] = th[k]
        if interrupted:
            status[k] = STATUS_INTERRUPTED
        else:
            status[k] = STATUS_MAX_STEPS if bool(torch.isfinite(th[k]).all()) else STATUS_NONFINITE
    for j in range(jsnap, snap_steps.size):     # not reached: the endpoint, NaN where interrupted
        keep = torch.as_tensor(status != STATUS_INTERRUPTED, device=th.device)[:, None]
        snaps[j] = torch.where(keep, out_theta, torch.full_like(out_theta, float("nan")))
    return {"theta": out_theta.cpu().numpy(), "status": status, "steps_done": steps_done, "G_first": G_first,
            "G_last": G_last, "G_trace": trace, "snaps": snaps.cpu().numpy()}
