"""grad_G on the CPU: fasttrap's fused core against the pure-torch paths.

    python -m pytest benchmarks/bench_grad_G.py

784-100-100-10, B = 128, float32, K ∈ {1, 8, 64}. Compared (same inputs, agreement checked
first):
  fasttrap        the compiled fused step (one call for all K)
  twin-loop       fasttrap.reference.grad_G called once per model (autograd double backward)
  twin-batched    fasttrap.reference.grad_G on all K at once (batched matmuls)
  func-fwdrev     torch.func: vmap over models of jvp(grad) (forward-over-reverse)
  func-revrev     torch.func: vmap of grad(½‖grad‖²) (reverse-over-reverse)
  ...-compiled    the same under torch.compile, where it compiles
Reported: model-steps/s, achieved GFLOP/s counting each implementation's own arithmetic (the
fused algorithm's for fasttrap, flops.fused_grad_G; the generic forward + backward + R-operator's,
105.6 MFLOP per model-step, for every torch path, flops.textbook_grad_G), the SGEMM rate measured
beside each timing, and the textbook bound: the model-steps/s that generic autodiff would reach if
it ran at that SGEMM rate.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fasttrap
from fasttrap import reference
from fasttrap.ops import flops

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import agreement, func_grad_G  # noqa: E402
from conftest import sgemm_rate  # noqa: E402

MLP = fasttrap.MLP((784, 100, 100, 10))
B = 128
KS = [1, 8, 64]
IMPLS = ["fasttrap", "twin-loop", "twin-batched", "func-fwdrev", "func-revrev",
         "func-fwdrev-compiled", "func-revrev-compiled"]


def _problem(K: int):
    # A real, normalised MNIST batch and K models near their initialisation.
    ds = fasttrap.model.data.load("mnist")
    rng = np.random.default_rng(K)
    idx = rng.choice(len(ds.y_train), B, replace=False)
    theta = MLP.init(K, 7) + np.float32(0.01) * rng.standard_normal((K, MLP.n_params)).astype(np.float32)
    return theta, ds.X_train[idx], ds.y_train[idx]


def make(impl: str, theta, X, y):
    if impl == "fasttrap":
        return lambda: fasttrap.grad_G(MLP, theta, X, y, backend="cpu")[2]
    tt, Xt, yt = torch.from_numpy(theta), torch.from_numpy(X), torch.from_numpy(y)
    if impl == "twin-loop":
        return lambda: torch.cat([reference.grad_G(MLP, tt[k:k + 1], Xt, yt)[2] for k in range(tt.shape[0])])
    if impl == "twin-batched":
        return lambda: reference.grad_G(MLP, tt, Xt, yt)[2]
    kind = "fwdrev" if "fwdrev" in impl else "revrev"
    f = func_grad_G(MLP, kind, impl.endswith("compiled"))
    return lambda: f(tt, Xt, yt)


@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("impl", IMPLS)
def test_grad_G(benchmark, recorder, impl, K):
    theta, X, y = _problem(K)
    ref = reference.grad_G(MLP, theta.astype(np.float64), X.astype(np.float64), y)[2].numpy()
    fn = make(impl, theta, X, y)
    try:
        t0 = time.perf_counter()
        out = fn()
        first_call = time.perf_counter() - t0
    except Exception as exc:  # torch.compile may not handle a transform: record, do not fail
        recorder.add("cpu_grad_G", _module=__name__, impl=impl, K=K, error=f"{type(exc).__name__}: {exc}"[:200])
        pytest.skip(f"{impl} unavailable: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}")
    out = out.detach().numpy() if hasattr(out, "detach") else np.asarray(out)
    err, med, kinks = agreement(out, ref)
    assert med < 1e-5 and kinks <= max(1, K // 100), \
        f"{impl} disagrees with the float64 reference: per-model median {med:.2e}, {kinks} models above 1e-4"
    per_call = max(first_call, 1e-4)
    rounds = int(np.clip(3.0 / per_call, 3, 50))
    peak_before = sgemm_rate()
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: agreement checked, nothing timed
        return
    peak_after = sgemm_rate()
    t_med = benchmark.stats.stats.median
    peak = max(peak_before, peak_after)
    steps = K / t_med
    # Each implementation is credited with the arithmetic it does: the torch paths run the generic
    # algorithm, not fasttrap's smaller fused one.
    fl = flops.fused_grad_G(MLP, B, K) if impl == "fasttrap" else flops.textbook_grad_G(MLP, B)
    recorder.add("cpu_grad_G", _module=__name__, impl=impl, K=K, median_s=t_med, model_steps_s=steps,
                 gflops_own=steps * fl / 1e9, flop_count="fused" if impl == "fasttrap" else "textbook", sgemm_gflops=peak,
                 textbook_bound=peak * 1e9 / flops.textbook_grad_G(MLP, B), rel_err=err, median_err=med)
    benchmark.extra_info.update(model_steps_s=steps, sgemm_gflops=peak)


def format_table(rows: list[dict]) -> str:
    out = ["| K | implementation | model-steps/s | vs fasttrap | GFLOP/s (own arithmetic) | % of SGEMM | textbook bound | fasttrap / bound | median rel. err |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    by_k: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_k.setdefault(r["K"], {})[r["impl"]] = r
    for K in sorted(by_k):
        ours = by_k[K].get("fasttrap")
        for impl in IMPLS:
            r = by_k[K].get(impl)
            if r is None:
                continue
            if "error" in r:
                out.append(f"| {K} | {impl} | n/a | | | | | | {r['error'].splitlines()[0][:70]} |")
                continue
            rel = f"{ours['model_steps_s'] / r['model_steps_s']:.1f}x slower" if ours and impl != "fasttrap" else ""
            vsb = f"{r['model_steps_s'] / r['textbook_bound']:.2f}" if impl == "fasttrap" else ""
            out.append(f"| {K} | {impl} | {r['model_steps_s']:.0f} | {rel} | {r['gflops_own']:.1f} | "
                       f"{100 * r['gflops_own'] / r['sgemm_gflops']:.0f}% | {r['textbook_bound']:.0f} | {vsb} | {r['median_err']:.1e} |")
    return "\n".join(out)
