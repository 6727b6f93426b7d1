"""Trap identity by clustering: planted traps with returns, the gap test, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from fasttrap.analysis import traps, identity


def _walk(rng, seq, lens, P=30, jitter=0.05, spread=5.0):
    """Endpoints visiting the traps of `seq` (trap ids) for `lens` outer points each."""
    centres = {k: spread * rng.standard_normal(P) for k in set(seq)}
    pts = np.concatenate([centres[k] + jitter * rng.standard_normal((n, P)) for k, n in zip(seq, lens)])
    truth = np.concatenate([[k] * n for k, n in zip(seq, lens)])
    return pts, truth


def test_returns_are_visits_of_the_same_trap(rng):
    """A → B → A: the consecutive rule counts three traps, clustering two traps in three visits."""
    pts, truth = _walk(rng, ["A", "B", "A"], [12, 8, 15])
    D = cdist(pts, pts)
    within = identity.within_trap_scale(np.linalg.norm(0.05 * rng.standard_normal((50, 30)) * np.sqrt(2), axis=1))
    ti = identity.identify(D, within)
    assert ti.n_distinct == 2 and ti.n_visits == 3 and ti.n_returns == 1
    np.testing.assert_array_equal(ti.visits.lengths, [12, 8, 15])
    np.testing.assert_array_equal(ti.visit_trap, [0, 1, 0])
    assert ti.separable
    # the consecutive rule on the same endpoints: three segments
    step = np.full(len(pts), 1.0)                      # a yardstick above the jitter, far below the jumps
    ind = traps.indicators(pts - 0.001, pts, np.zeros(len(pts)), np.ones(len(pts)))
    b = traps.segment(ind.end_to_end, step, ind.loss_end, ind.G_end, confirm=False, adaptive=False)
    assert len(traps.trapping_times(b, len(pts)).lengths) == 3


def test_many_planted_traps_with_returns_are_recovered(rng):
    seq = [0, 1, 2, 1, 3, 0, 4, 2]
    lens = [5, 7, 3, 6, 9, 4, 8, 5]
    pts, truth = _walk(rng, seq, lens)
    ti = identity.identify(cdist(pts, pts), 0.05 * np.sqrt(2 * 30) * 1.3)
    assert ti.n_distinct == 5 and ti.n_visits == 8 and ti.n_returns == 3
    np.testing.assert_array_equal(ti.visits.lengths, lens)
    # same partition as the truth (labels up to renaming)
    m = {}
    for a, b in zip(truth, ti.labels):
        assert m.setdefault(a, b) == b


def test_refuses_when_there_is_no_gap(rng):
    """A steady drift (each endpoint a little beyond the last) has no traps to find: no gap."""
    P, T = 30, 80
    pts = np.cumsum(0.3 * rng.standard_normal((T, P)), axis=0)
    D = cdist(pts, pts)
    cons = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    ti = identity.identify(D, identity.within_trap_scale(cons) / 3.0)       # cut near the step size
    assert not ti.separable
    assert ti.evidence["share_in_band"] > 0.1


def test_within_scale_that_reaches_the_jumps_is_not_separable(rng):
    pts, _ = _walk(rng, ["A", "B", "A"], [10, 10, 10], jitter=0.05)
    D = cdist(pts, pts)
    jump = D[9, 10]
    sep, ev = identity.gap(D, cut=jump / 1.5, within_scale=jump / 1.2)
    assert not sep and ev["jump_median"] == pytest.approx(np.median([D[9, 10], D[19, 20]]))


def test_invalid_endpoints_are_flagged_visits(rng):
    pts, _ = _walk(rng, ["A", "B"], [10, 10])
    inv = np.zeros(20, bool)
    inv[4] = True
    ti = identity.identify(cdist(pts, pts), 0.2, invalid=inv)
    assert ti.labels[4] == -1
    np.testing.assert_array_equal(ti.visits.lengths, [4, 1, 5, 10])
    np.testing.assert_array_equal(ti.visits.flagged, [False, True, False, False])
    assert ti.n_visits == 3 and ti.n_returns == 1        # A, (invalid), A again, B


@pytest.mark.parametrize("args, match", [((np.zeros((3, 4)), 1.0), "square"), ((np.zeros((3, 3)), 0.0), "cut")])
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        identity.cluster(*args)
    with pytest.raises(ValueError, match="within_scale"):
        identity.identify(np.zeros((3, 3)), 0.0)
    with pytest.raises(ValueError, match="samples"):
        identity.within_trap_scale(np.array([np.nan]))


def test_clusters_cut_out_of_a_slow_drift_are_refused(rng):
    """A slow drift whose steps all stay far below the cut: average linkage still cuts it into
    several clusters (the end points are far apart), but no cluster change sits on a jump, so the
    clusters are arbitrary stretches of one path, and the gap test says so."""
    P, T = 30, 60
    pts = np.cumsum(0.02 * rng.standard_normal((T, P)), axis=0)
    D = cdist(pts, pts)
    step = np.median(np.linalg.norm(np.diff(pts, axis=0), axis=1))
    ti = identity.identify(D, within_scale=step, multiple=4.0)
    assert ti.n_distinct > 1                              # the linkage does cut the drift
    assert np.all(np.diag(D, 1) < ti.cut / 2)              # though no step comes near the cut
    assert ti.evidence["drift_boundaries"] == ti.n_visits - 1 > 0
    assert not ti.separable
    # the same test passes planted traps, whose boundaries are all jumps
    pts2, _ = _walk(rng, ["A", "B", "A"], [12, 8, 15])
    ti2 = identity.identify(cdist(pts2, pts2), 0.45)
    assert ti2.evidence["drift_boundaries"] == 0 and ti2.separable
