"""Newton-MR on the full-batch loss: a second-order inner solver that reaches critical points.

Each iteration, for all K models at once (Roosta, Liu, Xu & Mahoney, "Newton-MR", 2018), in the
damped (Levenberg–Marquardt) form that degenerate critical manifolds need:

1. g = ∇L on the full batch given (one pass over the rows);
2. a Lanczos basis of H from g (:func:`fasttrap.linalg.lanczos.damped_solve`: each step is one
   batched full-batch HVP for all models, up to ``minres_iters`` steps), and in it the step
   p = −(H² + μI)⁻¹Hg that minimises ‖Hp + g‖² + μ‖p‖², with μ = λ·‖g‖·‖T‖ (‖T‖ the size of
   the projected Hessian, so λ carries no units). μ → 0 is MINRES's least-squares Newton-MR
   step; μ ∝ ‖g‖ is the choice of Yamashita & Fukushima (2001) and Fan & Yuan (2005) that
   keeps quadratic convergence to *non-isolated* solutions, where H is singular on the whole
   manifold (the GL(p) symmetry of linear networks, the rescalings of ReLU ones);
3. a trust-region test on ‖g‖²: the trial θ + α₀p is kept when the actual decrease of ‖g‖² is
   at least ``rho`` of the decrease the model predicts (‖g‖² − ‖Hp + g‖²). A kept step with a
   ratio above 0.75 divides λ by 4, one below 0.25 doubles it; a refused one multiplies λ by
   1/``beta`` and re-solves in the same Krylov basis (no new products, one gradient pass per
   trial). A model refused ``max_backtracks`` times stops as ``line_search_failed``;
4. with ``geodesic=True`` every trial step is v + ½a, with a the *geodesic
   acceleration* of Levenberg–Marquardt (Transtrum & Sethna, "Improvements to the
   Levenberg-Marquardt algorithm for nonlinear least-squares minimization", 2012): a minimises
   ‖Ha + r_vv‖² + μ‖a‖², r_vv the second directional derivative of the residual g along v (a
   finite difference of gradients). An accelerated trial that fails the ratio test, or whose 2‖a‖
   exceeds 0.75‖v‖, is followed by the plain trial v in the same iteration, and only if that fails
   too does λ grow: the method is then never held back by a wrong acceleration (across the kinks
   of a ReLU net the finite difference is no second derivative).

Why the acceleration: near the degenerate critical sets of linear networks the residual g has
very different curvatures along and across a narrow, curved valley of ‖g‖² (Hessian eigenvalues
1e-5 next to 1, besides the exact zeros of the GL(p) orbit). The damped step is straight, the
trust test keeps it short, and the iterates creep along the valley: on the 8-2-5 Baldi–Hornik net
of ``docs/recorded/closed-form`` only 8 of 24 starts reached ‖∇L‖² < 1e-10 in 300 iterations,
with a predicted decrease of ~1% of ‖g‖² per iteration; the gradient there lies in no kernel
(under 0.1% of ‖g‖² on eigenvalues below 1e-6), so these were not gradient-flat points. The
acceleration bends the step along the valley.

The undamped MINRES step with an Armijo line search (the form before this one) stalled on a
linear network: near-singular directions give steps so long that the search cuts them to
nothing. The direction still minimises a model of ‖g‖², so the method is attracted to *any*
critical point — minima, saddles and maxima alike — which is what a search for the traps of the
landscape wants. Where g has a component in the kernel of H (a gradient-flat region) no step
removes it, and the iterates stall with ‖g‖² above the tolerance: :func:`fasttrap.certify` then
reports them as gradient-flat.
"""

from __future__ import annotations

import numpy as np

from ..common.progress import Progress
from ..linalg.hessian import full_batch_gradient, full_batch_hvp
from ..linalg.lanczos import Lanczos, damped_resolve, damped_solve, lanczos, restricted
from ..model.mlp import MLP
from ..reference import STATUS_CONVERGED, STATUS_DIVERGED, STATUS_MAX_STEPS, STATUS_NONFINITE

STATUS_LINE_SEARCH_FAILED = 6


def newton_mr(mlp: MLP, theta0: np.ndarray, X: np.ndarray, y: np.ndarray, *, steps: int, G_tol: float,
              growth: float, minres_tol: float = 1e-8, minres_iters: int = 60, alpha0: float = 1.0,
              beta: float = 0.5, rho: float = 1e-4, max_backtracks: int = 30, geodesic: bool = False,
              block: int = 8192, backend: str = "auto",
              progress: bool | None | Progress = False) -> dict[str, np.ndarray]:
    """``steps`` Newton-MR iterations from the K rows of θ0 on the full batch (X, y), in float64.

    Args:
        mlp: the network.
        theta0: [K, P] start points (any float dtype; the iterates are float64).
        X: [N, n0] rows; y: [N] labels (validated by the caller).
        steps: Newton iterations at most.
        G_tol: converged when G = ½‖∇L‖² < G_tol.
        growth: diverged when G > growth × G(start) (0: never).
        minres_tol: unused by the damped step (every iteration builds ``minres_iters`` Lanczos
            steps, fewer where the Krylov space closes); kept for the shared signature.
        minres_iters: Lanczos steps per iteration (the Krylov space of the step).
        alpha0: scale of every trial step (1: the damped Newton step).
        beta: a refused trial multiplies the damping λ by 1/beta (0.5: doubles it).
        rho: least ratio of actual to predicted decrease of ‖g‖² for a trial to be kept.
        max_backtracks: trials per iteration before the model stops as ``line_search_failed``.
        geodesic: add the geodesic acceleration to every trial step (see the module docstring; off by
            default: it raises the share of linear-net starts that reach ‖∇L‖² < 1e-10 to ≥ 90%, but not
            the share that converges, docs/recorded/closed-form/): one
            more gradient pass and 1 + ``minres_iters`` more products per trial, in exchange for
            steps that follow a curved valley instead of creeping along it.
        block: rows per compiled call.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.
        progress: a progress bar over iterations.

    Returns:
        the dict of :func:`fasttrap.reference.descent_loop` (theta, status, steps_done, G_first,
        G_last, G_trace [K, n + 1] with G before every iteration, n the iterations run, NaN for a
        model that had stopped), plus ``hvps`` [K] and
        ``grad_passes`` [K], the products and gradient passes each model used.
    """
    th = np.array(theta0, dtype=np.float64)
    X = np.ascontiguousarray(X, dtype=np.float64)        # once, not at every compiled call
    K, P = th.shape
    status = np.zeros(K, np.int8)
    steps_done = np.zeros(K, np.int64)
    hvps = np.zeros(K, np.int64)
    passes = np.zeros(K, np.int64)
    # G before every iteration, grown as iterations run: a budget of 10¹² iterations must not
    # allocate 10¹² slots up front (most runs converge in a few dozen)
    rows: list[np.ndarray] = []
    active = np.ones(K, bool)
    damping = np.full(K, DAMPING0)
    _, g = full_batch_gradient(mlp, th, X, y, block, backend)
    passes += 1
    G = 0.5 * (g * g).sum(1)
    G_first = G.copy()
    rows.append(G.copy())
    m = int(min(minres_iters, P))
    bar = progress if isinstance(progress, Progress) else Progress(steps, f"Newton-MR ({K} models)", "iteration",
                                                                  enabled=progress)
    try:
        for s in range(steps):
            _judge(G, G_first, G_tol, growth, active, status, steps_done, s)
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            rows.append(np.full(K, np.nan))
            ta, ga = th[idx], g[idx]
            H = full_batch_hvp(mlp, ta, X, y, block, backend)
            lz = lanczos(H, -ga, m, keep_basis=True)
            hvps[idx] += lz.steps
            gn = np.sqrt(2 * G[idx])
            tn = np.array([_t_norm(lz, j) for j in range(idx.size)])
            accepted = np.zeros(idx.size, bool)
            for _ in range(max_backtracks):
                todo = np.flatnonzero(~accepted)
                if todo.size == 0:
                    break
                sub = _subset(lz, todo)
                mu = damping[idx[todo]] * gn[todo] * tn[todo]
                p, pred = damped_resolve(sub, gn[todo], mu)

                def attempt(step: np.ndarray, rows_: np.ndarray):
                    """The trial θ + α₀·step of models todo[rows_]: its point, gradient, ‖g‖² and ratio."""
                    t = ta[todo[rows_]] + alpha0 * step
                    fin = np.isfinite(t).all(1)
                    gt_ = np.full_like(t, np.nan)
                    if fin.any():
                        gt_[fin] = full_batch_gradient(mlp, t[fin], X, y, block, backend)[1]
                    passes[idx[todo[rows_]]] += 1
                    gs = (gt_ * gt_).sum(1)
                    r = (2 * G[idx[todo[rows_]]] - gs) / np.maximum(pred[rows_], 1e-300)
                    return t, gt_, gs, r, fin & np.isfinite(gs) & (r > rho)

                every = np.arange(todo.size)
                if geodesic:
                    acc, small, n_hvp = _acceleration(mlp, H, idx.size, todo, ta[todo], ga[todo], p, mu, m, X, y,
                                                      block, backend)
                    passes[idx[todo]] += 1
                    hvps[idx[todo]] += n_hvp
                    trial, gt, gts, ratio, ok = attempt(p + 0.5 * acc, every)
                    ok &= small
                    # Where the accelerated trial fails, the plain damped step gets its own chance
                    # before λ grows: the acceleration is a finite difference of gradients, wrong
                    # across the kinks of ReLU (r_vv is not a second derivative there), and a
                    # refused acceleration must not stall a step that would have been kept.
                    again = np.flatnonzero(~ok)
                    if again.size:
                        t2, g2, s2, r2, ok2 = attempt(p[again], again)
                        trial[again], gt[again], gts[again], ratio[again], ok[again] = t2, g2, s2, r2, ok2
                else:
                    trial, gt, gts, ratio, ok = attempt(p, every)
                for n, j in enumerate(todo):
                    k = idx[j]
                    if ok[n]:
                        th[k], g[k], G[k] = trial[n], gt[n], 0.5 * gts[n]
                        accepted[j] = True
                        if ratio[n] > 0.75:
                            damping[k] = max(damping[k] / 4, DAMPING_FLOOR)
                        elif ratio[n] < 0.25:
                            damping[k] *= 2
                    else:
                        damping[k] /= beta
            failed = idx[~accepted]
            status[failed] = STATUS_LINE_SEARCH_FAILED
            steps_done[failed] = s
            active[failed] = False
            rows[-1][idx[accepted]] = G[idx[accepted]]
            steps_done[idx[accepted]] = s + 1
            bar.update_to(s + 1)
        _judge(G, G_first, G_tol, growth, active, status, steps_done, steps)
        status[active] = STATUS_MAX_STEPS
    finally:
        if not isinstance(progress, Progress):
            bar.close()
    return {"theta": th, "status": status, "steps_done": steps_done, "G_first": G_first, "G_last": G.copy(),
            "G_trace": np.stack(rows, axis=1), "hvps": hvps, "grad_passes": passes}


DAMPING0 = 1e-2        # λ of the first iteration (μ = λ·‖g‖·‖T‖)
DAMPING_FLOOR = 1e-12
GEODESIC_H = 0.1       # finite-difference step of the second directional derivative (Transtrum & Sethna)
GEODESIC_ALPHA = 0.75  # a trial is refused when 2‖a‖ > α‖v‖ (the acceleration would dominate)


def _acceleration(mlp: MLP, H, n: int, rows: np.ndarray, theta: np.ndarray, g: np.ndarray, v: np.ndarray,
                  mu: np.ndarray, m: int, X: np.ndarray, y: np.ndarray, block: int,
                  backend: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The geodesic acceleration a [R, P] of the damped steps v [R, P] of models ``rows`` (of the n
    whose Hessians H applies to), whether each is small enough (2‖a‖ ≤ α‖v‖), and the products used.

    r_vv = (2/h)·((g(θ + h v) − g(θ))/h − H v) is the second derivative of the residual g along v
    (one gradient pass, one product), and a minimises ‖H a + r_vv‖² + μ‖a‖² (a Lanczos run of its own).
    """
    h = GEODESIC_H
    gh = full_batch_gradient(mlp, theta + h * v, X, y, block, backend)[1]
    rvv = (2 / h) * ((gh - g) / h - restricted(H, n, rows)(v))
    acc = np.zeros_like(v)
    used = np.ones(len(rows), np.int64)
    live = np.isfinite(rvv).all(1) & (np.linalg.norm(rvv, axis=1) > 0)
    if live.any():
        sel = np.flatnonzero(live)
        a, _, lz = damped_solve(restricted(H, n, rows[sel]), -rvv[sel], mu[sel], m)
        acc[sel] = a
        used[sel] += lz.steps
    small = 2 * np.linalg.norm(acc, axis=1) <= GEODESIC_ALPHA * np.linalg.norm(v, axis=1)
    return acc, small & np.isfinite(acc).all(1), used


def _t_norm(lz: Lanczos, k: int) -> float:
    """An upper bound on ‖T‖ of model k (Gershgorin: |α| + 2|β| at most 3 max), 1 if T is zero."""
    s = int(lz.steps[k])
    t = 3 * max(np.abs(lz.alpha[k, :s]).max(initial=0.0), np.abs(lz.beta[k, :s]).max(initial=0.0))
    return t if t > 0 else 1.0


def _subset(lz: Lanczos, rows: np.ndarray) -> Lanczos:
    """The Lanczos run of some of its operators."""
    return Lanczos(alpha=lz.alpha[rows], beta=lz.beta[rows], steps=lz.steps[rows], basis=lz.basis[rows])


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

