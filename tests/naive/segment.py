"""Slow, obvious references of the segmentation (as stumpy keeps tests/naive.py).

Independent of the package: plain NumPy loops that say what :func:`fasttrap.analysis.traps.segment` and its
Otsu split compute. The tests and ``benchmarks/bench_traps.py`` compare the Numba code against them.
"""

from __future__ import annotations

import numpy as np


def reference_otsu(v):
    x = np.sort(np.log(v[np.isfinite(v) & (v > 0)]))
    n = x.size
    if n < 8 or x.var() <= 0:
        return np.nan, 0.0
    best, split = -1.0, np.nan
    for i in range(n - 1):
        a, b = x[: i + 1], x[i + 1:]
        w0 = a.size / n
        sb = w0 * (1 - w0) * (a.mean() - b.mean()) ** 2
        if sb > best and x[i] < x[i + 1]:
            best, split = sb, 0.5 * (x[i] + x[i + 1])
    return split, best / x.var()


def reference_segment(e2e, yard, loss, G, invalid, dist_ratio=2.0, peak_window=0, confirm=True, loss_step=1e-3,
                      loss_floor=1e-8, G_step=0.1, G_floor=1e-12, adaptive=True, bimodality=0.8):
    """The documented rule, written plainly (slow)."""
    n = len(e2e)
    invalid = np.asarray(invalid, bool) | ~np.isfinite(loss) | ~np.isfinite(G)
    pair = (~invalid) & np.r_[False, ~invalid[:-1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(pair & (yard > 0), e2e / yard, np.nan)
        dls = np.where(pair, np.abs(np.diff(loss, prepend=np.nan)) / (np.abs(np.r_[np.nan, loss[:-1]]) + loss_floor), np.nan)
        dgs = np.where(pair, np.abs(np.diff(np.log(G + G_floor), prepend=np.nan)), np.nan)
    ratio[0] = dls[0] = dgs[0] = np.nan
    if adaptive:
        split, share = reference_otsu(ratio)
        if share >= bimodality and np.exp(split) > dist_ratio:
            dist_ratio = np.exp(split)
    out = []
    for t in range(1, n):
        if invalid[t] or invalid[t - 1]:
            if invalid[t] != invalid[t - 1]:
                out.append(t)
            continue
        r = ratio[t]
        if not r > dist_ratio:
            continue
        if peak_window > 0:
            nb = [u for u in range(max(1, t - peak_window), min(n - 1, t + peak_window) + 1) if u != t]
            if any(np.isfinite(ratio[u]) and (ratio[u] > r or (ratio[u] == r and u < t)) for u in nb):
                continue
        if confirm and not (dls[t] > loss_step or dgs[t] > G_step):
            continue
        out.append(t)
    return np.array(out, dtype=np.int64)


# ---------------------------------------------------------------- planted traps ---------------
