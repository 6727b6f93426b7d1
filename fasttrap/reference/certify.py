"""Twin of :func:`fasttrap.certify`: the dense Hessian from torch.func and ``eigh``, for tiny nets.

Same name and signature as the op. Everything is exact up to float64 rounding: the whole spectrum
(so the index counts every eigenvalue proven negative, with no cap, and ``undecided`` every
eigenvalue within the error bound of zero, multiplicities included), the negative fraction as a
count over P, and the gradient-flat residual from the least-squares solution of H p = −g (the limit
MINRES reaches). It forms a P × P matrix per model: use it on nets with a few hundred parameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..common.kinds import classify
from ..model.mlp import MLP
from .common import as_tensor, losses, outputs


def dense_hessian(mlp: MLP, theta_row: Any, X: Any, y: Any) -> tuple[float, np.ndarray, np.ndarray]:
    """(loss, ∇L [P], H [P, P]) of the mean loss over all rows at one parameter row, float64."""
    t = as_tensor(theta_row, torch.float64).detach().reshape(-1)
    Xt, yt = as_tensor(X, torch.float64), as_tensor(y, torch.int64)

    def L(u: torch.Tensor) -> torch.Tensor:
        return losses(mlp, outputs(mlp, u[None], Xt), yt)[0]

    H = torch.func.hessian(L)(t)
    g = torch.func.grad(L)(t)
    return float(L(t)), g.numpy(), H.numpy()


def certify(mlp: MLP, theta: Any, X: Any, y: Any, *, grad_tol: float = 1e-10, safety: float = 10.0,
            eps: float | None = None, gf_cut: float = 0.9, k: int = 8, k_max: int | None = None,
            lanczos_steps: int = 80, slq_probes: int = 2, slq_steps: int = 30, minres_tol: float = 1e-10,
            minres_iters: int = 100, block: int = 8192, seed: int = 0) -> dict[str, np.ndarray]:
    """Dense certificates of K endpoints: the arrays of :class:`fasttrap.analysis.certify.Certificate`.

    The sign rule is the op's with the dense error bound (and, at critical points, the same shift
    ‖H(θ + p) − H(θ)‖₂ over the damped Newton correction p = −(H² + μI)⁻¹Hg, μ = ‖g‖·‖H‖, here
    exact): ``eigvalsh`` of the symmetrised H is
    backward stable, so each computed eigenvalue lies within ‖H − Hᵀ‖₂/2 + O(u)‖H‖ of one of the
    H that autodiff would give in exact arithmetic; τ = safety·max(‖H − Hᵀ‖₂, u·‖H‖·√P). An
    eigenvalue below −τ is negative; one within τ of zero is undecided. The Krylov settings (k,
    k_max, lanczos_steps, slq_*, minres_*, block, seed) are accepted for the shared signature and
    have no effect: the dense spectrum is exact.
    """
    th = np.asarray(as_tensor(theta, torch.float64))
    K, P = th.shape
    out: dict[str, np.ndarray] = {n: np.zeros(K) for n in ("grad_sq", "loss", "lambda_min", "lambda_max",
                                                          "negative_fraction", "gf_residual")}
    out["index"] = np.zeros(K, dtype=np.int64)
    out["undecided"] = np.zeros(K, dtype=np.int64)
    out["tau"] = np.full(K, np.nan)
    out["shift"] = np.zeros(K) if eps is None else np.full(K, np.nan)
    u = np.finfo(np.float64).eps / 2
    for i in range(K):
        loss, g, H = dense_hessian(mlp, th[i], X, y)
        lam = np.linalg.eigvalsh((H + H.T) / 2)
        out["loss"][i], out["grad_sq"][i] = loss, float(g @ g)
        out["lambda_min"][i], out["lambda_max"][i] = lam[0], lam[-1]
        if eps is not None:
            neg = lam < -eps * lam[-1]
        else:
            tau = safety * max(np.linalg.norm(H - H.T, 2), u * np.abs(lam).max() * np.sqrt(P))
            if g @ g < grad_tol:        # near a critical point: widen by how far the spectrum moves to it
                Hs = (H + H.T) / 2
                mu = np.sqrt(g @ g) * np.abs(lam).max()
                p = -np.linalg.solve(Hs @ Hs + mu * np.eye(P), Hs @ g)
                out["shift"][i] = np.linalg.norm(dense_hessian(mlp, th[i] + p, X, y)[2] - H, 2)
                tau += out["shift"][i]
            neg = lam < -tau
            out["tau"][i] = tau
            out["undecided"][i] = int((np.abs(lam) <= tau).sum())
        out["index"][i] = int(neg.sum())
        out["negative_fraction"][i] = neg.mean()
        gn = np.linalg.norm(g)
        if gn > 0:
            p = np.linalg.lstsq(H, -g, rcond=None)[0]
            out["gf_residual"][i] = np.linalg.norm(H @ p + g) / gn
    out["kind"] = classify(out["grad_sq"], out["index"], out["negative_fraction"], out["gf_residual"], grad_tol, gf_cut,
                           undecided=None if eps is not None else out["undecided"])
    return out
