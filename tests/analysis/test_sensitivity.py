"""Statistics with seed-bootstrap intervals, and the conclusions that flip across the table."""

from __future__ import annotations

import numpy as np
import pytest

from fasttrap.analysis import sensitivity
from fasttrap.analysis.traps import Segments


def _window(rng, n_seg, mean, T_split=None):
    """One seed's segments: complete geometric lengths of the given mean, the two ends censored."""
    lengths = rng.geometric(1.0 / mean, n_seg)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    cens = np.zeros(n_seg, bool)
    cens[[0, -1]] = True
    return Segments(lengths, cens, np.zeros(n_seg, bool), starts, np.full(n_seg, -1))


def test_statistics_are_those_of_the_pooled_complete_lengths(rng):
    segs = [_window(rng, 30, 3.0) for _ in range(4)]
    st = sensitivity.statistics(segs, split=40)
    x = np.concatenate([s.lengths[~s.censored] for s in segs]).astype(float)
    early = np.concatenate([s.lengths[~s.censored & (s.starts < 40)] for s in segs]).astype(float)
    assert st["n"] == x.size and st["mean"] == pytest.approx(x.mean()) and st["var"] == pytest.approx(x.var(ddof=1))
    assert st["median"] == np.median(x) and st["early_mean"] == pytest.approx(early.mean())


def _coverage(rng, reps, S, n_seg, mean, n_boot):
    hit = 0
    for _ in range(reps):
        segs = [_window(rng, n_seg, mean) for _ in range(S)]
        lo, hi = sensitivity.seed_bootstrap(segs, split=10**9, n_boot=n_boot, seed=int(rng.integers(1 << 30)))["mean"]
        hit += lo <= mean <= hi
    return hit / reps


def test_seed_bootstrap_interval_covers_the_true_mean(rng):
    """95% expanded percentile intervals over 9 seeds (the thesis protocol's count) of 20 geometric trapping
    times of mean 3 each: the coverage, measured on 200 synthetic studies, must be near 95% (the
    plain percentile interval gave 0.880 here, the expanded one 0.935; the slow version, 1000
    studies, is recorded in benchmarks/results/seed_bootstrap_coverage.txt)."""
    cov = _coverage(rng, reps=200, S=9, n_seg=22, mean=3.0, n_boot=400)
    print(f"coverage of the 95% seed-bootstrap interval of the mean: {cov:.3f}")
    assert 0.90 <= cov <= 0.99


@pytest.mark.slow
def test_seed_bootstrap_coverage_slow(rng):
    cov = _coverage(rng, reps=1000, S=9, n_seg=22, mean=3.0, n_boot=1000)
    se = np.sqrt(0.95 * 0.05 / 1000)
    print(f"coverage over 1000 studies: {cov:.3f} (nominal 0.95, binomial s.e. {se:.3f})")
    assert 0.90 <= cov <= 0.98


def test_intervals_stay_in_range_and_widen_with_few_seeds(rng):
    segs = [_window(rng, 12, 3.0) for _ in range(3)]
    ci = sensitivity.seed_bootstrap(segs, split=15, n_boot=300)
    st = sensitivity.statistics(segs, split=15)
    for k, (lo, hi) in ci.items():
        if np.isfinite(lo):
            assert 0 <= lo <= st[k] <= hi, k


def test_one_seed_has_no_interval(rng):
    ci = sensitivity.seed_bootstrap([_window(rng, 30, 3.0)], split=10, n_boot=100)
    assert all(np.isnan(v).all() for v in ci.values())
    with pytest.raises(ValueError, match="level"):
        sensitivity.seed_bootstrap([_window(rng, 30, 3.0)] * 2, split=10, level=1.5)


def test_flips_are_named(rng):
    base = {"n": 10, "late_over_early": 2.0, "ci": {"late_over_early": [1.5, 2.5]},
            "power_law": {"category": "plausible"}}
    other = {"n": 10, "late_over_early": 0.8, "ci": {"late_over_early": [0.5, 1.4]},
             "power_law": {"category": "rejected"}}
    assert sensitivity.conclusions(base) == {"late_vs_early": "late longer", "power_law": "plausible"}
    assert sensitivity.conclusions(other)["late_vs_early"] == "no clear difference"
    fl = sensitivity.flips([base, other])
    assert fl == {"late_vs_early": ["late longer", "no clear difference"], "power_law": ["plausible", "rejected"]}
    assert sensitivity.flips([base, dict(base)]) == {}
    # rows without trapping times take no part
    assert sensitivity.flips([base, {"n": 0, "power_law": {"category": "no fit"}}]) == {}


def test_a_row_fits_and_reads(rng):
    segs = [_window(rng, 80, 4.0) for _ in range(3)]
    r = sensitivity.row("test", segs, split=150, n_boot=50, n_bootstrap=10)
    assert r["seeds"] == 3 and r["n"] == sum(int((~s.censored).sum()) for s in segs)
    assert r["power_law"]["category"] in ("plausible", "rejected", "not testable")
    assert set(r["conclusions"]) == {"late_vs_early", "power_law"}
