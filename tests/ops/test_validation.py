"""Bad input gets a clear TypeError or ValueError naming the argument, before any compiled call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fasttrap
from fasttrap.ops import _loader

MLP = fasttrap.MLP((6, 4, 3))
K, B = 2, 5


def good():
    rng = np.random.default_rng(0)
    return (MLP.init(K, 0, np.float64), rng.standard_normal((B, 6)), rng.integers(0, 3, B),
            rng.standard_normal((K, MLP.n_params)))


def _with_nan(a, val=np.nan):
    a = a.copy()
    a.flat[3] = val
    return a


theta, X, y, v = good()

BAD = [
    # (argument overrides, exception, message fragment)
    (dict(mlp="784-100-10"), TypeError, "mlp"),
    (dict(theta=theta.astype(np.int64)), TypeError, "theta"),
    (dict(theta=theta.astype(np.float16)), TypeError, "theta"),
    (dict(theta=theta[0]), ValueError, "theta"),
    (dict(theta=theta[:, :-1]), ValueError, "theta"),
    (dict(theta=theta[None]), ValueError, "theta"),
    (dict(theta=theta[:0]), ValueError, "theta"),
    (dict(theta=_with_nan(theta)), ValueError, "theta"),
    (dict(theta=_with_nan(theta, np.inf)), ValueError, "theta"),
    (dict(theta="abc"), TypeError, "theta"),
    (dict(theta={"a": 1}), TypeError, "theta"),
    (dict(X=X.astype(np.int32)), TypeError, "X"),
    (dict(X=(X * 255).astype(np.uint8)), TypeError, "X"),
    (dict(X=X[:, :5]), ValueError, "X"),
    (dict(X=X[0]), ValueError, "X"),
    (dict(X=X[None, None]), ValueError, "X"),
    (dict(X=np.zeros((0, 6))), ValueError, "X"),
    (dict(X=np.zeros((K + 1, B, 6))), ValueError, "X"),
    (dict(X=_with_nan(X)), ValueError, "X"),
    (dict(X=_with_nan(X, -np.inf)), ValueError, "X"),
    (dict(y=y.astype(np.float64)), TypeError, "y"),
    (dict(y=y.astype(bool)), TypeError, "y"),
    (dict(y=y[:-1]), ValueError, "y"),
    (dict(y=np.stack([y, y])), ValueError, "y"),
    (dict(y=np.where(np.arange(B) == 0, 3, y)), ValueError, "y"),
    (dict(y=np.where(np.arange(B) == 0, -1, y)), ValueError, "y"),
    (dict(backend="gpu"), ValueError, "backend"),
    (dict(backend=None), ValueError, "backend"),
]


def call(fn, **over):
    args = dict(mlp=MLP, theta=theta, X=X, y=y, v=v, backend="cpu")
    args.update(over)
    if fn is fasttrap.hvp:
        return fn(args["mlp"], args["theta"], args["X"], args["y"], args["v"], backend=args["backend"])
    return fn(args["mlp"], args["theta"], args["X"], args["y"], backend=args["backend"])


@pytest.mark.parametrize("fn", [fasttrap.value_and_grad, fasttrap.hvp, fasttrap.grad_G], ids=lambda f: f.__name__)
@pytest.mark.parametrize("over, exc, match", BAD, ids=[f"{list(o)[0]}-{i}" for i, (o, _, _) in enumerate(BAD)])
def test_bad_arguments(fn, over, exc, match):
    with pytest.raises(exc, match=match):
        call(fn, **over)


@pytest.mark.parametrize("bad_v, exc", [
    (v.astype(np.int64), TypeError),
    (v[:, :-2], ValueError),
    (v[:1], ValueError),
    (_with_nan(v), ValueError),
    ("v", TypeError),
])
def test_bad_direction(bad_v, exc):
    with pytest.raises(exc, match="v"):
        fasttrap.hvp(MLP, theta, X, y, bad_v, backend="cpu")


def test_per_model_batch_needs_per_model_labels():
    Xk = np.zeros((K, B, 6))
    with pytest.raises(ValueError, match="y"):
        fasttrap.grad_G(MLP, theta, Xk, y, backend="cpu")
    fasttrap.grad_G(MLP, theta, Xk, np.stack([y] * K), backend="cpu")


@pytest.mark.parametrize("over, exc, match", [
    (dict(want_grad="yes"), TypeError, "want_grad"),
    (dict(block=0), ValueError, "block"),
    (dict(block=2.5), TypeError, "block"),
    (dict(X=np.zeros((3, B, 6))), ValueError, "X"),
    (dict(X=np.zeros((0, 6))), ValueError, "X"),
    (dict(y=np.zeros(B + 1, np.int64)), ValueError, "y"),
])
def test_bad_evaluate_arguments(over, exc, match):
    args = dict(X=X, y=y, want_grad=False, block=16)
    args.update(over)
    with pytest.raises(exc, match=match):
        fasttrap.evaluate(MLP, theta, args["X"], args["y"], args["want_grad"], args["block"], backend="cpu")


def test_cuda_backend_without_device_is_a_clear_error():
    if fasttrap.cuda_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(fasttrap.BackendUnavailable, match="cuda"):
        fasttrap.grad_G(MLP, theta, X, y, backend="cuda")
    # auto never fails for lack of CUDA
    fasttrap.grad_G(MLP, theta, X, y, backend="auto")


def test_set_num_threads_rejects_bad_values():
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="n"):
            fasttrap.set_num_threads(bad)


def test_torch_tensor_requiring_grad_is_accepted():
    t = torch.from_numpy(theta).requires_grad_(True)
    out = fasttrap.grad_G(MLP, t, torch.from_numpy(X), torch.from_numpy(y), backend="cpu")
    assert isinstance(out[2], torch.Tensor)


def test_inputs_are_not_modified():
    th, Xc, yc, vc = theta.copy(), X.copy(), y.copy(), v.copy()
    for be in ("cpu", "torch"):
        fasttrap.grad_G(MLP, th, Xc, yc, backend=be)
        fasttrap.hvp(MLP, th, Xc, yc, vc, backend=be)
    np.testing.assert_array_equal(th, theta)
    np.testing.assert_array_equal(Xc, X)
    np.testing.assert_array_equal(vc, v)


@pytest.mark.skipif(_loader.core is None, reason="no compiled core")
def test_core_itself_rejects_bad_arrays_without_crashing():
    """Even a direct call of the extension with bad arrays raises instead of crashing."""
    core = _loader.core
    w, a, l, o = MLP.codes
    with pytest.raises(ValueError):
        core.grad_G(w, a, l, o, theta[:, :5].copy(), X, y, 1, 1)
    with pytest.raises(ValueError):
        core.grad_G(w, a, l, o, theta, X[:, :5].copy(), y, 1, 1)
    with pytest.raises(ValueError):
        core.grad_G(w, a, l, o, theta, X, y.astype(np.int32), 1, 1)
    with pytest.raises(ValueError):
        core.grad_G(w, a, l, o, theta, X, np.full(B, 7), 1, 1)
    with pytest.raises(ValueError):
        core.grad_G(w, a, l, o, np.asfortranarray(theta), X, y, 1, 1)
    with pytest.raises(ValueError):
        core.grad_G([6], a, l, o, theta, X, y, 1, 1)
    with pytest.raises(ValueError):
        core.hvp(w, a, l, o, theta, X, y, v[:1].copy(), 1, 1)
