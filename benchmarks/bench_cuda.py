"""grad_G on the GPU: fasttrap's CUDA core against the torch CUDA paths.

    python -m pytest benchmarks/bench_cuda.py

784-100-100-10, B = 128, float32, K ∈ {64, 900}, all on one device, agreement with a float64
reference checked before timing:
  fasttrap-cuda        the fused CUDA step (cuBLAS GEMMs + fused elementwise kernels)
  fasttrap-cuda-tf32   the same with TF32 tensor-core GEMMs
  twin-loop            fasttrap.reference.grad_G per model (torch CUDA autograd, double backward)
  twin-batched         the twin on all K at once (batched matmuls, double backward)
  func-fwdrev/-revrev  torch.func vmap of jvp(grad) / grad(½‖grad‖²), and torch.compile'd
Reported: model-steps/s, TFLOP/s counting the fused algorithm's arithmetic, and the float32
SGEMM rate (torch.mm, 8192³, TF32 off) measured in the same run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fasttrap
from fasttrap.ops import cuda as ftcuda, flops
from fasttrap import reference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import agreement, func_grad_G  # noqa: E402

pytestmark = pytest.mark.skipif(not fasttrap.cuda_available(), reason="no CUDA device")

MLP = fasttrap.MLP((784, 100, 100, 10))
B = 128
KS = [64, 900]
# The peer at its best: torch.compile's default mode, "reduce-overhead" (CUDA graphs, as fasttrap
# replays) and "max-autotune".
IMPLS = ["fasttrap-cuda", "fasttrap-cuda-tf32", "twin-batched", "twin-loop", "func-fwdrev", "func-revrev",
         "func-fwdrev-compiled", "func-revrev-compiled", "func-fwdrev-reduce-overhead", "func-revrev-reduce-overhead",
         "func-revrev-max-autotune"]


def gpu_sgemm_tflops(n: int = 8192, tf32: bool = False) -> float:
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
        for _ in range(3):
            torch.mm(a, b)
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(10):
            s.record()
            torch.mm(a, b)
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        return 2 * n**3 / float(np.median(times)) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _problem(K):
    # Real inputs: a normalised MNIST batch, and K models near their initialisation (random
    # unnormalised pixels saturate some models' softmax, where every float32 implementation
    # alike loses the digits of 1 - p; that would measure float32, not the implementations).
    ds = fasttrap.model.data.load("mnist")
    idx = np.random.default_rng(K).choice(len(ds.y_train), B, replace=False)
    g = torch.Generator(device="cuda").manual_seed(K)
    theta = torch.from_numpy(MLP.init(K, 7)).cuda() + 0.01 * torch.randn(K, MLP.n_params, device="cuda", generator=g)
    X = torch.from_numpy(ds.X_train[idx]).cuda()
    y = torch.from_numpy(ds.y_train[idx]).cuda()
    return theta.contiguous(), X, y


def make(impl, theta, X, y):
    if impl.startswith("fasttrap-cuda"):
        tf32 = impl.endswith("tf32")

        def f():
            ftcuda.set_tf32(tf32)
            try:
                return fasttrap.grad_G(MLP, theta, X, y, backend="cuda")[2]
            finally:
                ftcuda.set_tf32(False)
        return f
    if impl == "twin-loop":
        return lambda: torch.cat([reference.grad_G(MLP, theta[k:k + 1], X, y)[2] for k in range(theta.shape[0])])
    if impl == "twin-batched":
        return lambda: reference.grad_G(MLP, theta, X, y)[2]
    mode = next((m for m in ("reduce-overhead", "max-autotune") if impl.endswith(m)), None)
    f = func_grad_G(MLP, "fwdrev" if "fwdrev" in impl else "revrev", mode or impl.endswith("compiled"))
    if mode == "reduce-overhead":
        # CUDA-graph replays reuse their output buffers: clone, as a caller keeping results must.
        return lambda: f(theta, X, y).clone()
    return lambda: f(theta, X, y)


@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("impl", IMPLS)
def test_grad_G_cuda(benchmark, recorder, impl, K):
    theta, X, y = _problem(K)
    ref = reference.grad_G(MLP, theta.double(), X.double(), y)[2]
    fn = make(impl, theta, X, y)
    try:
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - e.g. torch.compile failing on a transform
        recorder.add("cuda_grad_G", _module=__name__, impl=impl, K=K, error=f"{type(exc).__name__}: {exc}"[:200])
        pytest.skip(f"{impl} unavailable: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}")
    err, med, kinks = agreement(out.detach().double().cpu().numpy(), ref.cpu().numpy())
    tol = 3e-2 if impl.endswith("tf32") else 1e-5
    assert med < tol and kinks <= (K if impl.endswith("tf32") else max(1, K // 100)), \
        f"{impl}: per-model median relative error {med:.2e}, {kinks} models above 1e-4"

    def timed():
        fn()
        torch.cuda.synchronize()

    # a second call, to know the steady cost (the first may compile)
    t0 = time.perf_counter()
    timed()
    per = time.perf_counter() - t0
    rounds = int(np.clip(2.0 / max(per, 1e-5), 3, 200))
    peak = gpu_sgemm_tflops()
    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: agreement checked, nothing timed
        return
    t_med = benchmark.stats.stats.median
    steps = K / t_med
    recorder.add("cuda_grad_G", _module=__name__, impl=impl, K=K, median_s=t_med, model_steps_s=steps,
                 # each implementation credited with its own arithmetic (torch runs the generic one)
                 tflops=steps * (flops.fused_grad_G(MLP, B, K) if impl.startswith("fasttrap")
                                 else flops.textbook_grad_G(MLP, B)) / 1e12, sgemm_tflops=peak,
                 sgemm_tf32_tflops=gpu_sgemm_tflops(tf32=True), rel_err=err, median_err=med, kink_models=kinks,
                 first_call_s=first,
                 device=torch.cuda.get_device_name())


def format_table(rows):
    by_k: dict = {}
    for r in rows:
        by_k.setdefault(r["K"], {})[r["impl"]] = r
    out = ["| K | implementation | model-steps/s | fasttrap-cuda is | TFLOP/s (own arithmetic) | % of FP32 SGEMM | median rel. err vs fp64 | models on a ReLU kink |",
           "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for K in sorted(by_k):
        ours = by_k[K].get("fasttrap-cuda")
        for impl in IMPLS:
            r = by_k[K].get(impl)
            if r is None:
                continue
            if "error" in r:
                out.append(f"| {K} | {impl} | n/a | | | | {r['error'].splitlines()[0][:70]} |")
                continue
            rel = f"{ours['model_steps_s'] / r['model_steps_s']:.1f}x faster" if ours and not impl.startswith("fasttrap") else ""
            out.append(f"| {K} | {impl} | {r['model_steps_s']:,.0f} | {rel} | {r['tflops']:.2f} | "
                       f"{100 * r['tflops'] / r['sgemm_tflops']:.0f}% | {r['median_err']:.1e} | {r['kink_models']} |")
    any_r = next((r for rs in by_k.values() for r in rs.values() if "sgemm_tflops" in r), None)
    if any_r:
        out.append("")
        out.append(f"Device: {any_r['device']}; FP32 SGEMM (torch.mm 8192³) {any_r['sgemm_tflops']:.1f} TFLOP/s, "
                   f"TF32 {any_r['sgemm_tf32_tflops']:.1f} TFLOP/s, measured in the same run.")
    return "\n".join(out)
