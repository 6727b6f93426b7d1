"""The model protocol (issue 26, step 2): a new model type is one class, and every op, driver and analysis
takes it without a branch on its type.

``Softmax`` below is a model type written here, in the test, as a user would write one: a subclass of
:class:`fasttrap.model.base.TorchPathModel` with its own ``forward`` and ``init``, nothing else. It is a
linear classifier, so it equals the one-layer ``fasttrap.MLP((n, C))`` exactly (same flat layout
[W, b]), which is what every check compares against: the ops (float64, tight), an inner descent (same
batches, same trajectory), a certificate, an outer SGD run and an aging run. No package file knows
about it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fasttrap
from fasttrap.analysis import aging
from fasttrap.model.base import Model, TorchPathModel, check_loss, is_model
from fasttrap.model.data import Dataset


class Softmax(TorchPathModel):
    """Linear scores X Wᵀ + b of n features into C classes, θ = [W (C×n, row-major), b (C)]."""

    def __init__(self, n: int, C: int, loss: str = "nll", output: str = "identity"):
        check_loss(loss, output, C)
        self.n, self.n_out, self.loss, self.output = n, C, loss, output
        self.input_shape = (n,)
        self.n_params = C * n + C

    def forward(self, theta_row, X):
        W = theta_row[: self.n_out * self.n].reshape(self.n_out, self.n)
        return X @ W.T + theta_row[self.n_out * self.n:]

    def init(self, K, seed, dtype=np.float32):
        rng = np.random.default_rng([seed, 7])
        return (rng.uniform(-1, 1, (K, self.n_params)) / np.sqrt(self.n)).astype(dtype)


N_IN, C = 6, 4


@pytest.fixture
def pair():
    return Softmax(N_IN, C), fasttrap.MLP((N_IN, C))


def _data(rng, N=48):
    X = rng.standard_normal((N, N_IN))
    y = rng.integers(0, C, N)
    return X, y


def test_both_models_and_the_dummy_implement_the_protocol(pair):
    dummy, mlp = pair
    tm = fasttrap.TorchModel(torch.nn.Linear(N_IN, C).double(), input_shape=(N_IN,))
    for m in (dummy, mlp, tm):
        assert is_model(m) and isinstance(m, Model)
    assert mlp.compiled and not dummy.compiled and not tm.compiled
    assert (mlp.label, mlp.noun) == ("6-4", "MLP") and (tm.label, tm.noun) == ("Linear", "module")
    assert dummy.label == "Softmax" and dummy.widths == (N_IN, C)
    assert not is_model(object()) and not is_model(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("per_model", [False, True])
def test_the_dummy_runs_every_op_and_equals_the_mlp(rng, pair, per_model):
    dummy, mlp = pair
    K, B = 3, 10
    theta = mlp.init(K, 2, np.float64) + 0.1 * rng.standard_normal((K, mlp.n_params))
    X = rng.standard_normal((K, B, N_IN) if per_model else (B, N_IN))
    y = rng.integers(0, C, (K, B) if per_model else B)
    v = rng.standard_normal(theta.shape)
    for name, args in (("value_and_grad", ()), ("hvp", (v,)), ("grad_G", ())):
        a = getattr(fasttrap, name)(dummy, theta, X, y, *args)
        b = getattr(fasttrap, name)(mlp, theta, X, y, *args, backend="cpu")
        for x, z in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert isinstance(x, np.ndarray)
            np.testing.assert_allclose(x, z, rtol=1e-10, atol=1e-13)
    if not per_model:
        for name in ("evaluate", "per_sample_grad_sq"):
            for x, z in zip(getattr(fasttrap, name)(dummy, theta, X, y, True, 4),
                            getattr(fasttrap, name)(mlp, theta, X, y, True, 4, backend="cpu")):
                np.testing.assert_allclose(x, z, rtol=1e-10, atol=1e-13)


def test_the_dummy_gets_the_same_refusals(rng, pair):
    dummy, _ = pair
    theta = dummy.init(2, 0, np.float64)
    X, y = _data(rng, 8)
    with pytest.raises(ValueError, match=r"theta: expected shape \[K, 28\].*the model's parameters"):
        fasttrap.value_and_grad(dummy, theta[:, :5], X, y)
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 4\) \(the model has 4 outputs\)"):
        fasttrap.value_and_grad(dummy, theta, X, y + 4)
    with pytest.raises(ValueError, match=r"X: each input must have shape \[6\]"):
        fasttrap.value_and_grad(dummy, theta, X[:, :5], y)
    with pytest.raises(ValueError, match="backend: 'cpu' is the compiled core"):
        fasttrap.value_and_grad(dummy, theta, X, y, backend="cpu")
    with pytest.raises(TypeError, match=r"mlp: expected a fasttrap.MLP or a fasttrap.TorchModel"):
        fasttrap.value_and_grad(object(), theta, X, y)
    with pytest.raises(ValueError, match="output: loss 'nll' needs output 'identity'"):
        Softmax(3, 2, "nll", "sigmoid")


def test_the_dummy_descends_certifies_and_trains_as_the_mlp(rng, pair):
    dummy, mlp = pair
    X, y = _data(rng)
    theta0 = mlp.init(3, 1, np.float64)
    a = fasttrap.inner_descent(dummy, theta0, (X, y), solver=fasttrap.SGD(lr=0.2, batch_size=16), epochs=3, seed=4)
    b = fasttrap.inner_descent(mlp, theta0, (X, y), solver=fasttrap.SGD(lr=0.2, batch_size=16), epochs=3, seed=4,
                               backend="torch")
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(a.steps_done, b.steps_done)

    ca = fasttrap.certify(dummy, a.theta, X, y)
    cb = fasttrap.certify(mlp, a.theta, X, y, backend="torch")
    np.testing.assert_allclose(ca.lambda_min, cb.lambda_min, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ca.lambda_max, cb.lambda_max, rtol=1e-8)
    np.testing.assert_array_equal(ca.index, cb.index)

    data = _dataset(X, y)
    th0 = dummy.init(2, 0, np.float64)
    kw = dict(lr=0.1, batch_size=8, steps=12, record=[4, 12], dtype=np.float64, progress=False, theta0=th0)
    oa = fasttrap.outer_sgd(dummy, data, [0, 1], **kw)
    ob = fasttrap.outer_sgd(mlp, data, [0, 1], backend="torch", **kw)
    np.testing.assert_allclose(oa.thetas, ob.thetas, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(oa.train_loss, ob.train_loss, rtol=1e-9)


def _dataset(X, y):
    return Dataset(X.astype(np.float32), y, X[:8].astype(np.float32), y[:8], "toy", "none", C)


def test_the_dummy_runs_an_aging_study(rng, pair):
    dummy, _ = pair
    X, y = _data(rng)
    res = aging.run_aging(dummy, _dataset(X, y), [0, 1], lr=0.1, batch_size=8, steps=16, t_w=[2, 4], lags=[1, 4],
                          curve_points=4, dtype=np.float64, progress=False)
    assert list(res.widths) == [N_IN, C]
    assert np.isfinite(res.two_time.msd).all() and (res.two_time.msd > 0).all()
    assert np.isfinite(res.noise_D).all()
