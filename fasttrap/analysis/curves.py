"""Readings of a training curve: where its phases of learning lie."""

from __future__ import annotations

from typing import Any

import numpy as np


def regimes(steps: np.ndarray, loss: np.ndarray) -> dict[str, Any]:
    """Where the training loss stops falling fast.

    The loss's decrease per decade of steps, d(loss)/d(log10 step), is computed between the
    log-spaced curve points; the fast phase ends at the last point where that rate is still at
    least a quarter of its maximum. Returns the boundary step and the rates (a reading, not a fit).
    """
    s = np.asarray(steps, float)
    L = np.asarray(loss, float)
    keep = (s > 0) & np.isfinite(L)
    s, L = s[keep], L[keep]
    if s.size < 4:
        return {"fast_until": None, "note": "too few curve points"}
    rate = -np.diff(L) / np.diff(np.log10(s))
    mid = np.sqrt(s[1:] * s[:-1])
    peak = int(np.nanargmax(rate))
    fast = np.flatnonzero(rate >= 0.25 * rate[peak])
    end = int(fast[fast >= peak].max()) if fast.size else peak
    return {"fast_until": float(s[end + 1]), "peak_rate_at": float(mid[peak]), "peak_rate": float(rate[peak]),
            "final_rate": float(rate[-1])}


