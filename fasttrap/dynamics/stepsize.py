"""Step sizes for descent on G from the curvature.

Near a critical point ∇²G = H² + Σ_i g_i ∇²g_i ≈ H², so gradient descent on G is linearly stable only
for lr < 2/λ_max(H)². :func:`auto_lr` sets lr = c/λ_max² with c = 1 (half the limit: a margin for the
curvature changing along the run), the principled form of the regime-dependent learning rate the
reference study tuned by hand; :func:`unstable` flags a fixed lr with lr·λ_max² > 2.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def auto_lr(lam_max: Any, c: float = 1.0) -> np.ndarray:
    """lr = c / λ_max² per start point [K] (c = 1: half the linear-stability limit 2/λ_max²)."""
    lam = np.asarray(lam_max, dtype=np.float64)
    if not c > 0:
        raise ValueError(f"c: must be > 0, got {c}")
    if np.any(~np.isfinite(lam)) or np.any(lam <= 0):
        raise ValueError("lam_max: needs finite, positive largest eigenvalues")
    return c / lam ** 2


def unstable(lr: Any, lam_max: Any) -> np.ndarray:
    """[K] True where a fixed lr exceeds the linear-stability limit of descent on G: lr·λ_max² > 2."""
    return np.asarray(lr, dtype=np.float64) * np.asarray(lam_max, dtype=np.float64) ** 2 > 2.0
