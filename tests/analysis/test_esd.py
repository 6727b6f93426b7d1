"""ESD metrics: the power-law exponent on spectra with known tails, ranks, entropy, spikes."""

from __future__ import annotations

import numpy as np
import pytest

from fasttrap.analysis.esd import esd_metrics, fit_esd_tail, hard_rank, matrix_entropy


def _pareto(rng, alpha, n, xmin=1.0):
    return xmin * (1 - rng.random(n)) ** (-1 / (alpha - 1))


@pytest.mark.parametrize("alpha", [2.0, 2.5, 3.5, 5.0])
def test_alpha_is_recovered_on_a_known_tail(rng, alpha):
    """A pure Pareto tail of 3,000 eigenvalues: α within 4 standard errors, x_min near the truth."""
    x = _pareto(rng, alpha, 3000)
    f = fit_esd_tail(x)
    assert abs(f.alpha - alpha) <= 4 * f.alpha_err + 0.02, f
    assert f.alpha_err == pytest.approx((f.alpha - 1) / np.sqrt(f.n_tail))
    assert f.ks < 0.05


def test_alpha_ignores_a_bulk_below_the_tail(rng):
    """A bulk (uniform below 1) under a Pareto tail from 1: x_min lands near 1 and α is the tail's."""
    x = np.r_[rng.uniform(0.01, 0.9, 3000), _pareto(rng, 3.0, 2000)]
    f = fit_esd_tail(x)
    assert 0.85 <= f.xmin <= 1.6 and abs(f.alpha - 3.0) <= 4 * f.alpha_err + 0.05


def test_spikes_are_reported_and_fitted_without(rng):
    x = _pareto(rng, 2.5, 2000)
    spikes = np.array([1e5, 3e4, 2e4])
    m = esd_metrics(np.r_[x, spikes, np.zeros(50)], n_spikes=3)
    assert m.spikes == sorted(spikes.tolist(), reverse=True)
    assert m.lambda_max == 1e5
    assert abs(m.fit_no_spikes.alpha - 2.5) <= 4 * m.fit_no_spikes.alpha_err + 0.02
    assert m.n == 2053 and m.hard_rank == 2003


def test_closed_forms():
    flat = np.ones(20)
    assert hard_rank(flat) == 20 and matrix_entropy(flat) == pytest.approx(1.0)
    m = esd_metrics(np.r_[4.0, np.ones(4), np.zeros(3)])
    assert m.stable_rank == pytest.approx(8 / 4) and m.hard_rank == 5 and m.lambda_max == 4
    p = np.r_[4.0, np.ones(4)] / 8
    assert m.entropy == pytest.approx(-(p * np.log(p)).sum() / np.log(5))
    # the rank threshold is λ_max · dim · ε: 1e-17 of λ_max is zero, 1e-10 is not
    assert hard_rank(np.r_[1.0, 1e-10, 1e-17]) == 2
    # too few non-zero eigenvalues for a tail fit: NaN, not an exception
    assert np.isnan(esd_metrics(np.r_[3.0, 2.0, 1.0]).fit.alpha)


def test_bad_input():
    with pytest.raises(ValueError, match="evals"):
        esd_metrics([])
    with pytest.raises(ValueError, match="evals"):
        esd_metrics([1.0, np.nan])
    with pytest.raises(ValueError, match="n_spikes"):
        esd_metrics([1.0, 2.0], n_spikes=-1)


def _coverage(rng, studies, S, draw):
    from fasttrap.analysis.esd import seed_interval

    hits = 0
    for _ in range(studies):
        ci = seed_interval(draw(rng, S))
        hits += ci["lo"] <= 2.0 <= ci["hi"]
    return hits / studies


def test_seed_interval_covers_the_true_mean(rng):
    """5 seeds of normal values with mean 2: the 95% interval covers 2 in about 95% of 4,000 studies."""
    cov = _coverage(rng, 4000, 5, lambda r, S: r.normal(2.0, 0.7, S))
    print(f"coverage of the 95% seed interval (normal, S=5): {cov:.3f}")
    assert abs(cov - 0.95) <= 4 * np.sqrt(0.95 * 0.05 / 4000)


@pytest.mark.slow
def test_seed_interval_coverage_slow(rng):
    """Normal and skewed (gamma, shape 4: skewness 1) per-seed values at 5 and 10 seeds, 20,000
    studies each; recorded in benchmarks/results/seed_interval_coverage.txt."""
    rows = []
    for name, draw in [("normal", lambda r, S: r.normal(2.0, 0.7, S)),
                       ("gamma(4)", lambda r, S: r.gamma(4.0, 0.5, S))]:     # mean 2, skewness 1
        for S in (5, 10):
            cov = _coverage(rng, 20000, S, draw)
            rows.append((name, S, cov))
            print(f"{name:9s} S={S:2d}: coverage {cov:.4f} (nominal 0.95, binomial s.e. {np.sqrt(0.95 * 0.05 / 20000):.4f})")
    for name, S, cov in rows:
        if name == "normal":
            assert abs(cov - 0.95) <= 4 * np.sqrt(0.95 * 0.05 / 20000)
        else:
            assert cov >= 0.92, (name, S, cov)


def test_paired_difference_separates_and_does_not(rng):
    from fasttrap.analysis.esd import paired_difference

    base = rng.normal(3.0, 1.0, 8)                         # a large seed-to-seed spread, shared by the pair
    r = paired_difference(base + 0.5 + rng.normal(0, 0.05, 8), base)
    assert r["separated"] and r["direction"] == "a > b" and r["diff"]["lo"] > 0
    same = paired_difference(base + rng.normal(0, 0.05, 8), base)
    assert same["diff"]["lo"] <= 0.0 <= same["diff"]["hi"] or same["separated"]     # 5% false positives allowed
    # the false-positive rate of "separated" under the null is the nominal 5%
    fp = np.mean([paired_difference(rng.normal(0, 1, 5), rng.normal(0, 1, 5))["separated"] for _ in range(2000)])
    assert abs(fp - 0.05) <= 4 * np.sqrt(0.05 * 0.95 / 2000)
    with pytest.raises(ValueError, match="a, b"):
        paired_difference([1.0, 2.0], [1.0])
