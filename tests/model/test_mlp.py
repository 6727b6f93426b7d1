from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import fasttrap
from fasttrap import reference


def test_n_params_and_layout():
    mlp = fasttrap.MLP((784, 100, 100, 10))
    assert mlp.n_params == 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10 == 89610
    assert mlp.layer_offsets()[0] == (0, 78400, 78500)
    assert mlp.depth == 3 and mlp.n_in == 784 and mlp.n_out == 10


def test_layout_matches_torch_parameter_order():
    mlp = fasttrap.MLP((5, 4, 3), "tanh")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    theta = mlp.from_torch(net)
    assert theta.shape == (mlp.n_params,)
    np.testing.assert_array_equal(theta[:20], net[0].weight.detach().numpy().ravel())
    np.testing.assert_array_equal(theta[20:24], net[0].bias.detach().numpy())
    X = torch.randn(6, 5, dtype=torch.float64)
    out = reference.outputs(mlp, torch.from_numpy(theta)[None], X)[0]
    torch.testing.assert_close(out, net(X))


@pytest.mark.parametrize("case", [((7, 3, 5), "relu", "nll", "identity"), ((4, 6, 2), "sigmoid", "mse", "sigmoid")])
def test_to_torch_from_torch_roundtrip(case):
    mlp = fasttrap.MLP(*case)
    theta = mlp.init(2, 9, np.float64)
    net = mlp.to_torch(theta[1])
    np.testing.assert_array_equal(mlp.from_torch(net), theta[1])
    X = torch.randn(8, mlp.n_in, dtype=torch.float64)
    out = net(X)
    Z = reference.outputs(mlp, torch.from_numpy(theta[1:2]), X)[0]
    torch.testing.assert_close(out, torch.sigmoid(Z) if mlp.output == "sigmoid" else Z)
    assert net(X).dtype == torch.float64
    assert mlp.to_torch(theta[0].astype(np.float32))[0].weight.dtype == torch.float32


def test_init_matches_torch_linear_distribution():
    """Weights and biases uniform on [-1/sqrt(fan_in), 1/sqrt(fan_in)], like torch.nn.Linear."""
    mlp = fasttrap.MLP((784, 100, 10))
    theta = mlp.init(4, 0, np.float64)
    torch.manual_seed(0)
    ref = torch.nn.Linear(784, 100).weight.detach().numpy().ravel()
    (ow, ob, oe), (ow2, ob2, oe2) = mlp.layer_offsets()
    W1 = theta[:, ow:ob].ravel()
    bound = 1 / np.sqrt(784)
    assert np.abs(W1).max() <= bound and np.abs(W1).max() > 0.99 * bound
    assert stats.ks_2samp(W1, ref).pvalue > 1e-3
    assert stats.kstest(W1 / bound, stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    b2 = theta[:, ob2:oe2].ravel()
    assert np.abs(b2).max() <= 1 / np.sqrt(100)


def test_init_is_deterministic_per_seed_and_index():
    mlp = fasttrap.MLP((7, 3, 5))
    a = mlp.init(5, 42)
    b = mlp.init(3, 42)
    np.testing.assert_array_equal(a[:3], b)     # row k depends on (seed, k) only
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(mlp.init(1, 43)[0], a[0])
    assert a.dtype == np.float32 and mlp.init(1, 0, np.float64).dtype == np.float64


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(widths=(5,)), ValueError, "at least 2"),
    (dict(widths=(5, 0, 3)), ValueError, ">= 1"),
    (dict(widths="abc"), ValueError, None),
    (dict(widths=5), TypeError, "sequence"),
    (dict(widths=(5, 3), activation="gelu"), ValueError, "activation"),
    (dict(widths=(5, 3), loss="hinge"), ValueError, "loss"),
    (dict(widths=(5, 3), output="softmax"), ValueError, "output"),
    (dict(widths=(5, 3), loss="nll", output="sigmoid"), ValueError, "output"),
    (dict(widths=(5, 1), loss="nll"), ValueError, "2 output"),
])
def test_bad_mlp_specs(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fasttrap.MLP(**kwargs)


def test_bad_init_and_converter_args():
    mlp = fasttrap.MLP((5, 3))
    with pytest.raises(ValueError, match="K"):
        mlp.init(0, 1)
    with pytest.raises(ValueError, match="seed"):
        mlp.init(1, -1)
    with pytest.raises(TypeError, match="dtype"):
        mlp.init(1, 1, np.int32)
    with pytest.raises(ValueError, match="theta_row"):
        mlp.to_torch(np.zeros(7))
    with pytest.raises(TypeError, match="module"):
        mlp.from_torch("not a module")
    with pytest.raises(ValueError, match="shapes"):
        mlp.from_torch(torch.nn.Linear(5, 4))
