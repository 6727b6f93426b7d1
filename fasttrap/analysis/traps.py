"""Trap analysis: indicator series, segmentation into traps, trapping times.

For one seed's window of outer points θ_0..θ_{n-1} and their inner endpoints θ*_0..θ*_{n-1}:

* :func:`indicators` turns the endpoints into series over the outer index t (loss, accuracy and G at
  θ*_t, the end-to-end distance ‖θ*_t − θ*_{t−1}‖, the start-to-end distance ‖θ*_t − θ_t‖, the outer
  step ‖θ_t − θ_{t−1}‖ used as the yardstick, the inner run's status), and the pairwise distance
  matrix of the endpoints.
* :func:`segment` finds where a new trap begins (Numba).
* :func:`trapping_times` turns boundaries into segment lengths with censoring and flags.

The decision rule of :func:`segment`, at each t ≥ 1 (both endpoints valid):

1. **distance**: the endpoints jumped: ``end_to_end[t] / yardstick[t] > D``. Inside a trap
   consecutive endpoints are (nearly) the same point, so they move far less than the outer path; a
   change of trap moves them by much more than one outer step. ``D = dist_ratio`` unless
   ``adaptive`` and the window's log-ratios are clearly bimodal (Otsu's two-class split explains at
   least ``bimodality`` of their variance) with the split above ``dist_ratio``: then D is the split.
   That case is endpoints that jitter within their traps by more than an outer step (short or noisy
   inner runs): the jitter forms its own cluster, and the boundaries are the cluster of larger
   jumps. A window of jumps only, or of jitter only, is unimodal and keeps ``dist_ratio``.
2. **peak** (if ``peak_window > 0``): the ratio ``end_to_end / yardstick`` is the largest within
   ±peak_window, so a change spread over neighbouring indices yields one boundary.
3. **confirmation** (if ``confirm``): the endpoint loss or G stepped:
   ``|loss[t] − loss[t−1]| / (|loss[t−1]| + loss_floor) > loss_step`` or
   ``|ln(G[t] + G_floor) − ln(G[t−1] + G_floor)| > G_step``. A distance jump with the same loss and G
   to many digits is a move within a flat trap (a valley), not a new trap.

An endpoint whose inner run diverged or went non-finite (``status``) is never compared: a boundary
is placed at it and at the next valid endpoint, and :func:`trapping_times` flags the segments made of
invalid endpoints and censors their neighbours. Nothing invalid is silently counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

try:  # Numba is a dependency; the fallback keeps the module importable (and NUMBA_DISABLE_JIT works)
    from numba import njit
except ImportError:  # pragma: no cover
    def njit(*args: Any, **kwargs: Any) -> Any:
        if args and callable(args[0]):
            return args[0]
        return lambda f: f

VALID_STATUS = ("converged", "max_steps")
INVALID_STATUS = ("diverged", "nonfinite", "interrupted", "blowup", "collapsed", "line_search_failed")

DEFAULTS: dict[str, float | int | bool] = {
    "dist_ratio": 2.0,
    "peak_window": 0,
    "confirm": True,
    "loss_step": 1e-3,
    "loss_floor": 1e-8,
    "G_step": 0.1,
    "G_floor": 1e-12,
    "adaptive": True,
    "bimodality": 0.8,
}


# ------------------------------------------------------------------------------ indicators -----
@dataclass
class Indicators:
    """Series over the outer index t of one window (all arrays [n]).

    Attributes:
        steps: outer step of each point.
        loss_end, acc_end, G_end: at θ*_t on the full training set.
        end_to_end: ‖θ*_t − θ*_{t−1}‖ (NaN at t = 0, and where either endpoint is invalid).
        start_to_end: ‖θ*_t − θ_t‖ (NaN where the endpoint is invalid).
        outer_step: ‖θ_t − θ_{t−1}‖, the yardstick (NaN at t = 0).
        status: the inner run's status (str).
        G_start: G at the start of each inner run (minibatch), when known.
        invalid: True where the endpoint cannot be used (diverged, nonfinite, interrupted, or any
            non-finite value among its indicators).
    """

    steps: np.ndarray
    loss_end: np.ndarray
    acc_end: np.ndarray
    G_end: np.ndarray
    end_to_end: np.ndarray
    start_to_end: np.ndarray
    outer_step: np.ndarray
    status: np.ndarray
    invalid: np.ndarray
    G_start: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def to_dict(self) -> dict[str, np.ndarray]:
        d = {k: getattr(self, k) for k in ("steps", "loss_end", "acc_end", "G_end", "end_to_end", "start_to_end",
                                           "outer_step", "status", "invalid")}
        if self.G_start is not None:
            d["G_start"] = self.G_start
        return d


def _rownorm(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", a, a))


def indicators(theta_outer: Any, theta_end: Any, loss_end: Any, G_end: Any, acc_end: Any | None = None,
               status: Any | None = None, steps: Any | None = None, G_start: Any | None = None) -> Indicators:
    """Indicator series of one window of outer points.

    Args:
        theta_outer: [n, P] the outer points θ_t.
        theta_end: [n, P] their inner endpoints θ*_t.
        loss_end: [n] full-training-set loss at θ*_t.
        G_end: [n] full-training-set G at θ*_t.
        acc_end: [n] accuracy at θ*_t (optional).
        status: [n] inner-run statuses (str); None means all "max_steps".
        steps: [n] outer steps of the points (default 0..n-1).
        G_start: [n] G at the start of each inner run (optional, for plots).

    Returns:
        :class:`Indicators`. Distances are computed in float64.
    """
    th = np.asarray(theta_outer, dtype=np.float64)
    te = np.asarray(theta_end, dtype=np.float64)
    if th.ndim != 2 or te.shape != th.shape:
        raise ValueError(f"theta_outer and theta_end: expected the same [n, P] shape, got {th.shape} and {te.shape}")
    n = th.shape[0]
    if n < 1:
        raise ValueError("theta_outer: needs at least one point")

    def vec(x: Any, name: str, fill: float = np.nan) -> np.ndarray:
        if x is None:
            return np.full(n, fill)
        a = np.asarray(x, dtype=np.float64).reshape(-1)
        if a.shape != (n,):
            raise ValueError(f"{name}: expected shape [{n}], got {list(np.shape(x))}")
        return a

    loss, G, acc = vec(loss_end, "loss_end"), vec(G_end, "G_end"), vec(acc_end, "acc_end")
    st = np.full(n, "max_steps", dtype=object) if status is None else np.asarray(status, dtype=object)
    if st.shape != (n,):
        raise ValueError(f"status: expected shape [{n}], got {list(st.shape)}")
    bad_codes = set(map(str, st)) - set(VALID_STATUS) - set(INVALID_STATUS)
    if bad_codes:
        raise ValueError(f"status: unknown value(s) {sorted(bad_codes)}; expected {VALID_STATUS + INVALID_STATUS}")
    finite_end = np.isfinite(te).all(axis=1)
    invalid = np.isin(st.astype(str), INVALID_STATUS) | ~finite_end | ~np.isfinite(loss) | ~np.isfinite(G)
    e2e = np.full(n, np.nan)
    yard = np.full(n, np.nan)
    if n > 1:
        e2e[1:] = _rownorm(te[1:] - te[:-1])
        yard[1:] = _rownorm(th[1:] - th[:-1])
    s2e = _rownorm(te - th)
    # A distance to an endpoint that cannot be used (diverged, non-finite) is not a measurement.
    s2e[invalid] = np.nan
    e2e[1:][invalid[1:] | invalid[:-1]] = np.nan
    stp = np.arange(n) if steps is None else np.asarray(steps).reshape(-1)
    if stp.shape != (n,):
        raise ValueError(f"steps: expected shape [{n}], got {list(stp.shape)}")
    return Indicators(stp, loss, acc, G, e2e, s2e, yard, st.astype(str), invalid,
                      None if G_start is None else vec(G_start, "G_start"))


def pairwise_distances(points: Any, rtol: float = 1e-6) -> np.ndarray:
    """All pairwise Euclidean distances [n, n] of points [n, P], by GEMM, guarded against cancellation.

    ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b loses every digit when a and b are close relative to their norms
    (endpoints of one trap are). So the points are first centred (the norms shrink to the spread of
    the set), the Gram matrix is one BLAS product, and every pair whose squared distance is below
    ``rtol·(‖a‖² + ‖b‖²)`` (where the formula keeps fewer than about 6 digits) is recomputed from the
    difference directly. Rows with non-finite values give NaN rows and columns.
    """
    X = np.array(points, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"points: expected [n, P], got shape {list(X.shape)}")
    n = X.shape[0]
    ok = np.isfinite(X).all(axis=1)
    D = np.full((n, n), np.nan)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return D
    Y = X[idx] - X[idx].mean(axis=0)
    sq = np.einsum("ij,ij->i", Y, Y)
    G = Y @ Y.T                                             # the one GEMM (NumPy's BLAS)
    d2 = sq[:, None] + sq[None, :] - 2.0 * G
    risky = d2 < rtol * (sq[:, None] + sq[None, :])
    np.fill_diagonal(risky, False)
    ii, jj = np.nonzero(np.triu(risky, 1))
    for a, b in zip(ii, jj):                                # exact for the close pairs
        diff = Y[a] - Y[b]
        d2[a, b] = d2[b, a] = diff @ diff
    np.fill_diagonal(d2, 0.0)
    D[np.ix_(idx, idx)] = np.sqrt(np.maximum(d2, 0.0))
    return D


# ------------------------------------------------------------------------------ segmentation ---
@njit(cache=True)
def _otsu_log(v):  # pragma: no cover - compiled
    """Otsu's two-class split of log(v) over the finite positive values: (split, explained share).

    The split maximises the between-class variance; the share is that variance over the total
    (about 0.64 for one Gaussian cluster, near 1 for two well separated ones)."""
    m = v[np.isfinite(v) & (v > 0.0)]
    n = m.size
    if n < 8:
        return np.nan, 0.0
    x = np.sort(np.log(m))
    total = x.sum()
    mean = total / n
    var = ((x - mean) ** 2).sum() / n
    if var <= 0.0:
        return np.nan, 0.0
    best, split = -1.0, np.nan
    c = 0.0
    for i in range(n - 1):
        c += x[i]
        w0 = (i + 1) / n
        m0 = c / (i + 1)
        m1 = (total - c) / (n - i - 1)
        sb = w0 * (1.0 - w0) * (m0 - m1) ** 2
        if sb > best and x[i] < x[i + 1]:
            best = sb
            split = 0.5 * (x[i] + x[i + 1])
    return split, best / var


@njit(cache=True)
def _segment_core(e2e, yard, loss, G, invalid, dist_ratio, peak_window, confirm, loss_step, loss_floor,
                  G_step, G_floor, adaptive, bimodality):  # pragma: no cover - compiled (covered through segment())
    n = e2e.shape[0]
    ratio = np.full(n, np.nan)
    dl = np.full(n, np.nan)
    dg = np.full(n, np.nan)
    for t in range(1, n):
        if not invalid[t] and not invalid[t - 1]:
            if yard[t] > 0.0:
                ratio[t] = e2e[t] / yard[t]
            dl[t] = abs(loss[t] - loss[t - 1]) / (abs(loss[t - 1]) + loss_floor)
            dg[t] = abs(np.log(G[t] + G_floor) - np.log(G[t - 1] + G_floor))
    thr_d = dist_ratio
    if adaptive:
        split, share = _otsu_log(ratio)
        if share >= bimodality and np.exp(split) > thr_d:
            thr_d = np.exp(split)
    out = np.zeros(n, np.bool_)
    for t in range(1, n):
        if invalid[t]:
            if not invalid[t - 1]:
                out[t] = True
            continue
        if invalid[t - 1]:
            out[t] = True
            continue
        r = ratio[t]
        if not (r > thr_d):
            continue
        if peak_window > 0:
            lo = max(1, t - peak_window)
            hi = min(n - 1, t + peak_window)
            is_peak = True
            for u in range(lo, hi + 1):
                if u != t and ratio[u] == ratio[u] and (ratio[u] > r or (ratio[u] == r and u < t)):
                    is_peak = False
                    break
            if not is_peak:
                continue
        if confirm and not (dl[t] > loss_step or dg[t] > G_step):
            continue
        out[t] = True
    return np.flatnonzero(out).astype(np.int64)


def _series(x: Any, name: str, n: int | None) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1))
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name}: expected {n} values (one per outer step), got {a.shape[0]}")
    return a


def _check_thresholds(th: dict[str, Any]) -> dict[str, Any]:
    unknown = set(th) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown threshold(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    out = dict(DEFAULTS, **th)
    for k in ("dist_ratio", "loss_step", "loss_floor", "G_step", "G_floor", "bimodality"):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v) or v < 0:
            raise ValueError(f"{k}: expected a finite number >= 0, got {v!r}")
        out[k] = float(v)
    if isinstance(out["peak_window"], bool) or not isinstance(out["peak_window"], (int, np.integer)) or out["peak_window"] < 0:
        raise ValueError(f"peak_window: expected an int >= 0, got {out['peak_window']!r}")
    out["peak_window"] = int(out["peak_window"])
    for k in ("confirm", "adaptive"):
        if not isinstance(out[k], (bool, np.bool_)):
            raise ValueError(f"{k}: expected a bool, got {out[k]!r}")
        out[k] = bool(out[k])
    return out


def segment(end_to_end: Any, yardstick: Any, loss_end: Any, G_end: Any, status: Any | None = None,
            **thresholds: Any) -> np.ndarray:
    """Outer indices at which a new trap begins (see the module docstring for the rule).

    Args:
        end_to_end: [n] ‖θ*_t − θ*_{t−1}‖ (index 0 is ignored).
        yardstick: [n] ‖θ_t − θ_{t−1}‖ (index 0 is ignored).
        loss_end: [n] endpoint loss.
        G_end: [n] endpoint G.
        status: [n] inner-run statuses (str) or a bool array of invalid endpoints; None: all valid.
        **thresholds: ``dist_ratio`` (2.0), ``peak_window`` (0), ``confirm`` (True), ``loss_step``
            (1e-3, relative), ``loss_floor`` (1e-8), ``G_step`` (0.1, in ln G), ``G_floor`` (1e-12),
            ``adaptive`` (True), ``bimodality`` (0.8). See the module docstring.

    Returns:
        Sorted int64 array of indices t ≥ 1.
    """
    e2e = _series(end_to_end, "end_to_end", None)
    n = e2e.shape[0]
    yard = _series(yardstick, "yardstick", n)
    loss = _series(loss_end, "loss_end", n)
    G = _series(G_end, "G_end", n)
    if status is None:
        invalid = np.zeros(n, np.bool_)
    else:
        s = np.asarray(status).reshape(-1)
        if s.shape[0] != n:
            raise ValueError(f"status: expected {n} values, got {s.shape[0]}")
        invalid = s.astype(np.bool_) if s.dtype == np.bool_ else np.isin(s.astype(str), INVALID_STATUS)
    invalid = invalid | ~np.isfinite(loss) | ~np.isfinite(G)
    th = _check_thresholds(thresholds)
    return _segment_core(e2e, yard, loss, G, np.ascontiguousarray(invalid), th["dist_ratio"], th["peak_window"],
                         th["confirm"], th["loss_step"], th["loss_floor"], th["G_step"], th["G_floor"],
                         th["adaptive"], th["bimodality"])


# ------------------------------------------------------------------------------ trapping times -
@dataclass
class Segments:
    """Traps of one window (or pooled windows): arrays over segments.

    Attributes:
        lengths: trapping times, in outer points.
        censored: True for segments whose true length is unknown: the first and last of a window
            (they run past its edges) and those next to flagged endpoints.
        flagged: True for segments made of invalid endpoints (never counted as traps).
        starts: index of each segment's first point.
        seed: which window each came from (after pooling; -1 otherwise).
    """

    lengths: np.ndarray
    censored: np.ndarray
    flagged: np.ndarray
    starts: np.ndarray
    seed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __iter__(self) -> Iterator[np.ndarray]:   # lengths, censored = trapping_times(...)
        return iter((self.lengths, self.censored))

    def __len__(self) -> int:
        return len(self.lengths)

    def complete(self) -> np.ndarray:
        """Lengths of the segments that are neither censored nor flagged: the trapping times."""
        return self.lengths[~self.censored & ~self.flagged]


def trapping_times(boundaries: Any, n: int, invalid: Any | None = None) -> Segments:
    """Segment lengths and censoring flags from boundaries.

    Args:
        boundaries: sorted indices in [1, n) where a new trap begins (from :func:`segment`).
        n: number of outer points in the window.
        invalid: [n] bool (or statuses) of endpoints that cannot be used.

    Returns:
        :class:`Segments`; ``lengths, censored = trapping_times(b, n)`` also works.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    b = np.asarray(boundaries, dtype=np.int64).reshape(-1)
    if b.size and (np.any(np.diff(b) <= 0) or b[0] < 1 or b[-1] >= n):
        raise ValueError(f"boundaries: expected strictly increasing indices in [1, {n}), got {b.tolist()[:10]}")
    starts = np.concatenate([[0], b])
    ends = np.concatenate([b, [n]])
    lengths = ends - starts
    if invalid is None:
        inv = np.zeros(n, bool)
    else:
        s = np.asarray(invalid).reshape(-1)
        if s.shape[0] != n:
            raise ValueError(f"invalid: expected {n} values, got {s.shape[0]}")
        inv = s.astype(bool) if s.dtype == np.bool_ else np.isin(s.astype(str), INVALID_STATUS)
    flagged = np.array([bool(inv[a:e].any()) for a, e in zip(starts, ends)], dtype=bool)
    censored = np.zeros(len(starts), bool)
    censored[0] = censored[-1] = True
    near = np.zeros_like(flagged)
    near[:-1] |= flagged[1:]
    near[1:] |= flagged[:-1]
    censored |= near & ~flagged
    return Segments(lengths, censored, flagged, starts, np.full(len(starts), -1, np.int64))


def pool(segments: list[Segments]) -> Segments:
    """Trapping times of several windows (seeds) together; ``seed`` records the origin."""
    if not segments:
        return Segments(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, np.int64))
    return Segments(np.concatenate([s.lengths for s in segments]), np.concatenate([s.censored for s in segments]),
                    np.concatenate([s.flagged for s in segments]), np.concatenate([s.starts for s in segments]),
                    np.concatenate([np.full(len(s), i, np.int64) for i, s in enumerate(segments)]))


def summary(seg: Segments, split: int | None = None) -> dict[str, Any]:
    """Mean, variance and log-binned histogram of the complete trapping times, all and early/late.

    Args:
        seg: segments (pooled or one window).
        split: outer index; segments starting before it are "early", the others "late".
    """
    def one(mask: np.ndarray) -> dict[str, Any]:
        x = seg.lengths[mask & ~seg.censored & ~seg.flagged].astype(np.float64)
        res: dict[str, Any] = {"n": int(x.size), "n_censored": int((mask & seg.censored & ~seg.flagged).sum()),
                               "n_flagged": int((mask & seg.flagged).sum())}
        if x.size:
            res.update(mean=float(x.mean()), var=float(x.var(ddof=1)) if x.size > 1 else float("nan"),
                       median=float(np.median(x)), max=int(x.max()))
            edges, dens = log_histogram(x)
            res.update(hist_edges=edges, hist_density=dens)
        return res

    allm = np.ones(len(seg), bool)
    out = {"all": one(allm)}
    if split is not None:
        out["split"] = int(split)
        out["early"] = one(seg.starts < split)
        out["late"] = one(seg.starts >= split)
    return out


def log_histogram(x: Any, bins_per_decade: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Log-binned density of positive integer data: (edges, density per unit length)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[x > 0]
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    hi = max(x.max() + 1, 2.0)
    nb = max(1, int(np.ceil(np.log10(hi) * bins_per_decade)))
    edges = np.unique(np.floor(np.logspace(0, np.log10(hi), nb + 1)).astype(np.int64))
    if edges[-1] <= x.max():
        edges = np.append(edges, int(x.max()) + 1)
    counts, _ = np.histogram(x, bins=edges)
    dens = counts / (np.diff(edges) * x.size)
    return edges.astype(np.float64), dens
