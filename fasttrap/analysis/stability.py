"""Did an inner descent stay honest? Flags for runs that blew up and came back, or collapsed. (The
step sizes from the curvature, lr = c/λ_max², are the descent's own: :mod:`fasttrap.dynamics.stepsize`.)

* **Blow-ups that recover.** A run whose G rose far above its start (default 10³×) at some recorded
  step, or whose weights grew by more than 10× in norm, left the basin it started in, whatever its
  final status says: :func:`flags` marks it ``blowup``, and the analysis does not count it.
* **Collapsed endpoints.** An endpoint at chance accuracy, or with loss ≥ 0.98·ln(classes), from a
  start clearly away from that (loss below 0.8·ln(classes) and accuracy above chance), left a
  trained network for the collapsed one: ``collapsed``. Early start points that have barely left
  the trivial saddle (loss 2.2 of ln 10 = 2.30) and descend back to it are not flagged: that saddle
  is the one trap of the first regime.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def flags(G_trace: Any, G_start: Any, theta0: Any, theta: Any, loss0: Any, acc0: Any, loss: Any, acc: Any,
          n_classes: int, blowup: float = 1e3, norm_growth: float = 10.0) -> dict[str, np.ndarray]:
    """Blow-up and collapse flags of K inner runs.

    Args:
        G_trace: [K, T'] G along each run (NaN after it stopped); G_start: [K].
        theta0, theta: [K, P] start and end points.
        loss0, acc0, loss, acc: [K] full-set loss and accuracy at the start and at the end.
        n_classes: classes of the task (chance accuracy 1/n, collapsed loss ln n).
        blowup: G above this multiple of its start at any recorded step is a blow-up.
        norm_growth: ‖θ*‖/‖θ0‖ above this is a blow-up too.

    Returns:
        ``blowup``, ``collapsed`` [K] bool, and ``G_peak_ratio``, ``norm_ratio`` [K].
    """
    tr = np.asarray(G_trace, dtype=np.float64)
    G0 = np.asarray(G_start, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        peak = np.where(np.isfinite(tr).any(1), np.nanmax(np.where(np.isfinite(tr), tr, -np.inf), axis=1), np.nan)
        peak_ratio = peak / G0
        nr = np.linalg.norm(np.asarray(theta, np.float64), axis=1) / np.linalg.norm(np.asarray(theta0, np.float64), axis=1)
    blow = (peak_ratio > blowup) | (nr > norm_growth)
    chance = 1.0 / n_classes + 0.02
    lnc = 0.98 * np.log(n_classes)
    bad_end = (np.asarray(acc) <= chance) | (np.asarray(loss) >= lnc)
    near_start = (np.asarray(acc0) <= chance) | (np.asarray(loss0) >= 0.8 * np.log(n_classes))
    return {"blowup": np.nan_to_num(blow, nan=False).astype(bool), "collapsed": bad_end & ~near_start,
            "G_peak_ratio": peak_ratio, "norm_ratio": nr}
