"""Newton-MR on the full-batch loss: a second-order inner solver that reaches critical points.

Each iteration, for all K models at once (Roosta, Liu, Xu & Mahoney, "Newton-MR", 2018; the
defaults follow Frye et al.'s ``autocrit``):

1. g = ∇L on the full batch given (one pass over the rows);
2. p = MINRES solution of H p = −g (:func:`fasttrap.linalg.lanczos.minres`; each MINRES step is one
   batched full-batch HVP for all models), then one more HVP for H p;
3. an Armijo backtracking line search on ‖g‖²: α = α₀, α₀β, α₀β², … until
   ‖g(θ + αp)‖² ≤ ‖g‖² + 2ρα⟨Hp, g⟩ (ρ = 1e-4, β = 0.5). Each trial is one gradient pass for the
   models still searching. A model whose search runs out of trials stops with status
   ``line_search_failed``.

The direction p minimises ‖Hp + g‖, which makes ⟨Hp, g⟩ ≤ 0: ‖g‖² decreases along p whatever the
curvature. The method is therefore attracted to *any* critical point — minima, saddles and maxima
alike — which is what a search for the traps of the landscape wants (gradient descent on G shares
this), and it converges quadratically near a non-degenerate one. Where g has a component in the
kernel of H (a gradient-flat region) MINRES cannot remove it, and the iterates stall with ‖g‖²
above the tolerance: :func:`fasttrap.certify` then reports them as gradient-flat.
"""

from __future__ import annotations

import numpy as np

from ..common.progress import Progress
from ..linalg.hessian import full_batch_gradient, full_batch_hvp
from ..linalg.lanczos import minres
from ..model.mlp import MLP
from ..reference import STATUS_CONVERGED, STATUS_DIVERGED, STATUS_MAX_STEPS, STATUS_NONFINITE

STATUS_LINE_SEARCH_FAILED = 6


def newton_mr(mlp: MLP, theta0: np.ndarray, X: np.ndarray, y: np.ndarray, *, steps: int, G_tol: float,
              growth: float, minres_tol: float = 1e-8, minres_iters: int = 60, alpha0: float = 1.0,
              beta: float = 0.5, rho: float = 1e-4, max_backtracks: int = 30, block: int = 8192,
              backend: str = "auto", progress: bool | None | Progress = False) -> dict[str, np.ndarray]:
    """``steps`` Newton-MR iterations from the K rows of θ0 on the full batch (X, y), in float64.

    Args:
        mlp: the network.
        theta0: [K, P] start points (any float dtype; the iterates are float64).
        X: [N, n0] rows; y: [N] labels (validated by the caller).
        steps: Newton iterations at most.
        G_tol: converged when G = ½‖∇L‖² < G_tol.
        growth: diverged when G > growth × G(start) (0: never).
        minres_tol, minres_iters: MINRES relative tolerance and step cap per iteration.
        alpha0: first trial step (1: the Newton step; autocrit starts at 0.1).
        beta, rho: backtracking factor and Armijo constant.
        max_backtracks: trials per line search before the model stops as ``line_search_failed``.
        block: rows per compiled call.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.
        progress: a progress bar over iterations.

    Returns:
        the dict of :func:`fasttrap.reference.descent_loop` (theta, status, steps_done, G_first,
        G_last, G_trace [K, steps + 1] with G before every iteration), plus ``hvps`` [K] and
        ``grad_passes`` [K], the products and gradient passes each model used.
    """
    th = np.array(theta0, dtype=np.float64)
    X = np.ascontiguousarray(X, dtype=np.float64)        # once, not at every compiled call
    K, P = th.shape
    status = np.zeros(K, np.int8)
    steps_done = np.zeros(K, np.int64)
    hvps = np.zeros(K, np.int64)
    passes = np.zeros(K, np.int64)
    trace = np.full((K, steps + 1), np.nan)
    active = np.ones(K, bool)
    _, g = full_batch_gradient(mlp, th, X, y, block, backend)
    passes += 1
    G = 0.5 * (g * g).sum(1)
    G_first = G.copy()
    trace[:, 0] = G
    bar = progress if isinstance(progress, Progress) else Progress(steps, f"Newton-MR ({K} models)", "iteration",
                                                                  enabled=progress)
    try:
        for s in range(steps):
            _judge(G, G_first, G_tol, growth, active, status, steps_done, s)
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            ta, ga = th[idx], g[idx]
            H = full_batch_hvp(mlp, ta, X, y, block, backend)
            sol = minres(H, -ga, rtol=minres_tol, maxiter=minres_iters)
            p = sol.x
            Hp = H(p)
            hvps[idx] += sol.iterations + 1
            slope = 2 * np.einsum("kp,kp->k", Hp, ga)       # d/dα ‖g(θ+αp)‖² at α = 0
            gsq = 2 * G[idx]
            alpha = np.full(idx.size, alpha0)
            accepted = np.zeros(idx.size, bool)
            new_th, new_g = ta.copy(), ga.copy()
            for _ in range(max_backtracks):
                todo = np.flatnonzero(~accepted)
                if todo.size == 0:
                    break
                trial = ta[todo] + alpha[todo, None] * p[todo]
                finite = np.isfinite(trial).all(1)
                gt = np.full_like(trial, np.nan)
                if finite.any():
                    gt[finite] = full_batch_gradient(mlp, trial[finite], X, y, block, backend)[1]
                passes[idx[todo]] += 1
                ok = finite & np.isfinite(gt).all(1) & ((gt * gt).sum(1) <= gsq[todo] + rho * alpha[todo] * slope[todo])
                acc = todo[ok]
                new_th[acc], new_g[acc] = trial[ok], gt[ok]
                accepted[acc] = True
                alpha[todo[~ok]] *= beta
            failed = idx[~accepted]
            status[failed] = STATUS_LINE_SEARCH_FAILED
            steps_done[failed] = s
            active[failed] = False
            th[idx[accepted]], g[idx[accepted]] = new_th[accepted], new_g[accepted]
            G[idx[accepted]] = 0.5 * (new_g[accepted] ** 2).sum(1)
            trace[idx[accepted], s + 1] = G[idx[accepted]]
            steps_done[idx[accepted]] = s + 1
            bar.update_to(s + 1)
        _judge(G, G_first, G_tol, growth, active, status, steps_done, steps)
        status[active] = STATUS_MAX_STEPS
    finally:
        if not isinstance(progress, Progress):
            bar.close()
    return {"theta": th, "status": status, "steps_done": steps_done, "G_first": G_first, "G_last": G.copy(),
            "G_trace": trace, "hvps": hvps, "grad_passes": passes}


def _judge(G: np.ndarray, G0: np.ndarray, G_tol: float, growth: float, active: np.ndarray, status: np.ndarray,
           steps_done: np.ndarray, s: int) -> None:
    """Stop the active models that converged, diverged or left the finite numbers (in place)."""
    for k in np.flatnonzero(active):
        if not np.isfinite(G[k]):
            status[k] = STATUS_NONFINITE
        elif growth > 0 and s > 0 and G[k] > growth * G0[k]:
            status[k] = STATUS_DIVERGED
        elif G[k] < G_tol:
            status[k] = STATUS_CONVERGED
        else:
            continue
        steps_done[k] = s
        active[k] = False

