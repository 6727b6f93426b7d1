"""The Hessian's extreme eigenvalues and SLQ density on the compiled HVP, against a dense eigh."""

from __future__ import annotations

import numpy as np
import pytest

import fasttrap
from fasttrap.linalg import spectra
from fasttrap.reference.certify import dense_hessian

from _util import COMPILED_BACKENDS

NETS = [((6, 5, 3), "tanh", "nll"), ((5, 4, 4, 3), "relu", "nll"), ((4, 6, 2), "sigmoid", "mse")]


def _problem(rng, widths, act, loss, K=3, N=40):
    mlp = fasttrap.MLP(widths, act, loss)
    theta = mlp.init(K, int(rng.integers(1000)), np.float64) + 0.3 * rng.standard_normal((K, mlp.n_params))
    X = rng.standard_normal((N, widths[0]))
    y = rng.integers(0, widths[-1], N)
    lam = np.stack([np.linalg.eigvalsh(dense_hessian(mlp, theta[k], X, y)[2]) for k in range(K)])
    return mlp, theta, X, y, lam


@pytest.mark.parametrize("backend", COMPILED_BACKENDS + ["torch"])
@pytest.mark.parametrize("net", NETS)
def test_extreme_eigenvalues_match_dense_eigh(rng, net, backend):
    mlp, theta, X, y, lam = _problem(rng, *net)
    top = spectra.hessian_eigs(mlp, theta, X, y, k=3, which="LA", backend=backend)
    bot = spectra.hessian_eigs(mlp, theta, X, y, k=2, which="SA", backend=backend)
    np.testing.assert_allclose(top.values, lam[:, ::-1][:, :3], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(bot.values, lam[:, :2], rtol=1e-7, atol=1e-9)
    assert np.all(top.residuals < 1e-6) and np.all(np.diff(top.values, axis=1) <= 0)


@pytest.mark.parametrize("net", NETS)
def test_density_integrates_to_one_and_its_moments_are_traces(rng, net):
    mlp, theta, X, y, lam = _problem(rng, *net)
    P = mlp.n_params
    # Lanczos run to P steps represents each probe's quadratic form exactly: moments match
    # vᵀHᵖv/P, whose mean over probes is tr(Hᵖ)/P up to Hutchinson's error
    d = spectra.hessian_density(mlp, theta, X, y, probes=200, steps=P, seed=1)
    np.testing.assert_allclose(d.weights.sum(axis=2), 1.0, atol=1e-10)
    tr = lam.sum(1)
    tr2 = (lam ** 2).sum(1)
    # Hutchinson with Rademacher probes: Var(vᵀHv) = 2(‖H‖_F² − Σ H_ii²) ≤ 2‖H‖_F²; 4 standard errors
    se = np.sqrt(2 * tr2 / 200)
    assert np.all(np.abs(d.trace - tr) < 4 * se + 1e-9)
    se2 = np.sqrt(2 * (lam ** 4).sum(1) / 200)
    assert np.all(np.abs(d.moment(2) * P - tr2) < 4 * se2 + 1e-9)
    np.testing.assert_allclose(d.moment(0), 1.0, atol=1e-10)
    # smoothing keeps the mass: the density on a wide grid integrates to 1
    grid = np.linspace(lam.min() - 1, lam.max() + 1, 4001)
    dens = d.smoothed(grid, sigma=0.05)
    np.testing.assert_allclose(np.trapezoid(dens, grid, axis=1), 1.0, atol=1e-3)


def test_bad_input(rng):
    mlp, theta, X, y, _ = _problem(rng, *NETS[0])
    with pytest.raises(ValueError, match="which"):
        spectra.hessian_eigs(mlp, theta, X, y, which="LM")
    with pytest.raises(ValueError, match="k"):
        spectra.hessian_eigs(mlp, theta, X, y, k=0)
    with pytest.raises(ValueError, match="steps"):
        spectra.hessian_density(mlp, theta, X, y, steps=mlp.n_params + 1)
    with pytest.raises(ValueError, match="theta"):
        spectra.hessian_eigs(mlp, theta[:, :-1], X, y)
    with pytest.raises(ValueError, match="sigma"):
        spectra.hessian_density(mlp, theta, X, y, steps=5).smoothed([0.0], sigma=0)


# ---- the Jacobian's ESD ------------------------------------------------------------------------

def _dense_jtj(mlp, theta, X):
    from fasttrap import reference

    J = reference.input_jacobian(mlp, theta, X).numpy().reshape(theta.shape[0], X.shape[0], -1)
    return np.stack([np.linalg.eigvalsh(J[k].T @ J[k])[::-1] for k in range(theta.shape[0])])


@pytest.mark.parametrize("backend", COMPILED_BACKENDS + ["torch"])
@pytest.mark.parametrize("N", [5, 12, 13, 60])      # kd = 12: the Gram path (N < kd) and the 𝒥ᵀ𝒥 path
def test_jacobian_esd_equals_dense_eigh(rng, N, backend):
    mlp = fasttrap.MLP([4, 6, 5, 3], "tanh")
    theta = mlp.init(2, 3, np.float64) + 0.2 * rng.standard_normal((2, mlp.n_params))
    X = rng.standard_normal((N, 4))
    ev = spectra.jacobian_esd(mlp, theta, X, block=7, backend=backend)
    dense = _dense_jtj(mlp, theta, X)
    m = min(N, 12)
    assert ev.shape == (2, m)
    assert np.all(np.diff(ev, axis=1) <= 0) and np.all(ev >= 0)
    np.testing.assert_allclose(ev, np.maximum(dense[:, :m], 0), rtol=1e-9, atol=1e-12 * dense.max())


def test_jacobian_esd_float32_is_close(rng):
    mlp = fasttrap.MLP([8, 10, 4], "relu")
    theta = mlp.init(1, 0, np.float64)
    X = rng.standard_normal((50, 8))
    e64 = spectra.jacobian_esd(mlp, theta, X)
    e32 = spectra.jacobian_esd(mlp, theta.astype(np.float32), X.astype(np.float32))
    assert np.abs(e32 - e64).max() <= 1e-5 * e64.max()


def test_jacobian_density_nodes_are_eigenvalues(rng):
    """With as many Lanczos steps as the dimension, each probe's nodes (of non-zero weight) are
    eigenvalues of 𝒥ᵀ𝒥, weights sum to 1, and the first moment is Hutchinson's trace."""
    mlp = fasttrap.MLP([3, 5, 4], "sigmoid")
    theta = mlp.init(2, 1, np.float64) + 0.3 * rng.standard_normal((2, mlp.n_params))
    X = rng.standard_normal((30, 3))
    ev = spectra.jacobian_esd(mlp, theta, X)                      # kd = 12 eigenvalues, N = 30 ≥ kd
    d = spectra.jacobian_density(mlp, theta, X, probes=3, steps=12, block=8)
    assert d.dim == 12 and d.nodes.shape == (2, 3, 12)
    np.testing.assert_allclose(d.weights.sum(axis=2), 1.0, rtol=1e-10)
    for k in range(2):
        for r in range(3):
            used = d.nodes[k, r][d.weights[k, r] > 1e-8]
            dist = np.abs(used[:, None] - ev[k][None, :]).min(axis=1)
            assert dist.max() <= 1e-7 * ev[k, 0]
    # the exact trace, against many probes' Hutchinson estimate (a statistical check, 6 sigma wide)
    many = spectra.jacobian_density(mlp, theta, X, probes=400, steps=12, seed=5)
    assert np.all(np.abs(many.trace - ev.sum(axis=1)) <= 6 * np.sqrt(2 * (ev ** 2).sum(axis=1) / 400))


def test_jacobian_bad_input(rng):
    mlp = fasttrap.MLP([3, 4, 2])
    th = mlp.init(1, 0, np.float64)
    with pytest.raises(ValueError, match="X"):
        spectra.jacobian_esd(mlp, th, np.zeros((4, 5)))
    with pytest.raises(ValueError, match="steps"):
        spectra.jacobian_density(mlp, th, np.zeros((4, 3)), steps=7)
    with pytest.raises(ValueError, match="probes"):
        spectra.jacobian_density(mlp, th, np.zeros((4, 3)), probes=0)
