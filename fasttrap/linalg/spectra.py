"""Spectra for K models at once: the Hessian's extreme eigenvalues and density, the Jacobian's ESD.

The Hessian functions run on the batched compiled HVP of the full-batch loss (:mod:`fasttrap.linalg.hessian`,
float64), so one Krylov step costs one batched HVP call for all K models, and no Hessian is ever
formed:

* :func:`hessian_eigs` — the k largest (``which="LA"``) or smallest (``"SA"``) eigenvalues by
  Lanczos with full reorthogonalisation, with the residual norm of each Ritz pair, so that a
  reader can see which ones converged;
* :func:`hessian_density` — stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; the method of
  PyHessian and of Ghorbani et al. 2019): nodes and weights per Rademacher probe, whose average is
  the spectral density; Σ weights·node / probes × P is Hutchinson's estimate of tr(H).

The data-dependent Jacobian (the input→output Jacobian J_i = ∂f(x_i)/∂x_i of every sample, stacked
as the rows of 𝒥 [N, C·n0], as in the WeightWatcher authors' draft on "funneled" landscapes):

* :func:`jacobian_esd` — every non-zero eigenvalue of 𝒥ᵀ𝒥, by a dense symmetric eigensolver on
  the smaller of 𝒥ᵀ𝒥 (accumulated block by block in the compiled core) and the Gram 𝒥𝒥ᵀ;
* :func:`jacobian_density` — the same spectrum by SLQ, for sizes where a dense C·n0 × C·n0 matrix
  does not fit (each Lanczos step recomputes 𝒥 block by block: memory O(block·C·n0)).

The same Lanczos code serves the certification of endpoints (:mod:`fasttrap.analysis.certify`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model.mlp import MLP
from ..ops import spectra as spectra_ops
from ..ops import resolve_for
from ..ops.validate import check_dataset, check_inputs, check_int, check_mlp, check_model, check_theta
from .hessian import full_batch_hvp
from .lanczos import lanczos, ritz, slq


@dataclass
class HessianEigs:
    """The result of :func:`hessian_eigs`.

    Attributes:
        values: [K, k] eigenvalues, descending for ``"LA"``, ascending for ``"SA"``.
        residuals: [K, k] ‖H u − λ u‖ of each Ritz pair (‖u‖ = 1).
        steps: [K] Lanczos steps taken.
    """

    values: np.ndarray
    residuals: np.ndarray
    steps: np.ndarray


@dataclass
class SpectralDensity:
    """An SLQ spectral density of K symmetric operators of dimension ``dim``.

    Attributes:
        nodes: [K, probes, m] Ritz values per probe (unused slots 0, with weight 0).
        weights: [K, probes, m] their weights; each probe's sum to 1.
        trace: [K] Hutchinson's estimate of the trace: dim × the mean first moment.
        dim: the operators' dimension.
    """

    nodes: np.ndarray
    weights: np.ndarray
    trace: np.ndarray
    dim: int

    def moment(self, p: int) -> np.ndarray:
        """[K] the estimate of tr(Aᵖ)/dim."""
        return (self.weights * self.nodes ** p).sum(axis=(1, 2)) / self.nodes.shape[1]

    def smoothed(self, grid: Any, sigma: float) -> np.ndarray:
        """[K, G] the density on ``grid`` [G], each node a Gaussian of width ``sigma`` (integrates to 1)."""
        g = np.asarray(grid, dtype=np.float64)
        if not sigma > 0:
            raise ValueError(f"sigma: must be > 0, got {sigma}")
        z = (g[None, None, None, :] - self.nodes[..., None]) / sigma
        dens = (self.weights[..., None] * np.exp(-0.5 * z * z)).sum(axis=2).mean(axis=1)
        return dens / (sigma * np.sqrt(2 * np.pi))


@dataclass
class HessianDensity(SpectralDensity):
    """The result of :func:`hessian_density`: a :class:`SpectralDensity` of the Hessian (dim = P)."""

    @property
    def n_params(self) -> int:
        """P, the Hessian's dimension."""
        return self.dim


def _inputs(mlp: Any, theta: Any, X: Any, y: Any) -> tuple[MLP, np.ndarray, np.ndarray, np.ndarray]:
    mlp = check_model(mlp)
    th = np.ascontiguousarray(check_theta(mlp, theta, "theta"), dtype=np.float64)
    Xd, yd = check_dataset(mlp, X, y, np.dtype(np.float64), name="X")
    return mlp, th, Xd, yd


def hessian_eigs(mlp: MLP, theta: Any, X: Any, y: Any, k: int = 10, which: str = "LA", *, steps: int | None = None,
                 block: int = 8192, seed: int = 0, backend: str = "auto") -> HessianEigs:
    """The k extreme eigenvalues of the full-batch Hessian at each of K parameter rows.

    Args:
        mlp: the network.
        theta: [K, P] parameter rows (computed in float64).
        X: [N, n0] inputs; y: [N] labels (the loss is their mean).
        k: how many eigenvalues.
        which: ``"LA"`` (largest algebraic, descending) or ``"SA"`` (smallest, ascending).
        steps: Lanczos steps (default min(P, max(3k, 40)); more steps converge more of the interior).
        block: rows per compiled HVP call.
        seed: seed of the start vectors.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.

    Returns:
        :class:`HessianEigs`.
    """
    mlp, th, Xd, yd = _inputs(mlp, theta, X, y)
    P = th.shape[1]
    k = check_int(k, "k", lo=1, hi=P)
    if which not in ("LA", "SA"):
        raise ValueError(f"which: expected 'LA' or 'SA', got {which!r}")
    m = check_int(min(P, max(3 * k, 40)) if steps is None else steps, "steps", lo=k, hi=P)
    H = full_batch_hvp(mlp, th, Xd, yd, check_int(block, "block", lo=1), resolve_for(mlp, backend))
    # restart where the Krylov space closes: a repeated eigenvalue (a zero cluster) is seen once
    # per start vector, and without restarts the values after it would shift and the last be NaN
    lz = lanczos(H, np.random.default_rng([seed, 17]).standard_normal(th.shape), m, restart=seed)
    K = th.shape[0]
    vals, res = np.full((K, k), np.nan), np.full((K, k), np.nan)
    for i in range(K):
        t, _, r = ritz(lz, i)
        sel = np.arange(t.size)[::-1][:k] if which == "LA" else np.arange(t.size)[:k]
        vals[i, : sel.size], res[i, : sel.size] = t[sel], r[sel]
    return HessianEigs(values=vals, residuals=res, steps=lz.steps.copy())


def hessian_density(mlp: MLP, theta: Any, X: Any, y: Any, *, probes: int = 4, steps: int = 60, block: int = 8192,
                    seed: int = 0, backend: str = "auto") -> HessianDensity:
    """The spectral density of the full-batch Hessian at each of K parameter rows, by SLQ.

    Args:
        mlp, theta, X, y, block, backend: as :func:`hessian_eigs`.
        probes: Rademacher probe vectors per model (all K × probes run as one batch).
        steps: Lanczos steps per probe (at most P).
        seed: seed of the probes.

    Returns:
        :class:`HessianDensity` (nodes and weights per model and probe, the trace estimate).
    """
    mlp, th, Xd, yd = _inputs(mlp, theta, X, y)
    K, P = th.shape
    probes = check_int(probes, "probes", lo=1)
    m = check_int(steps, "steps", lo=1, hi=P)
    rep = np.repeat(th, probes, axis=0)                    # probe r of model k at row k·probes + r
    H = full_batch_hvp(mlp, rep, Xd, yd, check_int(block, "block", lo=1), resolve_for(mlp, backend))
    nodes, weights = slq(H, K, P, m, probes, seed)
    trace = (weights * nodes).sum(axis=(1, 2)) / probes * P
    return HessianDensity(nodes=nodes, weights=weights, trace=trace, dim=P)


def _jac_inputs(mlp: Any, theta: Any, X: Any) -> tuple[MLP, np.ndarray, np.ndarray]:
    mlp = check_mlp(mlp)
    th = check_theta(mlp, theta, "theta")
    return mlp, th, check_inputs(mlp, X, th.dtype, name="X")


def symmetric_eigvalsh(M: Any) -> np.ndarray:
    """Ascending eigenvalues of a symmetric matrix, float64, by torch's LAPACK (see :func:`jacobian_esd`)."""
    import torch

    return torch.linalg.eigvalsh(torch.from_numpy(np.ascontiguousarray(M, dtype=np.float64))).numpy()


def jacobian_esd(mlp: MLP, theta: Any, X: Any, *, block: int = 256, backend: str = "auto") -> np.ndarray:
    """The non-zero eigenvalues of 𝒥ᵀ𝒥 for each of K models, descending.

    𝒥 [N, C·n0] stacks vec J_i, J_i = ∂f(x_i)/∂x_i the input→output Jacobian of the outputs f = Z_L
    (:func:`fasttrap.input_jacobian`). Its rank is at most m = min(N, C·n0), so the spectrum is
    taken from the smaller symmetric matrix: 𝒥ᵀ𝒥 [C·n0, C·n0] accumulated over blocks of rows by a
    SYRK (:func:`fasttrap.ops.jacobian_gram`) when N ≥ C·n0, else the Gram 𝒥𝒥ᵀ [N, N] of the whole 𝒥
    (which is then smaller than 𝒥ᵀ𝒥). Either is diagonalised in float64 by LAPACK's ``syevd``, through
    ``torch.linalg.eigvalsh`` (on this project's 2-core CPU torch's LAPACK does a 7,840² matrix in
    12 s, NumPy's and SciPy's OpenBLAS in 25–28 s: benchmarks/results/cpu_eigvalsh.txt).
    Eigenvalues below zero by rounding are set to 0.

    Args:
        mlp: the network.
        theta: θ [K, P] (the Jacobian is computed in θ's dtype; float32 loses eigenvalues below
            about 1e-7 λ_max).
        X: [N, n0] the inputs.
        block: rows per block of the accumulation.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.

    Returns:
        [K, m] eigenvalues, descending, m = min(N, C·n0).
    """
    mlp, th, Xa = _jac_inputs(mlp, theta, X)
    block = check_int(block, "block", lo=1, hi=1 << 20)
    K, N, kd = th.shape[0], Xa.shape[0], mlp.n_out * mlp.n_in
    out = np.empty((K, min(N, kd)))
    for k in range(K):          # one model at a time: a dense kd × kd matrix is big
        if N >= kd:
            M = np.asarray(spectra_ops.jacobian_gram(mlp, th[k:k + 1], Xa, block, backend=backend))[0]
        else:
            J = np.asarray(spectra_ops.input_jacobian(mlp, th[k:k + 1], Xa, backend=backend))[0].reshape(N, kd)
            J = J.astype(np.float64, copy=False)
            M = J @ J.T
        out[k] = np.maximum(symmetric_eigvalsh(M)[::-1], 0.0)
    return out


def jacobian_density(mlp: MLP, theta: Any, X: Any, *, probes: int = 4, steps: int = 60, block: int = 256,
                     seed: int = 0, backend: str = "auto") -> SpectralDensity:
    """The spectral density of 𝒥ᵀ𝒥 [C·n0, C·n0] for each of K models, by SLQ, never forming it.

    Each Lanczos step applies v ↦ 𝒥ᵀ(𝒥 v) = Σ_i vec J_i ⟨vec J_i, v⟩ block by block, recomputing
    the blocks of 𝒥 with the compiled :func:`fasttrap.input_jacobian`: memory O(block·C·n0), cost
    per step one pass of the Jacobian over the data. Use it where :func:`jacobian_esd`'s dense
    matrix would not fit (C·n0 in the tens of thousands, e.g. CIFAR-100).

    Args:
        mlp, theta, X, block, backend: as :func:`jacobian_esd` (computed in float64).
        probes: Rademacher probes per model.
        steps: Lanczos steps per probe (at most C·n0).
        seed: seed of the probes.

    Returns:
        :class:`SpectralDensity` with dim = C·n0.
    """
    mlp, th, Xa = _jac_inputs(mlp, theta, X)
    th = np.ascontiguousarray(th, dtype=np.float64)
    Xa = np.ascontiguousarray(Xa, dtype=np.float64)
    block = check_int(block, "block", lo=1, hi=1 << 20)
    probes = check_int(probes, "probes", lo=1)
    K, N, kd = th.shape[0], Xa.shape[0], mlp.n_out * mlp.n_in
    m = check_int(steps, "steps", lo=1, hi=kd)

    def matvec(V: np.ndarray) -> np.ndarray:         # V [K·probes, kd]
        out = np.zeros_like(V)
        for k in range(K):
            rows = slice(k * probes, (k + 1) * probes)
            for r0 in range(0, N, block):
                J = np.asarray(spectra_ops.input_jacobian(mlp, th[k:k + 1], Xa[r0:r0 + block],
                                                          backend=backend))[0].reshape(-1, kd)
                out[rows] += (V[rows] @ J.T) @ J
        return out

    nodes, weights = slq(matvec, K, kd, m, probes, seed)
    trace = (weights * nodes).sum(axis=(1, 2)) / probes * kd
    return SpectralDensity(nodes=nodes, weights=weights, trace=trace, dim=kd)
