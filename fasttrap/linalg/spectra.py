"""The Hessian's spectrum for K models at once: extreme eigenvalues and the spectral density.

Both run on the batched compiled HVP of the full-batch loss (:mod:`fasttrap.linalg.hessian`,
float64), so one Krylov step costs one batched HVP call for all K models, and no Hessian is ever
formed:

* :func:`hessian_eigs` — the k largest (``which="LA"``) or smallest (``"SA"``) eigenvalues by
  Lanczos with full reorthogonalisation, with the residual norm of each Ritz pair, so that a
  reader can see which ones converged;
* :func:`hessian_density` — stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; the method of
  PyHessian and of Ghorbani et al. 2019): nodes and weights per Rademacher probe, whose average is
  the spectral density; Σ weights·node / probes × P is Hutchinson's estimate of tr(H).

The same Lanczos code serves the certification of endpoints (:mod:`fasttrap.analysis.certify`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model.mlp import MLP
from ..ops.backend import resolve
from ..ops.validate import check_dataset, check_int, check_mlp, check_theta
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
class HessianDensity:
    """The result of :func:`hessian_density`.

    Attributes:
        nodes: [K, probes, m] Ritz values per probe (unused slots 0, with weight 0).
        weights: [K, probes, m] their weights; each probe's sum to 1.
        trace: [K] Hutchinson's estimate of tr(H): P × the mean first moment.
        n_params: P.
    """

    nodes: np.ndarray
    weights: np.ndarray
    trace: np.ndarray
    n_params: int

    def moment(self, p: int) -> np.ndarray:
        """[K] the estimate of tr(Hᵖ)/P."""
        return (self.weights * self.nodes ** p).sum(axis=(1, 2)) / self.nodes.shape[1]

    def smoothed(self, grid: Any, sigma: float) -> np.ndarray:
        """[K, G] the density on ``grid`` [G], each node a Gaussian of width ``sigma`` (integrates to 1)."""
        g = np.asarray(grid, dtype=np.float64)
        if not sigma > 0:
            raise ValueError(f"sigma: must be > 0, got {sigma}")
        z = (g[None, None, None, :] - self.nodes[..., None]) / sigma
        dens = (self.weights[..., None] * np.exp(-0.5 * z * z)).sum(axis=2).mean(axis=1)
        return dens / (sigma * np.sqrt(2 * np.pi))


def _inputs(mlp: Any, theta: Any, X: Any, y: Any) -> tuple[MLP, np.ndarray, np.ndarray, np.ndarray]:
    mlp = check_mlp(mlp)
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
    H = full_batch_hvp(mlp, th, Xd, yd, check_int(block, "block", lo=1), resolve(backend))
    lz = lanczos(H, np.random.default_rng([seed, 17]).standard_normal(th.shape), m)
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
    H = full_batch_hvp(mlp, rep, Xd, yd, check_int(block, "block", lo=1), resolve(backend))
    nodes, weights = slq(H, K, P, m, probes, seed)
    trace = (weights * nodes).sum(axis=(1, 2)) / probes * P
    return HessianDensity(nodes=nodes, weights=weights, trace=trace, n_params=P)
