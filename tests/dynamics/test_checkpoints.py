"""Checkpoints of the inner descent: θ at fractions of the budget, copied out by the loop as it passes.

A checkpoint at step S must equal the endpoint of the same descent run for S steps (same batches,
same start): the loop only copies; the core and its twin must agree; a model that stopped before S
gives its endpoint; an interruption gives NaN for the steps it never reached.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import fasttrap
from fasttrap.model import data
from fasttrap.dynamics.inner import checkpoint_steps

from _util import COMPILED_BACKENDS


@pytest.fixture(scope="module")
def small():
    return data.load("mnist").subset(2000, 200)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS + ["torch"])
@pytest.mark.parametrize("batches", ["shared", "independent"])
@pytest.mark.parametrize("method", ["sgd", "gd"])
def test_checkpoint_equals_the_shorter_descent(small, backend, batches, method):
    mlp = fasttrap.MLP((784, 12, 10), "tanh")
    th0 = mlp.init(4, 2).astype(np.float64)
    solver = {"sgd": fasttrap.SGD, "gd": fasttrap.GD}[method](lr=0.05, batch_size=100, batches=batches)
    kw = dict(solver=solver, seed=7, progress=False, backend=backend)
    n = 40 if method == "sgd" else 8
    full = fasttrap.inner_descent(mlp, th0, small, steps=n, checkpoints=(0.25, 0.5, 0.75), **kw)
    assert full.checkpoint_steps.tolist() == [n // 4, n // 2, 3 * n // 4]
    assert full.checkpoint_theta.shape == (3, 4, mlp.n_params)
    for j, S in enumerate(full.checkpoint_steps):
        short = fasttrap.inner_descent(mlp, th0, small, steps=int(S), **kw)
        np.testing.assert_array_equal(full.checkpoint_theta[j], short.theta)
        np.testing.assert_allclose(full.checkpoint_loss[j], short.train_loss, rtol=1e-12)
        np.testing.assert_allclose(full.checkpoint_G[j], short.train_G, rtol=1e-10)
    # checkpoints change nothing else
    plain = fasttrap.inner_descent(mlp, th0, small, steps=n, **kw)
    np.testing.assert_array_equal(plain.theta, full.theta)
    assert plain.checkpoint_theta is None and plain.checkpoint_steps.size == 0


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_core_and_twin_checkpoints_agree(small, backend, dtype):
    mlp = fasttrap.MLP((784, 16, 16, 10), "relu")
    th0 = mlp.init(5, 1).astype(dtype)
    kw = dict(steps=30, solver=fasttrap.SGD(lr=0.02, batch_size=64, batches="independent"), seed=1, progress=False,
              checkpoints=(0.1, 0.5, 0.9))
    a = fasttrap.inner_descent(mlp, th0, small, backend=backend, **kw)
    b = fasttrap.inner_descent(mlp, th0, small, backend="torch", **kw)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for j in range(3):
        d = np.linalg.norm(a.checkpoint_theta[j] - b.checkpoint_theta[j], axis=1)
        assert np.all(d <= tol * np.linalg.norm(b.checkpoint_theta[j], axis=1))


@pytest.mark.parametrize("backend", COMPILED_BACKENDS + ["torch"])
def test_a_stopped_model_gives_its_endpoint(small, backend):
    mlp = fasttrap.MLP((784, 8, 10))
    th0 = mlp.init(3, 0).astype(np.float64)
    # model 1 converges at once (a huge tolerance would stop all: give it its own lr that diverges)
    res = fasttrap.inner_descent(mlp, th0, small, steps=40, solver=fasttrap.SGD(lr=np.array([0.01, 1e9, 0.01]),
                                 batch_size=100), growth=10.0, progress=False, backend=backend,
                                 checkpoints=(0.5, 0.75))
    assert res.status[1] in ("diverged", "nonfinite")
    assert res.steps_done[1] < 20
    for j in range(2):
        np.testing.assert_array_equal(res.checkpoint_theta[j, 1], res.theta[1])
    assert res.status[0] == "max_steps"


@pytest.mark.parametrize("backend", COMPILED_BACKENDS + ["torch"])
def test_interrupted_checkpoints_are_nan(small, backend):
    mlp = fasttrap.MLP((784, 30, 10))
    th0 = mlp.init(2, 0)
    prog = np.zeros(4, np.int64)
    out = {}

    def run():
        out["r"] = fasttrap.ops.descent_loop(
            mlp, th0, small.X_train, small.y_train, np.full(2, 0.01, np.float32), progress=prog, backend=backend,
            batch_size=64, steps=10**7, shared=True, streams=np.zeros(2, np.uint64), drop_last=False,
            full_batch=False, eval_block=1024, G_tol=0.0, growth=0.0, record_every=10**5,
            snap_steps=np.array([2, 10**7 - 1], np.int64))

    t = threading.Thread(target=run)
    t.start()
    while prog[0] < 5:
        time.sleep(0.01)
    prog[2] = 1
    t.join(timeout=60)
    r = out["r"]
    assert np.isfinite(r["snaps"][0]).all()          # step 2 was reached
    assert np.isnan(r["snaps"][1]).all()             # the last checkpoint never was


def test_checkpoint_steps_rule():
    assert checkpoint_steps((0.25, 0.5, 0.75), 100).tolist() == [25, 50, 75]
    assert checkpoint_steps((0.5, 0.25), 4).tolist() == [1, 2]
    assert checkpoint_steps((0.001,), 10).tolist() == [1]
    assert checkpoint_steps((0.99,), 10).tolist() == []           # rounds onto the endpoint
    assert checkpoint_steps((), 10).tolist() == []
    for bad in ((0.0,), (1.0,), (1.5,), (True,), ("a",)):
        with pytest.raises(ValueError, match="checkpoints"):
            checkpoint_steps(bad, 10)
    with pytest.raises(TypeError, match="checkpoints"):
        checkpoint_steps(0.5, 10)


def test_checkpoints_refused_for_newton(small):
    mlp = fasttrap.MLP((784, 8, 10))
    with pytest.raises(ValueError, match="checkpoints"):
        fasttrap.inner_descent(mlp, mlp.init(1, 0).astype(np.float64), small, steps=4, solver=fasttrap.NewtonMR(),
                               checkpoints=(0.5,), progress=False)


def test_core_refuses_bad_snap_steps(small):
    mlp = fasttrap.MLP((784, 8, 10))
    base = dict(batch_size=64, steps=10, shared=True, streams=np.zeros(1, np.uint64), drop_last=False,
                full_batch=False, eval_block=1024, G_tol=0.0, growth=0.0, record_every=1)
    for bad in ([0], [11], [5, 5], [6, 3]):
        with pytest.raises(ValueError, match="snap_steps"):
            fasttrap.ops.descent_loop(mlp, mlp.init(1, 0), small.X_train, small.y_train,
                                      np.full(1, 0.01, np.float32), progress=np.zeros(4, np.int64), backend="cpu",
                                      snap_steps=np.array(bad, np.int64), **base)
