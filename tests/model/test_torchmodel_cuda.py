"""A TorchModel on the GPU: the torch.func path on CUDA tensors equals the CPU path (float64), and the
drivers (inner descent, certificates) run there with backend "cuda" (or "auto" where torch sees a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fasttrap
from fasttrap.model import zoo

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")


def _net():
    return zoo.build("smallnet", (1, 28, 28), 10)


def test_gpu_ops_equal_cpu_ops_in_float64(rng):
    tm = _net()
    tm.module.double()
    th = tm.init(3, 0, np.float64)
    X, y = rng.standard_normal((20, 784)), rng.integers(0, 10, 20)
    V = rng.standard_normal(th.shape)
    thc, Xc, yc, Vc = (torch.as_tensor(a).cuda() for a in (th, X, y, V))
    for name, args, cargs in (("value_and_grad", (), ()), ("hvp", (V,), (Vc,)), ("grad_G", (), ())):
        a = getattr(fasttrap, name)(tm, th, X, y, *args, backend="torch")         # NumPy, on the CPU
        b = getattr(fasttrap, name)(tm, thc, Xc, yc, *cargs)
        for u, w in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert w.device.type == "cuda"                                   # CUDA in, CUDA out
            np.testing.assert_allclose(u, w.cpu().numpy(), rtol=1e-9, atol=1e-12)
    for name in ("evaluate", "per_sample_grad_sq"):
        a = getattr(fasttrap, name)(tm, th, X, y, True, 8, backend="torch")
        b = getattr(fasttrap, name)(tm, thc, Xc, yc, True, 8)
        for u, w in zip(a, b):
            np.testing.assert_allclose(u, w.cpu().numpy(), rtol=1e-9, atol=1e-12)


def test_numpy_in_auto_runs_on_the_gpu(rng, monkeypatch):
    """backend='auto' with NumPy θ puts the work on the GPU (so outer SGD, aging and the gradient noise
    of a module run there) and hands NumPy back."""
    from fasttrap.reference import module as impl

    tm = _net()
    th = tm.init(1, 0)
    X, y = rng.standard_normal((8, 784)).astype(np.float32), rng.integers(0, 10, 8)
    seen = []
    real = impl.value_and_grad
    monkeypatch.setattr(impl, "value_and_grad", lambda m, t, *a: seen.append(t.device.type) or real(m, t, *a))
    L, g = fasttrap.value_and_grad(tm, th, X, y)
    assert seen == ["cuda"] and isinstance(g, np.ndarray)
    fasttrap.value_and_grad(tm, th, X, y, backend="torch")
    assert seen == ["cuda", "cpu"]


def test_the_inner_descent_and_certificates_run_on_the_gpu(rng):
    tm = _net()
    tm.module.double()
    th = tm.init(2, 1, np.float64)
    X, y = rng.standard_normal((64, 784)), rng.integers(0, 10, 64)
    kw = dict(steps=6, solver=fasttrap.SGD(lr=0.05, batch_size=16), record_every=1, progress=False)
    g = fasttrap.inner_descent(tm, th, (X, y), backend="cuda", **kw)
    c = fasttrap.inner_descent(tm, th, (X, y), backend="torch", **kw)
    assert g.settings["backend"] == "cuda" and fasttrap.ops.resolve_for(tm, "auto") == "cuda"
    np.testing.assert_allclose(g.theta, c.theta, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(g.G_trace, c.G_trace, rtol=1e-8)
    assert list(g.status) == list(c.status)
    ck = dict(k=2, k_max=4, lanczos_steps=10, slq_probes=1, slq_steps=6, minres_iters=10)
    a = fasttrap.certify(tm, g.theta, X, y, backend="cuda", **ck)
    b = fasttrap.certify(tm, g.theta, X, y, backend="torch", **ck)
    np.testing.assert_allclose(a.lambda_max, b.lambda_max, rtol=1e-7)
    np.testing.assert_allclose(a.grad_sq, b.grad_sq, rtol=1e-8)
    assert list(a.kind) == list(b.kind)


def test_resnet18_float32_on_the_gpu(rng):
    rn = zoo.build("resnet18", (3, 32, 32), 10)
    rn.module.cuda()
    th = torch.as_tensor(rn.init(2, 0)).cuda()
    X = torch.randn(8, 3, 32, 32, device="cuda")
    y = torch.as_tensor(rng.integers(0, 10, 8)).cuda()
    L, g = fasttrap.value_and_grad(rn, th, X, y)
    v = torch.randn_like(th)
    hv = fasttrap.hvp(rn, th, X, y, v)
    assert torch.isfinite(L).all() and torch.isfinite(g).all() and torch.isfinite(hv).all()
    assert float((v * hv).sum(1).abs().min()) > 0
