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
