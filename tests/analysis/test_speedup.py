"""Steps to a target and the paired speed-up interval: coverage on synthetic studies with a known ratio."""

from __future__ import annotations

import numpy as np
import pytest

from fasttrap.analysis.speedup import speedup, steps_to_target


def test_steps_to_target():
    steps = np.array([0, 10, 20, 30])
    acc = np.array([[0.1, 0.5, 0.85, 0.95], [0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_array_equal(steps_to_target(steps, acc, 0.8), [20, np.nan])
    loss = np.array([[2.0, 1.0, 0.4, 0.2]])
    np.testing.assert_array_equal(steps_to_target(steps, loss, 0.5, "loss"), [20])
    with pytest.raises(ValueError, match="kind"):
        steps_to_target(steps, loss, 0.5, "speed")


def _study(rng, S, ratio):
    """Paired seeds: a shared seed effect (lognormal, 30%), and the protocol's steps = base / ratio
    with its own 10% noise: the true ratio of the expected means is ``ratio``."""
    seed_effect = 500 * rng.lognormal(0, 0.3, S)
    base = seed_effect * rng.lognormal(0, 0.1, S)
    prot = seed_effect * rng.lognormal(0, 0.1, S) / ratio
    return base, prot


def _coverage(rng, studies, S, ratio, n_boot):
    hits = 0
    for _ in range(studies):
        b, p = _study(rng, S, ratio)
        lo, hi = speedup(b, p, n_boot=n_boot, seed=int(rng.integers(1 << 30)))["ci"]
        hits += lo <= ratio <= hi
    return hits / studies


def test_speedup_interval_covers_the_true_ratio(rng):
    """10 paired seeds: the 95% interval covers the true speed-up in ~95% of 400 synthetic studies."""
    cov = _coverage(rng, 400, 10, 1.3, 1000)
    print(f"coverage of the 95% expanded paired bootstrap interval of the speed-up (S=10): {cov:.3f}")
    assert abs(cov - 0.95) <= 4 * np.sqrt(0.95 * 0.05 / 400)


@pytest.mark.slow
def test_speedup_coverage_slow(rng):
    """2,000 studies at 10 and 20 seeds; recorded in benchmarks/results/speedup_coverage.txt."""
    for S in (10, 20):
        cov = _coverage(rng, 2000, S, 1.3, 2000)
        se = np.sqrt(0.95 * 0.05 / 2000)
        print(f"S={S}: coverage {cov:.4f} (nominal 0.95, binomial s.e. {se:.4f})")
        assert abs(cov - 0.95) <= 4 * se


def test_verdicts(rng):
    b, p = _study(rng, 12, 1.5)
    r = speedup(b, p)
    assert r["verdict"] == "faster" and r["ci"][0] > 1 and r["n"] == 12
    assert speedup(p, b)["verdict"] == "slower"
    b, p = _study(rng, 12, 1.0)
    same = speedup(b, p)
    assert same["ci"][0] <= 1.0 <= same["ci"][1] or same["verdict"] != "no difference"
    nan = speedup([100, np.nan, 120], [90, 95, 100])
    assert nan["verdict"] == "not measurable" and "1 seed" in nan["reason"]
    # identical arms (the paired-swap control): estimate exactly 1, no difference
    r = speedup([100, 120, 90, 130], [100, 120, 90, 130])
    assert r["estimate"] == 1.0 and r["verdict"] == "no difference"
    with pytest.raises(ValueError, match="base, prot"):
        speedup([1, 2], [1])


def test_censored_seeds_give_bounds_not_estimates():
    base = np.array([100.0, 120, 110, 90, 105])
    # the protocol never reaches the target in 1000 steps for 2 seeds, and is far slower on the others
    prot = np.array([600.0, np.nan, 700, np.nan, 650])
    r = speedup(base, prot, budget=1000)
    assert r["verdict"] == "slower" and r["bound"] == "upper" and "upper bound" in r["reason"]
    assert speedup(base, prot)["verdict"] == "not measurable"                  # without the budget: no claim
    # censoring that does not let the bound decide: not measurable
    close = np.array([100.0, np.nan, 115, 95, 100])
    assert speedup(base, close, budget=130)["verdict"] == "not measurable"
    # the baseline censored and the protocol fast: a lower bound that clears 1 means faster
    r = speedup(np.array([900.0, np.nan, 950, 880, np.nan]), base, budget=1000)
    assert r["verdict"] == "faster" and r["bound"] == "lower"
    # both arms censored: no claim
    assert speedup(np.array([np.nan, 1.0, 2.0]), np.array([1.0, np.nan, 2.0]), budget=10)["verdict"] == "not measurable"
