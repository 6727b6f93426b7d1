"""Trap identity by clustering endpoints: returns to an earlier trap are visits of the same trap.

The consecutive-jump rule (:func:`fasttrap.analysis.traps.segment`) compares each endpoint only with the one
before it, so a path that goes A → B → A counts three traps. Energy-landscape codes instead keep a
database of distinct minima and match every new one against all of them (pele's ``Database``,
TopSearch's similarity). Here every endpoint of a window is compared with every other through the
stored pairwise distance matrix, and endpoints closer than a cut are one trap:

* **the within-trap scale** is measured, not guessed: distances between endpoints that must be the
  same trap — inner descents repeated from the same start point with another batch seed, and the
  drift of an endpoint between a budget T and 2T (:func:`within_trap_scale`);
* **the cut** is a multiple of that scale (default 3×), and average-linkage clustering
  (:func:`scipy.cluster.hierarchy.linkage`) groups the endpoints;
* **visits**: maximal runs of consecutive outer points in one cluster. Their lengths are the
  trapping times; a visit to a cluster seen before is a *return*;
* **the gap test** (:func:`gap`): clustering is only meaningful when distances between traps stand
  clear of those within. When the consecutive endpoint distances crowd the cut (more than 10% of
  them within a factor 2 of it), when the measured within-trap scale reaches the typical jump
  between traps, or when clusters change where the path made no jump (a slow drift cut into
  pieces by the linkage: its "traps" are arbitrary stretches of one continuous path),
  :class:`TrapIdentity` says ``separable = False`` and the report refuses to print trapping times
  as if they were clean, printing the distance histogram instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from .traps import Segments


@dataclass
class TrapIdentity:
    """Traps of one window by clustering.

    Attributes:
        labels: [T] trap of each endpoint (0, 1, … by first appearance; −1 for invalid endpoints).
        visits: the visits as :class:`fasttrap.analysis.traps.Segments` (their lengths are trapping times;
            the first and last are censored, a visit next to an invalid endpoint is flagged).
        visit_trap: [V] the trap each visit is to.
        n_distinct: distinct traps; n_visits: visits; n_returns: visits to a trap seen before.
        cut: the distance cut; within_scale: the measured within-trap scale it is a multiple of.
        separable: whether within- and between-trap distances show a gap (see :func:`gap`).
        evidence: the numbers behind ``separable``.
    """

    labels: np.ndarray
    visits: Segments
    visit_trap: np.ndarray
    n_distinct: int
    n_visits: int
    n_returns: int
    cut: float
    within_scale: float
    separable: bool
    evidence: dict[str, Any] = field(default_factory=dict)


def within_trap_scale(*samples: Any, q: float = 0.9) -> float:
    """The within-trap distance scale: the q-quantile (default 90%) of all distances given.

    Args:
        *samples: arrays of distances between endpoints that belong to one trap by construction:
            repeated inner descents from one start point (another batch seed), and one start point's
            endpoints at budgets T and 2T.
        q: the quantile.
    """
    d = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in samples]) if samples else np.zeros(0)
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError("samples: need at least one finite within-trap distance")
    return float(np.quantile(d, q))


def cluster(D: Any, cut: float, invalid: Any = None, method: str = "average") -> np.ndarray:
    """Labels [T] of endpoints with pairwise distances D [T, T]: hierarchical clustering cut at ``cut``.

    Invalid endpoints get −1 and take no part. Labels are numbered by first appearance along t.
    """
    D = np.asarray(D, dtype=np.float64)
    T = D.shape[0]
    if D.shape != (T, T):
        raise ValueError(f"D: expected a square matrix, got {list(D.shape)}")
    if not cut > 0:
        raise ValueError(f"cut: must be > 0, got {cut}")
    bad = np.zeros(T, bool) if invalid is None else np.asarray(invalid, bool)
    ok = np.flatnonzero(~bad)
    labels = np.full(T, -1, dtype=np.int64)
    if ok.size == 1:
        labels[ok] = 0
    elif ok.size > 1:
        sub = D[np.ix_(ok, ok)]
        sub = 0.5 * (sub + sub.T)
        np.fill_diagonal(sub, 0.0)
        raw = fcluster(linkage(squareform(sub, checks=False), method=method), t=cut, criterion="distance")
        labels[ok] = raw
    # renumber by first appearance
    out = np.full(T, -1, dtype=np.int64)
    seen: dict[int, int] = {}
    for t in range(T):
        if labels[t] >= 0:
            out[t] = seen.setdefault(int(labels[t]), len(seen))
    return out


def visits(labels: Any) -> tuple[Segments, np.ndarray]:
    """Maximal runs of one label along t: (their Segments, the trap of each visit).

    An invalid endpoint (label −1) is a visit of its own and flagged, like the consecutive rule's
    invalid endpoints; the first and last visits are censored.
    """
    lab = np.asarray(labels, dtype=np.int64)
    T = lab.size
    if T == 0:
        e = np.zeros(0, np.int64)
        return Segments(e, np.zeros(0, bool), np.zeros(0, bool), e, e.copy()), e
    starts = np.r_[0, np.flatnonzero(np.diff(lab) != 0) + 1]
    ends = np.r_[starts[1:], T]
    trap = lab[starts]
    flagged = trap < 0
    censored = np.zeros(starts.size, bool)
    censored[0] = censored[-1] = True
    return Segments(ends - starts, censored, flagged, starts, np.full(starts.size, -1, np.int64)), trap


def gap(D: Any, cut: float, within_scale: float, invalid: Any = None, band: float = 2.0, max_share: float = 0.1,
        labels: Any = None) -> tuple[bool, dict[str, Any]]:
    """Do within- and between-trap distances show a gap around the cut?

    Three conditions, all needed: (i) at most ``max_share`` of the consecutive endpoint distances
    d(θ*_t, θ*_{t+1}) lie in the ambiguous band [cut/band, cut·band]; (ii) the measured
    within-trap scale is below the median of the consecutive distances that exceed the cut (the
    typical jump between traps) divided by ``band``; with no jump at all (ii) holds trivially;
    (iii) given the cluster ``labels`` [T], every change of cluster between consecutive valid
    endpoints sits on a jump (a consecutive distance above cut/band): a change where the path made
    no jump is a *drift boundary*, the linkage cutting a continuous drift into pieces.

    Returns:
        ``(separable, evidence)`` with the share in the band, the jump median, the drift boundaries
        and the counts.
    """
    D = np.asarray(D, dtype=np.float64)
    bad = np.zeros(D.shape[0], bool) if invalid is None else np.asarray(invalid, bool)
    t = np.flatnonzero(~bad[:-1] & ~bad[1:])
    cons = D[t, t + 1] if t.size else np.zeros(0)
    cons = cons[np.isfinite(cons)]
    amb = float(((cons >= cut / band) & (cons <= cut * band)).mean()) if cons.size else 0.0
    jumps = cons[cons > cut]
    jump_med = float(np.median(jumps)) if jumps.size else float("nan")
    cond2 = (not jumps.size) or within_scale < jump_med / band
    drift = 0
    if labels is not None and t.size:
        lab = np.asarray(labels)
        change = lab[t] != lab[t + 1]
        drift = int((change & ~(D[t, t + 1] > cut / band)).sum())
    ev = {"consecutive": int(cons.size), "share_in_band": amb, "band": [cut / band, cut * band],
          "jump_median": jump_med, "within_scale": within_scale, "cut": cut, "drift_boundaries": drift}
    return bool(amb <= max_share and cond2 and drift == 0), ev


def identify(D: Any, within_scale: float, multiple: float = 3.0, invalid: Any = None,
             method: str = "average") -> TrapIdentity:
    """Traps of one window: cluster at ``multiple`` × the within-trap scale, visits, returns, the gap test.

    Args:
        D: [T, T] pairwise distances of the window's endpoints (as the indicator stage stores them).
        within_scale: from :func:`within_trap_scale`.
        multiple: the cut in units of the within-trap scale.
        invalid: [T] endpoints to leave out (diverged, non-finite, blown up).
        method: the linkage (``average`` by default; ``single`` or ``complete`` also work).
    """
    if not within_scale > 0:
        raise ValueError(f"within_scale: must be > 0, got {within_scale}")
    if not multiple > 0:
        raise ValueError(f"multiple: must be > 0, got {multiple}")
    cut = multiple * within_scale
    labels = cluster(D, cut, invalid, method)
    seg, trap = visits(labels)
    valid = trap >= 0
    first_seen: set[int] = set()
    returns = 0
    for tr in trap[valid]:
        if int(tr) in first_seen:
            returns += 1
        first_seen.add(int(tr))
    sep, ev = gap(D, cut, within_scale, invalid, labels=labels)
    return TrapIdentity(labels=labels, visits=seg, visit_trap=trap, n_distinct=len(first_seen),
                        n_visits=int(valid.sum()), n_returns=returns, cut=cut, within_scale=within_scale,
                        separable=sep, evidence=ev)
