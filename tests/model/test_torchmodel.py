"""fasttrap.TorchModel: any torch.nn.Module through the ops, on the torch.func path.

An MLP given as a module must equal the compiled fasttrap.MLP path (float64); a small conv net's HVP
must equal a dense Hessian; bad modules and inputs get clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fasttrap
from fasttrap import TorchModel

from _util import cosine, rel_l2, to_np


def _mlp_pair(act="tanh", widths=(12, 7, 5, 4), loss="nll", output="identity"):
    acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(acts[act]())
    net = torch.nn.Sequential(*layers).double()
    return TorchModel(net, loss=loss, output=output, input_shape=(widths[0],)), fasttrap.MLP(widths, act, loss, output)


@pytest.mark.parametrize("act, loss, output", [("tanh", "nll", "identity"), ("relu", "nll", "identity"),
                                               ("sigmoid", "mse", "sigmoid"), ("tanh", "mse", "identity")])
@pytest.mark.parametrize("per_model", [False, True])
def test_an_mlp_as_a_module_equals_the_compiled_path(rng, act, loss, output, per_model):
    tm, mlp = _mlp_pair(act, loss=loss, output=output)
    K, B = 3, 9
    theta = mlp.init(K, 4, np.float64) + 0.05 * rng.standard_normal((K, mlp.n_params))
    X = rng.standard_normal((K, B, 12) if per_model else (B, 12))
    y = rng.integers(0, 4, (K, B) if per_model else B)
    v = rng.standard_normal(theta.shape)
    for name, args in (("value_and_grad", ()), ("hvp", (v,)), ("grad_G", ())):
        a = getattr(fasttrap, name)(tm, theta, X, y, *args)
        b = getattr(fasttrap, name)(mlp, theta, X, y, *args, backend="cpu")
        for x, z in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert isinstance(x, np.ndarray)                                   # NumPy in, NumPy out
            np.testing.assert_allclose(x, z, rtol=1e-10, atol=1e-13)
    if not per_model:
        for name in ("evaluate", "per_sample_grad_sq"):
            a = getattr(fasttrap, name)(tm, theta, X, y, True, 4)
            b = getattr(fasttrap, name)(mlp, theta, X, y, True, 4, backend="cpu")
            for x, z in zip(a, b):
                np.testing.assert_allclose(x, z, rtol=1e-10, atol=1e-13)


def test_layout_and_conversions(rng):
    tm, mlp = _mlp_pair()
    row = tm.from_torch()
    np.testing.assert_array_equal(row, mlp.from_torch(tm.module))              # parameters() order, as an MLP
    m2 = tm.to_torch(row + 1.0)
    np.testing.assert_array_equal(tm.from_torch(m2), row + 1.0)
    a, b = tm.init(3, 7), tm.init(3, 7)
    assert a.shape == (3, tm.n_params) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a, tm.init(3, 8))
    assert tm.n_out == 4 and "TorchModel(Sequential" in repr(tm)


def test_float32_follows_float64(rng):
    tm, mlp = _mlp_pair("relu")
    tm32 = TorchModel(tm.module.float(), input_shape=(12,))
    theta = mlp.init(2, 0, np.float64)
    X, y = rng.standard_normal((16, 12)), rng.integers(0, 4, 16)
    v = rng.standard_normal(theta.shape)
    ref = fasttrap.hvp(mlp, theta, X, y, v, backend="cpu")
    got = fasttrap.hvp(tm32, theta.astype(np.float32), X.astype(np.float32), y, v.astype(np.float32))
    assert got.dtype == np.float32 and rel_l2(got, ref) < 1e-5 and cosine(got, ref) > 1 - 1e-8


class SmallConv(torch.nn.Module):
    """Two convolutions and two dense layers: the aging paper's small net, in miniature."""

    def __init__(self, c=1, classes=3):
        super().__init__()
        self.c1 = torch.nn.Conv2d(c, 3, 3)
        self.c2 = torch.nn.Conv2d(3, 4, 3)
        self.f1 = torch.nn.Linear(4 * 2 * 2, 6)
        self.f2 = torch.nn.Linear(6, classes)

    def forward(self, x):
        x = torch.tanh(self.c1(x))
        x = torch.tanh(self.c2(x))
        return self.f2(torch.tanh(self.f1(x.flatten(1))))


def test_a_conv_nets_hvp_matches_its_dense_hessian(rng):
    net = SmallConv().double()
    tm = TorchModel(net, input_shape=(1, 6, 6))
    theta = tm.init(2, 3, np.float64)
    X = rng.standard_normal((5, 36))                                  # flat rows, folded to (1, 6, 6)
    y = rng.integers(0, 3, 5)
    V = rng.standard_normal(theta.shape)
    Hv = fasttrap.hvp(tm, theta, X, y, V)
    Xt = torch.from_numpy(X).reshape(5, 1, 6, 6)
    for k in range(2):
        def loss(t):
            return torch.nn.functional.cross_entropy(torch.func.functional_call(net, tm.params(t), (Xt,)),
                                                     torch.from_numpy(y))
        H = torch.autograd.functional.hessian(loss, torch.from_numpy(theta[k]))
        np.testing.assert_allclose(Hv[k], (H @ torch.from_numpy(V[k])).numpy(), rtol=1e-9, atol=1e-12)
    L, G, dG = fasttrap.grad_G(tm, theta, X, y)
    _, g = fasttrap.value_and_grad(tm, theta, X, y)
    np.testing.assert_allclose(dG, fasttrap.hvp(tm, theta, X, y, g), rtol=1e-12)
    np.testing.assert_allclose(G, 0.5 * (g * g).sum(1), rtol=1e-12)


def test_refusals(rng):
    bn = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    with pytest.raises(ValueError, match="BatchNorm layer in training mode.*module.eval"):
        TorchModel(bn)
    TorchModel(bn.eval(), input_shape=(4,))                          # in eval mode it is a fixed function
    with pytest.raises(ValueError, match="dropout"):
        TorchModel(torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Dropout(0.5)))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        TorchModel(lambda x: x)
    with pytest.raises(ValueError, match="needs output 'identity'"):
        TorchModel(torch.nn.Linear(4, 3), loss="nll", output="sigmoid")
    tm = TorchModel(torch.nn.Sequential(torch.nn.Linear(4, 3)).double(), input_shape=(4,))
    th = tm.init(1, 0, np.float64)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*match the number of classes"):
        fasttrap.value_and_grad(tm, th, np.zeros((2, 4)), np.array([0, 7]))
    with pytest.raises(ValueError, match=r"each input must have shape \[4\]"):
        fasttrap.value_and_grad(tm, th, np.zeros((2, 5)), np.array([0, 1]))
    with pytest.raises(ValueError, match="backend: 'cpu' is the compiled core"):
        fasttrap.value_and_grad(tm, th, np.zeros((2, 4)), np.array([0, 1]), backend="cpu")
    with pytest.raises(ValueError, match=r"theta: expected shape \[K, 15\]"):
        fasttrap.value_and_grad(tm, np.zeros((1, 9)), np.zeros((2, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"expected \[batch, classes\]"):
        TorchModel(torch.nn.Conv2d(1, 2, 3), input_shape=(1, 5, 5))


def _fashion_or_mnist():
    from fasttrap import data

    try:
        return data.load("fashion-mnist").subset(600, 200)
    except data.DataError:
        return data.load("mnist").subset(600, 200)      # CI without Debian's package


def test_outer_sgd_and_aging_run_on_a_small_conv_net():
    """Outer SGD, aging (Δ, Δ₄) and the gradient noise on the small conv net, on a slice of
    Fashion-MNIST (MNIST where that package is missing); the path learns and resumes exactly."""
    from fasttrap import aging

    ds = _fashion_or_mnist()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = torch.nn.Conv2d(1, 4, 5, stride=2), torch.nn.Conv2d(4, 8, 5, stride=2)
            self.f1, self.f2 = torch.nn.Linear(8 * 4 * 4, 32), torch.nn.Linear(32, 10)

        def forward(self, x):
            x = torch.relu(self.c2(torch.relu(self.c1(x))))
            return self.f2(torch.relu(self.f1(x.flatten(1))))

    tm = TorchModel(Net(), input_shape=(1, 28, 28))
    out = fasttrap.outer_sgd(tm, ds, [0, 1], lr=0.05, batch_size=32, steps=60, record=[0, 30, 60], curve_points=3,
                             progress=False)
    assert out.thetas.shape == (2, 3, tm.n_params)
    assert np.all(out.train_loss[:, -1] < out.train_loss[:, 0])
    a = fasttrap.outer_sgd(tm, ds, [0, 1], lr=0.05, batch_size=32, steps=30, record=[30], curve_points=0, progress=False)
    b = fasttrap.outer_sgd(tm, ds, [0, 1], lr=0.05, batch_size=32, steps=60, start=30, theta0=a.thetas[:, 0],
                           record=[60], curve_points=0, progress=False)
    assert b.thetas[:, 0].tobytes() == out.thetas[:, 2].tobytes()
    r = aging.run_aging(tm, ds, seeds=[0, 1], lr=0.05, batch_size=32, steps=80, t_w=[5, 20], lags=[1, 10, 50],
                        curve_points=3, noise_rows=100, eval_rows=100, progress=False,
                        moves=[fasttrap.Swap("pixels", images=0)])
    assert np.isfinite(r.two_time.msd[:, 0, :]).all() and (r.two_time.msd[:, 0, :] > 0).all()
    assert np.isfinite(r.noise_D).all() and (r.noise_D > 0).all()
    with pytest.raises(ValueError, match="weight swaps act on the layers of a fasttrap.MLP"):
        fasttrap.outer_sgd(tm, ds, [0], steps=2, moves=[fasttrap.Swap("rows", layer=1)], progress=False)
