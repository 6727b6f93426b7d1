"""The torch twin is the specification, so it is checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import grad, jvp

import fasttrap
from fasttrap import reference

from _util import rel_l2

CASES = [
    ((6, 5, 3), "tanh", "nll", "identity"),
    ((6, 5, 4, 3), "sigmoid", "mse", "sigmoid"),
    ((4, 7, 2), "relu", "nll", "identity"),
    ((5, 3), "linear", "mse", "identity"),
]


def _single_loss(mlp, X, y):
    def f(theta_row):
        return reference.losses(mlp, reference.outputs(mlp, theta_row[None], X), y)[0]
    return f


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}-{c[2]}")
def test_twin_matches_forward_over_reverse(rng, case):
    mlp = fasttrap.MLP(*case)
    K, B = 3, 9
    theta = torch.from_numpy(mlp.init(K, 3, np.float64) + 0.1 * rng.standard_normal((K, mlp.n_params)))
    X = torch.from_numpy(rng.standard_normal((B, mlp.n_in)))
    y = torch.from_numpy(rng.integers(0, mlp.n_out, B))
    v = torch.from_numpy(rng.standard_normal((K, mlp.n_params)))
    Hv = reference.hvp(mlp, theta, X, y, v)
    _, _, dG = reference.grad_G(mlp, theta, X, y)
    for k in range(K):
        f = _single_loss(mlp, X, y)
        g = grad(f)(theta[k])
        _, Hv_k = jvp(grad(f), (theta[k],), (v[k],))          # forward-over-reverse
        _, Hg_k = jvp(grad(f), (theta[k],), (g,))
        assert rel_l2(Hv[k], Hv_k) < 1e-12
        assert rel_l2(dG[k], Hg_k) < 1e-12


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}-{c[2]}")
def test_twin_matches_dense_hessian(rng, case):
    mlp = fasttrap.MLP(*case)
    B = 7
    theta = torch.from_numpy(mlp.init(1, 11, np.float64)[0] + 0.1 * rng.standard_normal(mlp.n_params))
    X = torch.from_numpy(rng.standard_normal((B, mlp.n_in)))
    y = torch.from_numpy(rng.integers(0, mlp.n_out, B))
    f = _single_loss(mlp, X, y)
    H = torch.autograd.functional.hessian(f, theta)           # [P, P]
    g = torch.autograd.functional.jacobian(f, theta)          # [P]
    v = torch.from_numpy(rng.standard_normal(mlp.n_params))
    assert rel_l2(reference.hvp(mlp, theta[None], X, y, v[None])[0], H @ v) < 1e-12
    L, G, dG = reference.grad_G(mlp, theta[None], X, y)
    assert rel_l2(dG[0], H @ g) < 1e-12
    assert abs(float(G[0]) - 0.5 * float(g @ g)) <= 1e-12 * max(1.0, float(G[0]))
    # and the compiled core against the dense Hessian too
    Hv_core = fasttrap.hvp(mlp, theta[None].numpy(), X.numpy(), y.numpy(), v[None].numpy(), backend="cpu")
    assert rel_l2(Hv_core[0], (H @ v).numpy()) < 1e-12


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}-{c[2]}")
def test_hvp_is_symmetric(rng, case, backend):
    mlp = fasttrap.MLP(*case)
    K, B = 4, 13
    theta = mlp.init(K, 2, np.float64)
    X = rng.standard_normal((B, mlp.n_in))
    y = rng.integers(0, mlp.n_out, B)
    v1, v2 = rng.standard_normal((2, K, mlp.n_params))
    Hv1 = np.asarray(fasttrap.hvp(mlp, theta, X, y, v1, backend=backend))
    Hv2 = np.asarray(fasttrap.hvp(mlp, theta, X, y, v2, backend=backend))
    a = (v2 * Hv1).sum(1)
    b = (v1 * Hv2).sum(1)
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)


def test_twin_loss_matches_torch_modules(rng):
    """The twin's loss is the loss of the equivalent torch.nn module with torch's own loss functions."""
    for case in CASES:
        mlp = fasttrap.MLP(*case)
        theta = mlp.init(1, 0, np.float64)
        X = torch.from_numpy(rng.standard_normal((10, mlp.n_in)))
        y = torch.from_numpy(rng.integers(0, mlp.n_out, 10))
        net = mlp.to_torch(theta[0])
        out = net(X)
        if mlp.loss == "nll":
            expect = torch.nn.functional.cross_entropy(out, y)
        else:
            expect = torch.nn.functional.mse_loss(out, torch.nn.functional.one_hot(y, mlp.n_out).double())
        L, _ = reference.value_and_grad(mlp, theta, X, y)
        assert abs(float(L[0]) - float(expect.detach())) < 1e-13
