"""The compiled input→output Jacobian and its accumulated Gram against their torch twins.

float64 to 1e-10 (relative); float32 against the float64 twin by relative L2 error, cosine and an
element-wise bound, over depths, widths, activations and K. The Gram is also checked against a
dense 𝒥ᵀ𝒥 built from the twin's Jacobian, and for a closed form: a linear model's J is W_1.
"""

from __future__ import annotations

import numpy as np
import pytest

import fasttrap
from fasttrap import reference
from fasttrap.ops import jacobian_gram

from _util import COMPILED_BACKENDS, cosine, num_threads, rel_l2, to_np

# (widths, activation, K, N)
CONFIGS = [
    ((7, 5), "relu", 1, 1),                  # depth 1: J = W_1
    ((7, 3, 5), "relu", 3, 11),
    ((7, 3, 5), "tanh", 1, 300),             # N above the kernel's block of 256
    ((6, 5, 4, 3, 2), "sigmoid", 3, 17),     # depth 4
    ((6, 5, 4, 3, 2), "linear", 2, 5),
    ((20, 16, 8, 4), "tanh", 5, 40),
    ((20, 16, 8, 4), "relu", 2, 257),
    ((64, 32, 10), "sigmoid", 2, 33),
    ((784, 100, 100, 10), "relu", 2, 20),    # the reference net
]


def _ids(c):
    w, act, K, N = c
    return f"{'-'.join(map(str, w))}-{act}-K{K}-N{N}"


def _inputs(rng, cfg):
    widths, act, K, N = cfg
    mlp = fasttrap.MLP(widths, act)
    theta = mlp.init(K, int(rng.integers(2**31)), np.float64)
    theta += 0.05 * rng.standard_normal(theta.shape)      # off the init, so that the biases matter
    return mlp, theta, rng.standard_normal((N, widths[0]))


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_input_jacobian_float64(rng, cfg, backend):
    mlp, theta, X = _inputs(rng, cfg)
    J = to_np(fasttrap.input_jacobian(mlp, theta, X, backend=backend))
    ref = to_np(reference.input_jacobian(mlp, theta, X))
    assert J.shape == (theta.shape[0], X.shape[0], mlp.n_out, mlp.n_in) == ref.shape
    assert J.dtype == np.float64
    assert rel_l2(J, ref) <= 1e-10
    assert np.abs(J - ref).max() <= 1e-10 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_input_jacobian_float32(rng, cfg, backend):
    mlp, theta, X = _inputs(rng, cfg)
    J = to_np(fasttrap.input_jacobian(mlp, theta.astype(np.float32), X.astype(np.float32), backend=backend))
    ref = to_np(reference.input_jacobian(mlp, theta, X))
    assert J.dtype == np.float32
    assert rel_l2(J, ref) <= 1e-5
    assert cosine(J, ref) >= 1 - 1e-8
    assert np.abs(J - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_jacobian_gram_equals_dense(rng, cfg, backend):
    """Σ_i vec J_i vec J_iᵀ accumulated block by block equals 𝒥ᵀ𝒥 built whole from the twin."""
    mlp, theta, X = _inputs(rng, cfg)
    if mlp.n_in * mlp.n_out > 1000:
        X = X[:5]
    K, N, kd = theta.shape[0], X.shape[0], mlp.n_in * mlp.n_out
    Jt = to_np(reference.input_jacobian(mlp, theta, X)).reshape(K, N, kd)
    dense = np.einsum("kni,knj->kij", Jt, Jt)
    for block in (1, 7, 1000):
        G = to_np(jacobian_gram(mlp, theta, X, block, backend=backend))
        assert G.shape == (K, kd, kd)
        np.testing.assert_array_equal(G, np.swapaxes(G, 1, 2))      # symmetric, both triangles written
        assert rel_l2(G, dense) <= 1e-12
    G32 = to_np(jacobian_gram(mlp, theta.astype(np.float32), X.astype(np.float32), 7, backend=backend))
    assert rel_l2(G32, dense) <= 1e-5 and cosine(G32, dense) >= 1 - 1e-8


def test_twin_jacobian_gram_matches_its_jacobian(rng):
    mlp, theta, X = _inputs(rng, CONFIGS[3])
    J = to_np(reference.input_jacobian(mlp, theta, X)).reshape(theta.shape[0], X.shape[0], -1)
    G = to_np(reference.jacobian_gram(mlp, theta, X, 4))
    np.testing.assert_allclose(G, np.einsum("kni,knj->kij", J, J), rtol=1e-12, atol=1e-14)


def test_linear_model_jacobian_is_its_weight(rng):
    """Closed form: with no hidden layer J(x) = W_1 for every x; with linear activations, the product."""
    mlp = fasttrap.MLP([6, 4], "relu")
    theta = rng.standard_normal((2, mlp.n_params))
    J = fasttrap.input_jacobian(mlp, theta, rng.standard_normal((9, 6)), backend="cpu")
    W = theta[:, :24].reshape(2, 4, 6)
    np.testing.assert_array_equal(J, np.broadcast_to(W[:, None], J.shape))
    lin = fasttrap.MLP([6, 5, 4], "linear")
    th = rng.standard_normal((1, lin.n_params))
    W1, W2 = th[0, :30].reshape(5, 6), th[0, 35:55].reshape(4, 5)
    J = fasttrap.input_jacobian(lin, th, rng.standard_normal((3, 6)), backend="cpu")
    np.testing.assert_allclose(J[0], np.broadcast_to(W2 @ W1, (3, 4, 6)), rtol=1e-12)


def test_relu_jacobian_is_the_masked_product(rng):
    """J_i = W_2 D_1 W_1 with D_1 the ReLU mask of sample i (the formula of the issue)."""
    mlp = fasttrap.MLP([5, 7, 3], "relu")
    th = rng.standard_normal((1, mlp.n_params))
    W1, b1, W2 = th[0, :35].reshape(7, 5), th[0, 35:42], th[0, 42:63].reshape(3, 7)
    X = rng.standard_normal((4, 5))
    J = fasttrap.input_jacobian(mlp, th, X, backend="cpu")[0]
    for i in range(4):
        D = np.diag((W1 @ X[i] + b1 > 0).astype(float))
        np.testing.assert_allclose(J[i], W2 @ D @ W1, rtol=1e-12, atol=1e-15)


def test_threads_do_not_change_the_result(rng):
    mlp, theta, X = _inputs(rng, CONFIGS[6])
    with num_threads(1):
        a = jacobian_gram(mlp, theta, X, 64, backend="cpu")
        ja = fasttrap.input_jacobian(mlp, theta, X, backend="cpu")
    with num_threads(2):
        b = jacobian_gram(mlp, theta, X, 64, backend="cpu")
        jb = fasttrap.input_jacobian(mlp, theta, X, backend="cpu")
    assert rel_l2(a, b) <= 1e-13 and rel_l2(ja, jb) <= 1e-14


def test_torch_in_torch_out(rng):
    import torch

    mlp, theta, X = _inputs(rng, CONFIGS[1])
    J = fasttrap.input_jacobian(mlp, torch.from_numpy(theta), torch.from_numpy(X), backend="cpu")
    assert isinstance(J, torch.Tensor) and J.dtype == torch.float64


@pytest.mark.parametrize("bad, match", [
    (dict(X=np.zeros((3, 4))), r"X: expected shape \[N, 7\]"),
    (dict(X=np.zeros((0, 7))), r"X: expected shape"),
    (dict(X=np.full((2, 7), np.nan)), "X"),
    (dict(theta=np.zeros((2, 3))), "theta"),
    (dict(block=0), "block"),
    (dict(block=2.5), "block"),
])
def test_bad_arguments_are_refused_before_the_core(rng, bad, match):
    mlp = fasttrap.MLP([7, 3, 5])
    args = dict(theta=mlp.init(1, 0, np.float64), X=np.zeros((2, 7)), block=4) | bad
    with pytest.raises((ValueError, TypeError), match=match):
        jacobian_gram(mlp, args["theta"], args["X"], args["block"], backend="cpu")
    if "block" not in bad:
        with pytest.raises((ValueError, TypeError), match=match):
            fasttrap.input_jacobian(mlp, args["theta"], args["X"], backend="cpu")
