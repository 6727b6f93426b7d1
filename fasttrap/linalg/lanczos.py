"""Krylov methods on Hessian-vector products, batched over K independent operators.

Every method here takes ``matvec``: V [K, P] → H_k V_k [K, P] for K symmetric operators at once
(K models' Hessians), so that one iteration costs one batched HVP call, whatever K is. All work is
float64.

* :func:`lanczos` — the Lanczos tridiagonalisation with full reorthogonalisation (twice, classical
  Gram–Schmidt: "twice is enough"), so Ritz values do not repeat and a run of P steps is exact.
* :func:`ritz` — Ritz values, vectors in the Krylov basis, and their residual norms
  ‖H u − θ u‖ = |β_m s_m|, from the tridiagonal matrix (:func:`scipy.linalg.eigh_tridiagonal`).
* :func:`slq` — stochastic Lanczos quadrature: the spectral density as nodes (Ritz values) and
  weights (squared first components), averaged over Rademacher probes; its moments estimate
  tr(Hᵖ)/P.
* :func:`minres` — MINRES for H x = b (any symmetric H, definite or not): the x in the Krylov space
  K_m(H, b) that minimises ‖b − H x‖, through the Lanczos basis of b (the same three-term
  recurrence Paige & Saunders use; here with full reorthogonalisation and a small least-squares
  solve per check, which costs nothing next to an HVP).

The same code serves the certification of endpoints (:mod:`fasttrap.analysis.certify`), the
Newton-MR inner solver (:mod:`fasttrap.dynamics.newton`) and spectral densities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.linalg import eigh_tridiagonal

MatVec = Callable[[np.ndarray], np.ndarray]   # [K, P] -> [K, P]


def restricted(matvec: MatVec, n: int, rows: np.ndarray) -> MatVec:
    """The batched operator ``matvec`` of n models, applied to the models ``rows`` only.

    Args:
        matvec: maps [n, P] to [n, P], row k by model k's operator.
        n: the models matvec acts on.
        rows: [R] indices into them.

    Returns:
        A map [R, P] -> [R, P]: the other rows are fed zeros (a batched product costs the same
        for any input) and their outputs dropped. ``matvec`` itself where rows is 0..n-1.
    """
    rows = np.asarray(rows, np.int64)
    if rows.size == n and np.array_equal(rows, np.arange(n)):
        return matvec

    def sub(V: np.ndarray) -> np.ndarray:   # [R, P]
        full = np.zeros((n, V.shape[1]), V.dtype)
        full[rows] = V
        return matvec(full)[rows]

    return sub


@dataclass
class Lanczos:
    """The result of :func:`lanczos` for K operators.

    Attributes:
        alpha: [K, m] diagonal of T (entries past ``steps[k]`` are 0).
        beta: [K, m] off-diagonal: beta[k, j] couples step j to j + 1 (beta[k, steps[k] − 1] is the
            residual coupling of the last step; 0 when an invariant subspace was found).
        steps: [K] steps taken per operator (fewer than m when the Krylov space closed early).
        basis: [K, m, P] the orthonormal Lanczos vectors, or None when not kept.
        skew: [K] ‖M − Mᵀ‖₂ of M = Vᵀ(HV) as computed (the first Gram–Schmidt pass gives every
            entry): for an exactly symmetric product M is symmetric up to the rounding of the
            reorthogonalisation, so this measures the rounding error the products carried into the
            projected operator (see :func:`rounding_bound`).
    """

    alpha: np.ndarray
    beta: np.ndarray
    steps: np.ndarray
    basis: np.ndarray | None
    skew: np.ndarray | None = None
    #: (V [K, m+1, P], M [K, m+1, m], scale [K], active [K]): what :func:`extend` continues from
    #: (``keep_state=True`` only)
    state: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


def lanczos(matvec: MatVec, v0: np.ndarray, m: int, keep_basis: bool = False, breakdown: float = 1e-12,
            restart: int | None = None, keep_state: bool = False) -> Lanczos:
    """m steps of Lanczos with full reorthogonalisation, for K operators at once.

    Args:
        matvec: V [K, P] → H V [K, P].
        v0: [K, P] start vectors (normalised here; a zero row is an error).
        m: steps (at most P).
        keep_basis: keep the Lanczos vectors (needed for Ritz vectors and MINRES solutions).
        breakdown: relative size of β below which the Krylov space counts as closed (an invariant
            subspace: the Ritz values of that operator are then exact).
        restart: None (stop an operator whose Krylov space closed), or a seed: go on from a random
            vector orthogonal to the basis so far, with β = 0 at the join (T block diagonal). One
            start vector sees each distinct eigenvalue once; restarting finds the further copies
            of repeated ones (a zero cluster, say), so that m steps give m Ritz values.
        keep_state: keep what :func:`extend` needs to continue the run (the basis, the projection).

    Returns:
        :class:`Lanczos`.
    """
    v0 = np.asarray(v0, dtype=np.float64)
    K, P = v0.shape
    m = int(min(m, P))
    nrm = np.linalg.norm(v0, axis=1)
    if np.any(nrm == 0) or not np.all(np.isfinite(nrm)):
        raise ValueError("v0: every start vector must be finite and non-zero")
    V = np.zeros((K, m + 1, P))
    V[:, 0] = v0 / nrm[:, None]
    alpha = np.zeros((K, m))
    beta = np.zeros((K, m))
    steps = np.zeros(K, dtype=np.int64)
    active = np.ones(K, dtype=bool)
    scale = np.zeros(K)
    M = np.zeros((K, m + 1, m))            # M[:, i, j] = v_iᵀ (H v_j) as computed
    fresh = np.random.default_rng([restart, 23]) if restart is not None else None
    active = _steps(matvec, V, M, alpha, beta, steps, active, scale, 0, m, breakdown, fresh)
    return Lanczos(alpha=alpha, beta=beta, steps=steps, basis=V[:, :m] if keep_basis else None, skew=_skew(M, steps),
                   state=(V, M, scale, active) if keep_state else None)


def _steps(matvec: MatVec, V: np.ndarray, M: np.ndarray, alpha: np.ndarray, beta: np.ndarray, steps: np.ndarray,
           active: np.ndarray, scale: np.ndarray, j0: int, m: int, breakdown: float,
           fresh: np.random.Generator | None = None) -> np.ndarray:
    """Lanczos steps j0 … m−1 in place (the loop of :func:`lanczos` and :func:`extend`); with ``fresh``,
    an operator whose Krylov space closed restarts from a random vector orthogonal to its basis.
    Returns the operators still active."""
    P = V.shape[2]
    for j in range(j0, m):
        if not active.any():
            break
        w = np.asarray(matvec(V[:, j]), dtype=np.float64)
        steps[active] = j + 1
        was = active.copy()
        active = _extend(V, j, w, active, alpha, beta, scale, breakdown, M)
        if fresh is not None and j + 1 < m:
            for k in np.flatnonzero(was & ~active):
                r = fresh.standard_normal(P)
                for _ in range(2):
                    r -= V[k, : j + 1].T @ (V[k, : j + 1] @ r)
                V[k, j + 1] = r / np.linalg.norm(r)
                beta[k, j] = 0.0
                active[k] = True
    return active


def _skew(M: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """‖M − Mᵀ‖₂ of the leading steps × steps block of each computed projection M [K, m+1, m]."""
    out = np.zeros(steps.size)
    for k in range(steps.size):
        s = int(steps[k])
        Mk = M[k, :s, :s]
        out[k] = np.linalg.norm(Mk - Mk.T, 2) if s else 0.0
    return out


def extend(matvec: MatVec, lz: Lanczos, rows: np.ndarray, m: int, breakdown: float = 1e-12) -> Lanczos:
    """The run ``lz`` (made with ``keep_state=True``) continued to m steps, for its operators ``rows``.

    The first steps of a Lanczos run do not depend on how many follow, so this gives what a fresh
    m-step run from the same start vectors gives (up to the rounding of the products), for the cost of
    the new steps only: the certificates' index search, which needs more steps when the index reaches
    k, pays m − m₀ products instead of m. An operator whose Krylov space closed stays closed.

    Args:
        matvec: V [R, P] → H V for the R operators ``rows`` of the run.
        lz: the run to continue.
        rows: [R] which of its operators.
        m: steps in all (≥ the run's; at most P).
        breakdown: as for :func:`lanczos`.

    Returns:
        :class:`Lanczos` of the R operators, with its state (so it can be extended again).
    """
    if lz.state is None:
        raise ValueError("lz: made without keep_state=True; it cannot be continued")
    V0, M0, scale0, active0 = lz.state
    rows = np.asarray(rows, np.int64)
    R, m0, P = rows.size, lz.alpha.shape[1], V0.shape[2]
    m = int(min(max(m, m0), P))
    V = np.zeros((R, m + 1, P))
    V[:, : m0 + 1] = V0[rows]
    M = np.zeros((R, m + 1, m))
    M[:, : m0 + 1, :m0] = M0[rows]
    alpha, beta = np.zeros((R, m)), np.zeros((R, m))
    alpha[:, :m0], beta[:, :m0] = lz.alpha[rows], lz.beta[rows]
    steps, active, scale = lz.steps[rows].copy(), active0[rows].copy(), scale0[rows].copy()
    active = _steps(matvec, V, M, alpha, beta, steps, active, scale, m0, m, breakdown)
    return Lanczos(alpha=alpha, beta=beta, steps=steps, basis=None, skew=_skew(M, steps), state=(V, M, scale, active))


def rounding_bound(lz: Lanczos, safety: float = 10.0, dtype: Any = np.float64) -> np.ndarray:
    """τ [K]: how far the computed Ritz values can lie from those of the exact projection VᵀHV.

    Why: with orthonormal V, the computed products satisfy (H + E)V = V M + f e_mᵀ, E the rounding
    of the products. VᵀHV = M − VᵀEV is symmetric, so the skew part of M is exactly the skew part
    of the projected error VᵀEV, and the tridiagonal T Lanczos keeps differs from M only by entries
    of M − Mᵀ. Rounding has no reason to be symmetric, so the symmetric part of VᵀEV, which no
    computation can see, is taken to be as large as the skew part; ``safety`` covers that and the
    loss of orthogonality (at the unit roundoff with reorthogonalisation twice). By Weyl's
    inequality every Ritz value then lies within τ = safety·max(‖M − Mᵀ‖₂, u·‖T‖·√s) of the
    corresponding eigenvalue of VᵀHV; the floor u·‖T‖·√s (u the unit roundoff of the products'
    ``dtype``, s the steps) applies where the products happen to be exactly symmetric.
    """
    u = np.finfo(dtype).eps / 2
    out = np.zeros(lz.steps.size)
    for k in range(lz.steps.size):
        s = int(lz.steps[k])
        tn = max(np.abs(lz.alpha[k, :s]).max(initial=0.0), np.abs(lz.beta[k, :s]).max(initial=0.0)) * 3
        sk = lz.skew[k] if lz.skew is not None else 0.0
        out[k] = safety * max(sk, u * tn * np.sqrt(s))
    return out


def _extend(V: np.ndarray, j: int, w: np.ndarray, active: np.ndarray, alpha: np.ndarray, beta: np.ndarray,
            scale: np.ndarray, breakdown: float, M: np.ndarray | None = None) -> np.ndarray:
    """One Lanczos step in place, given w = H v_j [K, P]: α_j, w orthogonalised against every vector
    so far (twice), β_j and v_{j+1} for the operators still active. Returns the operators that go on
    (those whose Krylov space did not close; ``scale`` tracks the largest |α|, β seen; ``M``, when
    given, receives column j of Vᵀw from the first pass and β_j below it)."""
    w[~active] = 0.0
    a = np.einsum("kp,kp->k", w, V[:, j])
    alpha[active, j] = a[active]
    for n in range(2):
        c = np.einsum("kjp,kp->kj", V[:, : j + 1], w)
        if n == 0 and M is not None:
            M[active, : j + 1, j] = c[active]
        w -= np.einsum("kj,kjp->kp", c, V[:, : j + 1])
    b = np.linalg.norm(w, axis=1)
    if M is not None:
        M[active, j + 1, j] = b[active]
    np.maximum(scale, np.maximum(np.abs(a), b), out=scale)
    go = active & (b > breakdown * np.maximum(scale, 1e-300))
    beta[go, j] = b[go]
    V[go, j + 1] = w[go] / b[go, None]
    return go


def ritz(lz: Lanczos, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ritz values of operator k, ascending, with their Krylov-basis vectors and residual norms.

    Returns:
        ``(theta [s], S [s, s], residual [s])`` with s = lz.steps[k]; the Ritz vector i is
        basisᵀ S[:, i], and residual[i] = ‖H u_i − θ_i u_i‖ = |β_{s−1} S[s−1, i]|.
    """
    s = int(lz.steps[k])
    if s == 1:
        th, S = lz.alpha[k, :1].copy(), np.ones((1, 1))
    else:
        th, S = eigh_tridiagonal(lz.alpha[k, :s], lz.beta[k, : s - 1])
    return th, S, np.abs(lz.beta[k, s - 1] * S[s - 1])


def slq(matvec: MatVec, K: int, P: int, m: int, probes: int, seed: int = 0, residuals: bool = False
        ) -> tuple[np.ndarray, ...]:
    """Stochastic Lanczos quadrature of the spectral densities of K operators.

    Args:
        matvec: V [K·probes, P] → H V, the probes of operator k at rows k·probes … (k+1)·probes − 1
            (one batched call per step for all of them).
        K, P: operators and their dimension.
        m: Lanczos steps per probe.
        probes: Rademacher probe vectors per operator.
        seed: seed of the probes.
        residuals: also return the Ritz residual ‖Hu − θu‖ of every node.

    Returns:
        ``(nodes [K, probes, m], weights [K, probes, m])``, and ``residuals [K, probes, m]`` when
        asked: the density of operator k is Σ weights · δ(λ − nodes) / probes (each probe's weights
        sum to 1; unused slots are 0), and Σ weights · nodesᵖ / probes estimates tr(Hᵖ)/P.
    """
    rng = np.random.default_rng(seed)
    v0 = rng.choice([-1.0, 1.0], size=(K * probes, P))
    lz = lanczos(matvec, v0, m)
    nodes = np.zeros((K * probes, min(m, P)))
    weights = np.zeros_like(nodes)
    res = np.zeros_like(nodes)
    for r in range(K * probes):
        th, S, rr = ritz(lz, r)
        nodes[r, : th.size] = th
        weights[r, : th.size] = S[0] ** 2
        res[r, : th.size] = rr
    out = (nodes.reshape(K, probes, -1), weights.reshape(K, probes, -1))
    return out + (res.reshape(K, probes, -1),) if residuals else out


@dataclass
class Minres:
    """The result of :func:`minres`.

    Attributes:
        x: [K, P] the solutions.
        residual: [K] ‖b − H x‖ / ‖b‖ as the Krylov least-squares problem gives it (0 for b = 0).
        iterations: [K] Lanczos steps used.
    """

    x: np.ndarray
    residual: np.ndarray
    iterations: np.ndarray


def _ls(alpha: np.ndarray, beta: np.ndarray, s: int, bnorm: float) -> tuple[np.ndarray, float]:
    # min_y ‖ bnorm e1 − T̄ y ‖ with T̄ the (s+1)×s tridiagonal of s Lanczos steps.
    T = np.zeros((s + 1, s))
    T[np.arange(s), np.arange(s)] = alpha[:s]
    T[np.arange(1, s + 1), np.arange(s)] = beta[:s]
    T[np.arange(s - 1), np.arange(1, s)] = beta[: s - 1]
    rhs = np.zeros(s + 1)
    rhs[0] = bnorm
    y = np.linalg.lstsq(T, rhs, rcond=None)[0]
    return y, float(np.linalg.norm(rhs - T @ y))


def minres(matvec: MatVec, b: np.ndarray, rtol: float = 1e-10, maxiter: int = 100) -> Minres:
    """MINRES for K symmetric systems H_k x_k = b_k at once: x_k minimises ‖b_k − H_k x‖ over the
    Krylov space of b_k, grown until ‖b − Hx‖ ≤ rtol‖b‖ or maxiter steps.

    Args:
        matvec: V [K, P] → H V.
        b: [K, P] right-hand sides.
        rtol: relative residual at which an operator stops.
        maxiter: most Lanczos steps (≤ P).

    Returns:
        :class:`Minres`.
    """
    b = np.asarray(b, dtype=np.float64)
    K, P = b.shape
    m = int(min(maxiter, P))
    bnorm = np.linalg.norm(b, axis=1)
    x = np.zeros((K, P))
    res = np.zeros(K)
    its = np.zeros(K, dtype=np.int64)
    live = np.flatnonzero(bnorm > 0)
    if live.size == 0:
        return Minres(x=x, residual=res, iterations=its)
    Kl = live.size
    V = np.zeros((Kl, m + 1, P))
    V[:, 0] = b[live] / bnorm[live, None]
    alpha = np.zeros((Kl, m))
    beta = np.zeros((Kl, m))
    done = np.zeros(Kl, dtype=bool)
    steps = np.zeros(Kl, dtype=np.int64)
    scale = np.zeros(Kl)
    full = np.zeros((K, P))
    for j in range(m):
        act = ~done
        full[live] = V[:, j]
        w = np.asarray(matvec(full), dtype=np.float64)[live]
        steps[act] = j + 1
        closed = act & ~_extend(V, j, w, act, alpha, beta, scale, 1e-12)
        for i in np.flatnonzero(act):
            y, r = _ls(alpha[i], beta[i], j + 1, bnorm[live[i]])
            res[live[i]] = r / bnorm[live[i]]
            if res[live[i]] <= rtol or closed[i] or j + 1 == m:
                done[i] = True
                x[live[i]] = y @ V[i, : j + 1]
        if done.all():
            break
    its[live] = steps
    return Minres(x=x, residual=res, iterations=its)


def signs(theta: np.ndarray, residual: np.ndarray, tau: float, exact: bool) -> tuple[int, int]:
    """(negative, undecided): how many eigenvalues a Lanczos run proves negative, and how many of
    its Ritz values it cannot sign.

    The rule, for Ritz values θ_1 ≤ … ≤ θ_s of a run on H with rounding bound τ
    (:func:`rounding_bound`) and residuals r_i = ‖Hu_i − θ_i u_i‖:

    * **negative**: θ_j < −τ. By Cauchy interlacing the j-th smallest eigenvalue of the exact
      projection VᵀHV is ≥ λ_j(H); by Weyl it lies within τ of θ_j; so λ_j(H) ≤ θ_j + τ < 0. This
      needs no convergence at all: the count is a lower bound on the index, whatever the residuals.
    * **undecided**: not negative, but θ_i − r_i − τ ≤ 0, i.e. the interval [θ_i − r_i − τ,
      θ_i + r_i + τ], which holds an eigenvalue of H (the residual bound, widened by the rounding),
      reaches zero or below: the solver cannot say that eigenvalue is positive.

    A fixed fraction of λ_max (the rule before) throws away what the solver knows: a float64 run
    resolves a curvature of 1e-6·λ_max, and no threshold that scales with λ_max alone can tell
    rounding noise in float32 products from a real negative curvature. Where Lanczos did not
    span the whole space (``exact`` False), unconverged Ritz values may hide more negative
    eigenvalues: the index is then a lower bound, as the certificate says.
    """
    neg = theta < -tau
    und = ~neg & (theta - residual - tau <= 0)
    return int(neg.sum()), int(und.sum())


def damped_solve(matvec: MatVec, b: np.ndarray, mu: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, Lanczos]:
    """Levenberg–Marquardt solutions of K symmetric systems: x_k minimises ‖H_k x − b_k‖² + μ_k‖x‖²
    over the Krylov space K_m(H_k, b_k), i.e. x = (H² + μI)⁻¹ H b restricted to that space.

    With the Lanczos basis V of b and H V_m = V_{m+1} T̄, the problem is the small one
    min_y ‖T̄ y − ‖b‖ e_1‖² + μ‖y‖², solved by the SVD of T̄ (m × m work, nothing next to an
    HVP). μ → 0 gives MINRES's least-squares solution; μ > 0 keeps the step finite where H is
    singular or nearly so, which is what Newton on degenerate critical manifolds needs
    (Yamashita & Fukushima 2001; Fan & Yuan 2005: μ ∝ ‖g‖ keeps quadratic convergence to
    non-isolated solutions under a local error bound).

    Args:
        matvec: V [K, P] → H V.
        b: [K, P] right-hand sides (no zero row).
        mu: [K] damping, ≥ 0.
        m: Lanczos steps (≤ P).

    Returns:
        ``(x [K, P], predicted [K], lz)``: the solutions, the model's decrease
        ‖b‖² − ‖H x − b‖² of each, and the Lanczos run (kept basis) for re-solving with another μ
        (:func:`damped_resolve`).
    """
    lz = lanczos(matvec, b, m, keep_basis=True)
    bn = np.linalg.norm(b, axis=1)
    x, pred = damped_resolve(lz, bn, mu)
    return x, pred, lz


def damped_resolve(lz: Lanczos, bnorm: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The solutions of :func:`damped_solve` for new damping ``mu`` [K] on the same Lanczos run."""
    K = lz.steps.size
    x = np.zeros((K, lz.basis.shape[2]))
    pred = np.zeros(K)
    for k in range(K):
        s = int(lz.steps[k])
        T = np.zeros((s + 1, s))
        T[np.arange(s), np.arange(s)] = lz.alpha[k, :s]
        T[np.arange(1, s + 1), np.arange(s)] = lz.beta[k, :s]
        T[np.arange(s - 1), np.arange(1, s)] = lz.beta[k, : s - 1]
        U, S, Wt = np.linalg.svd(T, full_matrices=False)
        y = Wt.T @ (S * (bnorm[k] * U[0]) / (S ** 2 + mu[k]))
        r = T @ y
        r[0] -= bnorm[k]
        pred[k] = bnorm[k] ** 2 - r @ r
        x[k] = y @ lz.basis[k, :s]
    return x, pred
