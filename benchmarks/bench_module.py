"""Any module (fasttrap.TorchModel): the generic torch.func path against a naive loop, and the
compiled core against the generic path for an MLP, in one run.

    python -m pytest benchmarks/bench_module.py -s                          # CPU
    FASTTRAP_BENCH_DEVICE=cuda python -m pytest benchmarks/bench_module.py -s   # the GPU
    python -m pytest benchmarks/bench_module.py --benchmark-disable          # the agreement checks only (CI)

* **Per-sample gradient norms** ‖∇ℓ_α‖² of the small conv net (the aging paper's: two conv + two
  dense layers, 21,840 parameters) over N Fashion-MNIST/MNIST images:
  - generic: :func:`fasttrap.per_sample_grad_sq` on the TorchModel (``vmap(grad)`` over the rows of a
    block, blocks of 1,024 rows);
  - generic + ``torch.compile`` of that per-sample function (compile time reported apart);
  - naive: one backward pass per image, as a training loop would do it.
* **HVPs** of the small conv net for K parameter sets on one 128-image batch:
  - generic: :func:`fasttrap.hvp` (``vmap`` over K of forward-over-reverse ``jvp(grad)``);
  - naive: a loop over the K models of double backward (``autograd.grad`` with ``create_graph``).
* **The compiled core against the generic path**, for the reference MLP 784-100-100-10 given both
  as a :class:`fasttrap.MLP` and as the same ``torch.nn.Sequential``: ∇G = H∇L for K = 8 models on a
  128-row batch, and the per-sample norms over 10,000 rows (CPU only: the core's CUDA kernels have
  their own suite, ``bench_cuda.py``).

Every pair is checked for agreement (float64, or float32 by relative L2 error) before it is timed;
the ratios are measured in the same run.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

import fasttrap
from fasttrap.model import data, zoo

DEVICE = os.environ.get("FASTTRAP_BENCH_DEVICE", "cpu")
SUITE = f"{DEVICE}_module"
_cache: dict = {}

if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("FASTTRAP_BENCH_DEVICE=cuda but torch sees no GPU", allow_module_level=True)


def _ds():
    if "ds" not in _cache:
        try:
            _cache["ds"] = data.load("fashion-mnist")
        except data.DataError:
            _cache["ds"] = data.load("mnist")
    return _cache["ds"]


def _net(dtype=torch.float32):
    ds = _ds()
    tm = zoo.build("smallnet", ds.image_shape, ds.n_classes)
    tm.module.to(DEVICE, dtype)
    return tm


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _timed(fn, reps=3):
    """(best wall time over reps, last result); one untimed warm-up call first."""
    out = fn()
    _sync()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _loss(tm, t, x, y):
    return torch.nn.functional.cross_entropy(tm.forward(t, x), y)


def naive_per_sample_sq(tm, theta_row, X, y):
    """One backward pass per image: ‖∇ℓ_α‖² [N]."""
    t = theta_row.detach().clone().requires_grad_(True)
    out = torch.empty(X.shape[0], dtype=torch.float64, device=X.device)
    for a in range(X.shape[0]):
        (g,) = torch.autograd.grad(_loss(tm, t, X[a:a + 1], y[a:a + 1]), t)
        out[a] = (g.double() ** 2).sum()
    return out


def naive_hvp(tm, theta, X, y, V):
    """A loop over the K models of double backward."""
    outs = []
    for k in range(theta.shape[0]):
        t = theta[k].detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_loss(tm, t, X, y), t, create_graph=True)
        (hv,) = torch.autograd.grad(g, t, V[k])
        outs.append(hv)
    return torch.stack(outs)


def compiled_per_sample(tm):
    """torch.compile of vmap(grad) over the rows of a block (one model): ‖∇ℓ_α‖² [b]."""
    def one(t, x, y):
        return _loss(tm, t, x[None], y[None])

    f = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))
    return torch.compile(lambda t, X, y: (f(t, X, y).double() ** 2).sum(1), dynamic=False)


def test_per_sample_norms_generic_against_a_naive_loop(benchmark, recorder):
    ds = _ds()
    N = (4096 if DEVICE == "cuda" else 1024) if not benchmark.disabled else 64
    tm = _net(torch.float64 if benchmark.disabled else torch.float32)
    dt = torch.float64 if benchmark.disabled else torch.float32
    th = torch.as_tensor(tm.init(1, 0)).to(DEVICE, dt)
    X = torch.as_tensor(ds.X_train[:N]).to(DEVICE, dt).reshape(N, *ds.image_shape)
    y = torch.as_tensor(ds.y_train[:N]).to(DEVICE)
    res = {}
    benchmark.pedantic(lambda: res.setdefault("g", fasttrap.per_sample_grad_sq(tm, th, X, y, False, 1024)),
                       rounds=1, iterations=1)
    gen = res["g"][0][0].double()                               # ‖∇ℓ_α‖² [N] of the one model
    naive_n = min(N, 256 if not benchmark.disabled else N)      # the loop is timed on a part, per image
    t_naive, ref = _timed(lambda: naive_per_sample_sq(tm, th[0], X[:naive_n], y[:naive_n]), reps=1)
    err = float((gen[:naive_n] - ref).norm() / ref.norm())
    assert err < (1e-10 if dt == torch.float64 else 1e-4), err
    if benchmark.disabled:
        return
    t_gen, _ = _timed(lambda: fasttrap.per_sample_grad_sq(tm, th, X, y, False, 1024))
    row = dict(what="per_sample_sq smallnet", device=DEVICE, N=N, P=tm.n_params, generic_s=t_gen,
               naive_s_per_row=t_naive / naive_n, naive_s=t_naive / naive_n * N, rel_err=err)
    row["speedup_generic_vs_naive"] = row["naive_s"] / t_gen
    try:
        f = compiled_per_sample(tm)
        t0 = time.perf_counter()
        c = f(th[0], X[:1024], y[:1024])
        _sync()
        row["compile_s"] = time.perf_counter() - t0
        row["compiled_rel_err"] = float((c[:naive_n] - ref).norm() / ref.norm())
        t_c, _ = _timed(lambda: [f(th[0], X[r:r + 1024], y[r:r + 1024]) for r in range(0, N, 1024)])
        row["compiled_s"] = t_c
        row["speedup_compiled_vs_generic"] = t_gen / t_c
    except Exception as exc:  # noqa: BLE001 - torch.compile's failures are recorded, not fatal
        row["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    recorder.add(SUITE, _module=__name__, **row)


@pytest.mark.parametrize("K", [1, 8])
def test_hvps_generic_against_a_naive_loop(benchmark, recorder, K):
    ds = _ds()
    B = 128
    dt = torch.float64 if benchmark.disabled else torch.float32
    tm = _net(dt)
    th = torch.as_tensor(tm.init(K, 1)).to(DEVICE, dt)
    X = torch.as_tensor(ds.X_train[:B]).to(DEVICE, dt).reshape(B, *ds.image_shape)
    y = torch.as_tensor(ds.y_train[:B]).to(DEVICE)
    V = torch.randn(th.shape, generator=torch.Generator().manual_seed(K), dtype=torch.float64).to(DEVICE, dt)
    res = {}
    benchmark.pedantic(lambda: res.setdefault("g", fasttrap.hvp(tm, th, X, y, V)), rounds=1, iterations=1)
    t_naive, ref = _timed(lambda: naive_hvp(tm, th, X, y, V))
    err = float((res["g"] - ref).norm() / ref.norm())
    assert err < (1e-10 if dt == torch.float64 else 1e-4), err
    if benchmark.disabled:
        return
    t_gen, _ = _timed(lambda: fasttrap.hvp(tm, th, X, y, V))
    recorder.add(SUITE, _module=__name__, what=f"hvp smallnet K={K}", device=DEVICE, N=B, P=tm.n_params,
                 generic_s=t_gen, naive_s=t_naive, speedup_generic_vs_naive=t_naive / t_gen, rel_err=err)


def test_hvp_float64_against_float32(benchmark, recorder):
    """What the certificates (float64) pay for precision on the small conv net: one HVP over 500 images."""
    ds = _ds()
    n = 500 if not benchmark.disabled else 20
    out = {}
    for dt in (torch.float32, torch.float64):
        tm = _net(dt)
        th = torch.as_tensor(tm.init(1, 2)).to(DEVICE, dt)
        X = torch.as_tensor(ds.X_train[:n]).to(DEVICE, dt).reshape(n, *ds.image_shape)
        y = torch.as_tensor(ds.y_train[:n]).to(DEVICE)
        V = torch.randn(th.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(DEVICE, dt)
        out[dt] = _timed(lambda: fasttrap.hvp(tm, th, X, y, V), reps=1 if benchmark.disabled else 3)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    a, b = out[torch.float32][1].double(), out[torch.float64][1]
    err = float((a - b).norm() / b.norm())
    assert err < 1e-4, err
    if benchmark.disabled:
        return
    recorder.add(SUITE, _module=__name__, what="hvp smallnet float64 vs float32", device=DEVICE, N=n,
                 P=tm.n_params, f32_s=out[torch.float32][0], f64_s=out[torch.float64][0], rel_err=err)


def _mlp_as_module(dt):
    widths = (784, 100, 100, 10)
    net = torch.nn.Sequential(torch.nn.Linear(784, 100), torch.nn.ReLU(), torch.nn.Linear(100, 100), torch.nn.ReLU(),
                              torch.nn.Linear(100, 10)).to(dt)
    return fasttrap.MLP(widths), fasttrap.TorchModel(net, input_shape=(784,))


@pytest.mark.skipif(DEVICE != "cpu", reason="the compiled core's CUDA kernels have their own suite (bench_cuda.py)")
@pytest.mark.parametrize("op", ["grad_G", "per_sample_grad_sq"])
def test_the_compiled_core_against_the_generic_path_for_an_mlp(benchmark, recorder, op):
    ds = _ds()
    dt = np.float64 if benchmark.disabled else np.float32
    mlp, tm = _mlp_as_module(torch.float64 if dt == np.float64 else torch.float32)
    K = 8 if op == "grad_G" else 1
    theta = mlp.init(K, 0, dt)
    if op == "grad_G":
        X, y = ds.X_train[:128].astype(dt), ds.y_train[:128]
        core = lambda: fasttrap.grad_G(mlp, theta, X, y, backend="cpu")[2]          # noqa: E731
        gen = lambda: fasttrap.grad_G(tm, theta, X, y)[2]                             # noqa: E731
    else:
        n = 10_000 if not benchmark.disabled else 200
        X, y = ds.X_train[:n].astype(dt), ds.y_train[:n]
        core = lambda: fasttrap.per_sample_grad_sq(mlp, theta, X, y, False, 1024, backend="cpu")[0]  # noqa: E731
        gen = lambda: fasttrap.per_sample_grad_sq(tm, theta, X, y, False, 1024)[0]                  # noqa: E731
    res = {}
    benchmark.pedantic(lambda: res.setdefault("c", core()), rounds=1, iterations=1)
    t_gen, g = _timed(gen, reps=1 if op == "per_sample_grad_sq" else 3)
    a, b = np.asarray(res["c"], np.float64), np.asarray(g, np.float64)
    err = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    assert err < (1e-10 if dt == np.float64 else 1e-4), err
    if benchmark.disabled:
        return
    t_core, _ = _timed(core)
    recorder.add(SUITE, _module=__name__, what=f"{op} MLP 784-100-100-10 core vs generic", device=DEVICE,
                 N=X.shape[0], P=mlp.n_params, core_s=t_core, generic_s=t_gen,
                 speedup_core_vs_generic=t_gen / t_core, rel_err=err)


def format_table(rows):
    lines = [f"Generic torch.func path (fasttrap.TorchModel) against a naive loop, and the compiled core against "
             f"the generic path; device {rows[0]['device']}, torch {torch.__version__}, "
             f"{fasttrap.get_num_threads()} thread(s). Best of 3 (the naive per-sample loop: one pass over 256 "
             "images, scaled to N). Command: `" + ("FASTTRAP_BENCH_DEVICE=cuda " if rows[0]["device"] == "cuda" else "")
             + "python -m pytest benchmarks/bench_module.py -s`.", "",
             "| what | N | P | naive / core s | generic s | compiled s | speedup | rel. err |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        if "f64_s" in r:
            lines.append(f"| {r['what']} | {r['N']:,} | {r['P']:,} | float32 {r['f32_s']:.4f} | float64 {r['f64_s']:.4f} | – "
                         f"| float64 {r['f64_s'] / r['f32_s']:.1f}× slower | {r['rel_err']:.1e} |")
            continue
        if "core_s" in r:
            base, sp = r["core_s"], f"core {r['speedup_core_vs_generic']:.1f}× faster than generic"
        else:
            base = r["naive_s"]
            sp = f"generic {r['speedup_generic_vs_naive']:.1f}× faster than naive"
            if "compiled_s" in r:
                sp += f"; compiled {r['speedup_compiled_vs_generic']:.2f}× generic (compile {r['compile_s']:.0f} s)"
            elif "compile_error" in r:
                sp += f"; torch.compile failed: {r['compile_error']}"
        comp = f"{r['compiled_s']:.4f}" if "compiled_s" in r else "–"
        lines.append(f"| {r['what']} | {r['N']:,} | {r['P']:,} | {base:.4f} | {r['generic_s']:.4f} | {comp} | {sp} | "
                     f"{r['rel_err']:.1e} |")
    return "\n".join(lines)
