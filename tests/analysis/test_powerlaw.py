"""Power-law analysis on samples from known distributions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats as sst

from fasttrap import stats


def test_discrete_sampler_matches_the_pmf():
    rng = np.random.default_rng(0)
    x = stats.discrete_power_law_sample(2.5, 3, 200_000, rng)
    assert x.min() == 3
    for v in (3, 4, 7, 20):
        p = v ** -2.5 / special.zeta(2.5, 3)
        assert abs((x == v).mean() - p) < 4 * np.sqrt(p / 200_000) + 1e-4


@pytest.mark.parametrize("alpha", [1.8, 2.5, 3.2, 4.5])
def test_alpha_is_recovered_within_its_stated_error(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    x = stats.discrete_power_law_sample(alpha, 1, 4000, rng)
    f = stats.fit_power_law(x, n_bootstrap=0, compare=False)
    assert abs(f.alpha - alpha) < 3 * f.alpha_err, (f.alpha, f.alpha_err)
    assert f.xmin <= 3 and np.isnan(f.p_value)


def test_xmin_is_found_above_a_non_power_law_body():
    rng = np.random.default_rng(5)
    tail = stats.discrete_power_law_sample(2.4, 10, 2000, rng)
    body = rng.integers(1, 10, 1500)
    f = stats.fit_power_law(np.concatenate([tail, body]), n_bootstrap=0, compare=False)
    assert 7 <= f.xmin <= 14
    assert abs(f.alpha - 2.4) < 3 * f.alpha_err + 0.05


def test_bootstrap_p_is_roughly_uniform_under_the_null():
    ps = []
    for k in range(24):
        rng = np.random.default_rng(100 + k)
        x = stats.discrete_power_law_sample(2.2, 1, 150, rng)
        ps.append(stats.fit_power_law(x, xmin=1, n_bootstrap=40, seed=k, compare=False).p_value)
    ps = np.array(ps)
    assert sst.kstest(ps, "uniform").pvalue > 1e-3, ps
    assert 0.25 < ps.mean() < 0.75


def test_bootstrap_p_is_small_for_exponential_data():
    rng = np.random.default_rng(7)
    x = rng.geometric(0.15, 600)
    f = stats.fit_power_law(x, xmin=1, n_bootstrap=40, seed=1)
    assert f.p_value < 0.05
    assert set(f.comparisons) == {"exponential", "lognormal", "truncated_power_law"}
    assert f.comparisons["exponential"]["R"] < 0 and f.comparisons["exponential"]["p"] < 0.1  # exponential favoured
    assert "rejected" in f.verdict()


def test_free_xmin_on_exponential_data_leaves_a_tiny_tail():
    """With x_min free, CSN can fit a steep power law to the last few percent of exponential data
    (a known limitation); the result must make that visible through the tail fraction."""
    rng = np.random.default_rng(8)
    f = stats.fit_power_law(rng.geometric(0.15, 2000), n_bootstrap=0)
    assert f.n_tail / f.n < 0.1 and f.alpha > 3.5
    assert f"{f.n_tail}/{f.n} samples" in f.verdict()


@pytest.mark.slow
def test_bootstrap_uniformity_with_estimated_xmin():
    ps = []
    for k in range(60):
        rng = np.random.default_rng(1000 + k)
        x = stats.discrete_power_law_sample(2.5, 1, 300, rng)
        ps.append(stats.fit_power_law(x, n_bootstrap=100, seed=k, compare=False).p_value)
    assert sst.kstest(ps, "uniform").pvalue > 1e-3


@pytest.mark.parametrize("bad, exc", [
    (np.arange(1, 5), ValueError),
    (np.ones(50), ValueError),
    (np.r_[np.arange(1, 30), np.nan], ValueError),
    (np.linspace(1.5, 9.5, 40), ValueError),
])
def test_bad_samples(bad, exc):
    with pytest.raises(exc, match="times"):
        stats.fit_power_law(bad, n_bootstrap=0)


def test_bad_bootstrap_count():
    with pytest.raises(ValueError, match="n_bootstrap"):
        stats.fit_power_law(np.arange(1, 40), n_bootstrap=-1)
