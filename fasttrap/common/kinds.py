"""The verdict on an endpoint from its certificate, a rule of its own so that the certificate
(:mod:`fasttrap.analysis.certify`) and its dense twin (:mod:`fasttrap.reference.certify`) share it.
It sits in ``common/``, the lowest floor, because the twin sits below ``analysis/``: imports only
point down."""

from __future__ import annotations

import numpy as np

KINDS = ("minimum", "degenerate_minimum", "saddle", "gradient_flat", "not_converged")
CRITICAL_KINDS = ("minimum", "degenerate_minimum", "saddle")


def classify(grad_sq: np.ndarray, index: np.ndarray, negative_fraction: np.ndarray, gf_residual: np.ndarray,
             grad_tol: float = 1e-10, gf_cut: float = 0.9, undecided: np.ndarray | None = None) -> np.ndarray:
    """The kind of each endpoint by the rule of :mod:`fasttrap.analysis.certify`; arrays [K] → [K] str.

    A critical point (‖∇L‖² < grad_tol) is a ``saddle`` when some eigenvalue is proven negative
    (``index`` > 0, or SLQ mass proven below zero), a ``minimum`` when none is and no eigenvalue
    was too close to zero to sign (``undecided`` = 0; None: not counted, as before that count
    existed), and a ``degenerate_minimum`` otherwise: positive semi-definite to within the
    solver's error, with flat directions (the GL(p) orbits of linear nets, the rescalings of ReLU
    nets). Second order cannot tell such a point from a higher-order saddle, and the kind says so.
    """
    crit = grad_sq < grad_tol
    saddle = (index > 0) | (negative_fraction > 0)
    flat = np.zeros(np.shape(grad_sq), bool) if undecided is None else np.asarray(undecided) > 0
    kind = np.where(crit, np.where(saddle, "saddle", np.where(flat, "degenerate_minimum", "minimum")),
                    np.where(gf_residual >= gf_cut, "gradient_flat", "not_converged"))
    return kind.astype("U18")
