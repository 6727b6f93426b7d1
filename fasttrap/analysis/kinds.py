"""The verdict on an endpoint from its certificate, a rule of its own so that the certificate and
its dense twin (:mod:`fasttrap.reference.certify`) share it without importing each other."""

from __future__ import annotations

import numpy as np

KINDS = ("minimum", "saddle", "gradient_flat", "not_converged")


def classify(grad_sq: np.ndarray, index: np.ndarray, negative_fraction: np.ndarray, gf_residual: np.ndarray,
             grad_tol: float = 1e-10, gf_cut: float = 0.9) -> np.ndarray:
    """The kind of each endpoint by the rule of :mod:`fasttrap.analysis.certify`; arrays [K] → [K] str."""
    crit = grad_sq < grad_tol
    saddle = (index > 0) | (negative_fraction > 0)
    kind = np.where(crit, np.where(saddle, "saddle", "minimum"),
                    np.where(gf_residual >= gf_cut, "gradient_flat", "not_converged"))
    return kind.astype("U13")
