"""The compiled kernels against their pure-torch twins, on fresh random inputs.

float64: relative error ≤ 1e-10. float32: relative L2 error ≤ 1e-4, cosine ≥ 1 - 1e-6 and an
element-wise bound, all against the float64 twin (the stricter reference).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fasttrap
from fasttrap import reference

from _util import COMPILED_BACKENDS, cosine, num_threads, rel_l2, to_np

# (widths, activation, loss, output, K, B, per_model_batch)
CONFIGS = [
    ((7, 3, 5), "relu", "nll", "identity", 1, 1, False),
    ((7, 3, 5), "tanh", "nll", "identity", 3, 5, False),
    ((7, 3, 5), "sigmoid", "mse", "sigmoid", 17, 128, False),
    ((7, 3, 5), "linear", "mse", "identity", 3, 300, True),
    ((5, 4), "relu", "nll", "identity", 3, 5, False),                 # depth 1
    ((5, 4), "sigmoid", "mse", "sigmoid", 17, 1, True),
    ((6, 5, 4, 3, 2), "tanh", "mse", "identity", 3, 128, False),      # depth 4
    ((6, 5, 4, 3, 2), "relu", "nll", "identity", 17, 300, False),
    ((6, 5, 4, 3, 2), "sigmoid", "nll", "identity", 1, 5, True),
    ((6, 5, 4, 3, 2), "linear", "mse", "sigmoid", 3, 5, False),
    ((20, 16, 8, 4), "relu", "mse", "sigmoid", 17, 5, False),         # depth 3
    ((20, 16, 8, 4), "tanh", "nll", "identity", 1, 300, False),
    ((20, 16, 8, 4), "sigmoid", "mse", "identity", 3, 128, True),
    ((20, 16, 8, 4), "linear", "nll", "identity", 17, 128, False),
    ((784, 100, 100, 10), "relu", "nll", "identity", 3, 128, False),  # the reference net (Gram path)
    ((784, 100, 100, 10), "tanh", "nll", "identity", 17, 5, False),
    ((784, 100, 100, 10), "sigmoid", "mse", "sigmoid", 1, 300, False),
    ((784, 100, 100, 10), "relu", "mse", "identity", 3, 128, True),   # per-model Gram
    ((300, 31, 10), "tanh", "nll", "identity", 17, 128, False),
    ((300, 31, 10), "relu", "nll", "identity", 3, 300, True),
    ((13, 64, 64, 2), "sigmoid", "nll", "identity", 3, 300, False),
    ((13, 64, 64, 2), "linear", "mse", "sigmoid", 1, 128, False),
    ((129, 7, 7, 7, 3), "tanh", "mse", "sigmoid", 17, 128, False),
    ((129, 7, 7, 7, 3), "relu", "nll", "identity", 3, 1, False),
]


def _ids(c):
    w, act, loss, out, K, B, per = c
    return f"{'-'.join(map(str, w))}-{act}-{loss}{'-sig' if out == 'sigmoid' else ''}-K{K}-B{B}{'-per' if per else ''}"


def _inputs(rng, cfg, dtype):
    widths, act, loss, out, K, B, per = cfg
    mlp = fasttrap.MLP(widths, act, loss, out)
    theta = mlp.init(K, int(rng.integers(2**31)), np.float64)
    # Perturb away from the init so that biases and all units matter.
    theta += 0.05 * rng.standard_normal(theta.shape)
    shape = (K, B, widths[0]) if per else (B, widths[0])
    X = rng.standard_normal(shape)
    y = rng.integers(0, widths[-1], size=(K, B) if per else B)
    v = rng.standard_normal(theta.shape)
    return mlp, theta.astype(dtype), X.astype(dtype), y, v.astype(dtype)


def _check32(out, ref, what):
    out, ref = to_np(out).astype(np.float64), to_np(ref).astype(np.float64)
    assert np.all(np.isfinite(out)), f"{what}: non-finite values"
    err, cos = rel_l2(out, ref), cosine(out, ref)
    assert err <= 1e-4, f"{what}: relative L2 error {err:.2e} > 1e-4"
    assert cos >= 1 - 1e-6, f"{what}: cosine {cos:.9f} < 1 - 1e-6"
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    np.testing.assert_allclose(out, ref, rtol=2e-3, atol=2e-4 * scale + 1e-12, err_msg=what)


def _check64(out, ref, what):
    out, ref = to_np(out), to_np(ref)
    err = rel_l2(out, ref)
    assert err <= 1e-10, f"{what}: relative error {err:.2e} > 1e-10"


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_float64_matches_twin(rng, cfg, backend):
    mlp, theta, X, y, v = _inputs(rng, cfg, np.float64)
    L, g = fasttrap.value_and_grad(mlp, theta, X, y, backend=backend)
    Lr, gr = reference.value_and_grad(mlp, theta, X, y)
    _check64(L, Lr, "L")
    _check64(g, gr, "grad L")
    Hv = fasttrap.hvp(mlp, theta, X, y, v, backend=backend)
    _check64(Hv, reference.hvp(mlp, theta, X, y, v), "Hv")
    L2, G, dG = fasttrap.grad_G(mlp, theta, X, y, backend=backend)
    L2r, Gr, dGr = reference.grad_G(mlp, theta, X, y)
    _check64(L2, L2r, "L (grad_G)")
    _check64(G, Gr, "G")
    _check64(dG, dGr, "grad G")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_float32_matches_twin(rng, cfg, backend):
    mlp, theta, X, y, v = _inputs(rng, cfg, np.float32)
    th64, X64, v64 = theta.astype(np.float64), X.astype(np.float64), v.astype(np.float64)
    L, g = fasttrap.value_and_grad(mlp, theta, X, y, backend=backend)
    assert to_np(L).dtype == np.float32 and to_np(g).dtype == np.float32
    Lr, gr = reference.value_and_grad(mlp, th64, X64, y)
    _check32(L, Lr, "L")
    _check32(g, gr, "grad L")
    _check32(fasttrap.hvp(mlp, theta, X, y, v, backend=backend), reference.hvp(mlp, th64, X64, y, v64), "Hv")
    L2, G, dG = fasttrap.grad_G(mlp, theta, X, y, backend=backend)
    L2r, Gr, dGr = reference.grad_G(mlp, th64, X64, y)
    _check32(L2, L2r, "L (grad_G)")
    _check32(G, Gr, "G")
    _check32(dG, dGr, "grad G")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_grad_G_consistent_with_hvp_and_grad(rng, backend):
    """∇G must equal hvp(v = ∇L), and G = ½‖∇L‖², within the compiled backend itself."""
    mlp, theta, X, y, _ = _inputs(rng, ((784, 100, 100, 10), "tanh", "nll", "identity", 5, 128, False), np.float64)
    L, g = fasttrap.value_and_grad(mlp, theta, X, y, backend=backend)
    L2, G, dG = fasttrap.grad_G(mlp, theta, X, y, backend=backend)
    Hg = fasttrap.hvp(mlp, theta, X, y, g, backend=backend)
    assert rel_l2(dG, Hg) < 1e-11
    assert rel_l2(G, 0.5 * (to_np(g) ** 2).sum(1)) < 1e-12
    assert rel_l2(L2, L) < 1e-14


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_models_are_independent(rng, backend):
    """Row k of a batched call equals the call on model k alone (no cross-talk between models)."""
    mlp, theta, X, y, _ = _inputs(rng, ((784, 100, 100, 10), "relu", "nll", "identity", 9, 128, False), np.float64)
    _, G, dG = fasttrap.grad_G(mlp, theta, X, y, backend=backend)
    for k in (0, 4, 8):
        _, Gk, dGk = fasttrap.grad_G(mlp, theta[k:k + 1], X, y, backend=backend)
        assert rel_l2(dGk[0], dG[k]) < 1e-12
        assert rel_l2(Gk, G[k:k + 1]) < 1e-12


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_does_not_change_results(rng, threads):
    mlp, theta, X, y, _ = _inputs(rng, ((784, 100, 100, 10), "relu", "nll", "identity", 7, 128, False), np.float64)
    with num_threads(1):
        ref = fasttrap.grad_G(mlp, theta, X, y, backend="cpu")
    with num_threads(threads):
        out = fasttrap.grad_G(mlp, theta, X, y, backend="cpu")
    for a, b in zip(out, ref):
        assert rel_l2(a, b) < 1e-13


@pytest.mark.parametrize("chunk", [1, 2, 5, 64])
def test_chunk_size_does_not_change_results(rng, chunk):
    mlp, theta, X, y, _ = _inputs(rng, ((784, 100, 100, 10), "sigmoid", "mse", "sigmoid", 11, 128, False), np.float64)
    from fasttrap.ops import backend as be

    old = be.get_chunk()
    try:
        be.set_chunk(1)
        ref = fasttrap.grad_G(mlp, theta, X, y, backend="cpu")
        be.set_chunk(chunk)
        out = fasttrap.grad_G(mlp, theta, X, y, backend="cpu")
    finally:
        be.set_chunk(old)
    for a, b in zip(out, ref):
        assert rel_l2(a, b) < 1e-13


def test_torch_tensors_in_torch_tensors_out(rng):
    mlp, theta, X, y, v = _inputs(rng, ((7, 3, 5), "tanh", "nll", "identity", 3, 5, False), np.float64)
    tt, Xt, yt, vt = map(torch.from_numpy, (theta, X, y, v))
    for be in ("cpu", "torch"):
        L, G, dG = fasttrap.grad_G(mlp, tt, Xt, yt, backend=be)
        assert isinstance(dG, torch.Tensor) and dG.dtype == torch.float64 and dG.shape == tt.shape
        Hv = fasttrap.hvp(mlp, tt, Xt, yt, vt, backend=be)
        assert isinstance(Hv, torch.Tensor)
    L, G, dG = fasttrap.grad_G(mlp, theta, X, y, backend="torch")
    assert isinstance(dG, np.ndarray)


def test_non_contiguous_inputs_are_copied(rng):
    mlp, theta, X, y, v = _inputs(rng, ((7, 3, 5), "relu", "nll", "identity", 3, 5, False), np.float64)
    theta_nc = np.asfortranarray(theta)
    X_nc = np.repeat(X, 2, axis=0)[::2]
    assert not theta_nc.flags.c_contiguous and not X_nc.flags.c_contiguous
    a = fasttrap.grad_G(mlp, theta_nc, X_nc, y, backend="cpu")
    b = fasttrap.grad_G(mlp, theta, X, y, backend="cpu")
    for x, z in zip(a, b):
        np.testing.assert_array_equal(x, z)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("want_grad", [False, True])
def test_evaluate_matches_twin(rng, backend, want_grad):
    mlp = fasttrap.MLP((30, 12, 4), "tanh", "nll")
    theta = mlp.init(3, 5, np.float64)
    X = rng.standard_normal((2501, 30))
    y = rng.integers(0, 4, 2501)
    loss, acc, grad = fasttrap.evaluate(mlp, theta, X, y, want_grad, block=256, backend=backend)
    lr_, ar_, gr_ = reference.evaluate(mlp, theta, X, y, want_grad, block=1000)
    assert rel_l2(loss, lr_) < 1e-12
    np.testing.assert_array_equal(to_np(acc), to_np(ar_))
    # the full-data value equals value_and_grad on the whole set at once
    L, g = fasttrap.value_and_grad(mlp, theta, X, y, backend="torch")
    assert rel_l2(loss, L) < 1e-12
    if want_grad:
        assert rel_l2(grad, gr_) < 1e-11
        assert rel_l2(grad, g) < 1e-11
    else:
        assert grad is None


def test_evaluate_single_model_uses_block_split(rng):
    """K = 1 with 2+ threads takes the data-parallel path; it must agree with the model-parallel one."""
    mlp = fasttrap.MLP((10, 9, 3), "relu", "mse", "sigmoid")
    theta = mlp.init(1, 0, np.float64)
    X = rng.standard_normal((5000, 10))
    y = rng.integers(0, 3, 5000)
    with num_threads(1):
        a = fasttrap.evaluate(mlp, theta, X, y, True, block=128, backend="cpu")
    with num_threads(2):
        b = fasttrap.evaluate(mlp, theta, X, y, True, block=128, backend="cpu")
    for u, w in zip(a, b):
        assert rel_l2(u, w) < 1e-12
