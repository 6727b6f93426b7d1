from __future__ import annotations

import numpy as np
import pytest

import fasttrap
from fasttrap.model import data, rng

from _util import COMPILED_BACKENDS


@pytest.fixture(scope="module")
def small():
    return data.load("mnist").subset(2000, 500)


def test_outer_sgd_learns_and_records(small):
    mlp = fasttrap.MLP((784, 32, 10))
    res = fasttrap.outer_sgd(mlp, small, seeds=[0, 1], lr=0.1, batch_size=64, steps=60, curve_points=8, progress=False)
    assert res.thetas.shape == (2, 61, mlp.n_params)
    np.testing.assert_array_equal(res.steps, np.arange(61))
    np.testing.assert_array_equal(res.thetas[:, 0], np.stack([mlp.init(1, 0)[0], mlp.init(1, 1)[0]]))
    assert res.curve_steps[0] == 0 and res.curve_steps[-1] == 60
    assert np.all(res.train_loss[:, -1] < 0.6 * res.train_loss[:, 0])
    assert np.all(res.test_acc[:, -1] > 0.6)


def test_seeds_are_independent_of_each_other(small):
    mlp = fasttrap.MLP((784, 16, 10))
    both = fasttrap.outer_sgd(mlp, small, seeds=[3, 4], steps=12, record=[12], progress=False, dtype=np.float64)
    alone = fasttrap.outer_sgd(mlp, small, seeds=[4], steps=12, record=[12], progress=False, dtype=np.float64)
    np.testing.assert_allclose(both.thetas[1, 0], alone.thetas[0, 0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_compiled_and_torch_paths_agree(small, backend):
    mlp = fasttrap.MLP((784, 24, 10), "tanh")
    kw = dict(seeds=[0, 5], lr=0.05, batch_size=50, steps=40, record=slice(0, None, 10), curve_points=4,
              progress=False, dtype=np.float64)
    a = fasttrap.outer_sgd(mlp, small, backend=backend, **kw)
    b = fasttrap.outer_sgd(mlp, small, backend="torch", **kw)
    np.testing.assert_array_equal(a.steps, [0, 10, 20, 30, 40])
    np.testing.assert_allclose(a.thetas, b.thetas, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-10)


def test_batch_order_is_the_documented_stream(small):
    """Step t of seed s uses rng.batch_indices(stream_id(s, 'outer'), t, N, B)."""
    mlp = fasttrap.MLP((784, 8, 10))
    res = fasttrap.outer_sgd(mlp, small, seeds=[2], lr=0.1, batch_size=100, steps=1, progress=False, dtype=np.float64)
    idx = rng.batch_indices(rng.stream_id(2, "outer"), 0, len(small.y_train), 100)
    _, g = fasttrap.value_and_grad(mlp, res.thetas[:, 0], small.X_train[idx].astype(np.float64), small.y_train[idx])
    np.testing.assert_allclose(res.thetas[0, 1], res.thetas[0, 0] - 0.1 * g[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(seeds=[]), ValueError, "seeds"),
    (dict(seeds=[-1]), ValueError, "seeds"),
    (dict(lr=0.0), ValueError, "lr"),
    (dict(lr="big"), TypeError, "lr"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(steps=-1), ValueError, "steps"),
    (dict(record=[0, 99]), ValueError, "record"),
    (dict(dtype=np.int32), TypeError, "dtype"),
])
def test_bad_outer_arguments(small, kw, exc, match):
    args = dict(seeds=[0], steps=5, progress=False)
    args.update(kw)
    with pytest.raises(exc, match=match):
        fasttrap.outer_sgd(fasttrap.MLP((784, 8, 10)), small, **args)


def test_data_must_fit_the_network(small):
    with pytest.raises(ValueError, match="features"):
        fasttrap.outer_sgd(fasttrap.MLP((100, 8, 10)), small, seeds=[0], steps=1, progress=False)
    with pytest.raises(ValueError, match="classes"):
        fasttrap.outer_sgd(fasttrap.MLP((784, 8, 5)), small, seeds=[0], steps=1, progress=False)
    with pytest.raises(TypeError, match="data"):
        fasttrap.outer_sgd(fasttrap.MLP((784, 8, 10)), (small.X_train, small.y_train), seeds=[0], steps=1)


def test_divergence_is_a_clear_error_naming_step_and_seeds():
    from fasttrap.dynamics.outer import DivergenceError

    ds = fasttrap.model.data.load("mnist").subset(500, 100)
    with pytest.raises(DivergenceError, match=r"seed\(s\) \[0, 1\].*lower the learning rate") as exc:
        fasttrap.outer_sgd(fasttrap.MLP((784, 20, 10), "relu", "mse"), ds, seeds=2, lr=1e4, batch_size=50,
                           steps=100, curve_points=0, progress=False)
    assert 1 <= exc.value.step <= 100 and exc.value.seeds == [0, 1]
