"""The inner descent on the CPU: the compiled loop against its torch twin, on real MNIST.

    python -m pytest benchmarks/bench_inner.py

784-100-100-10, batch 128, shared batches, float32, K ∈ {16, 100} start points. Both run the
same batches and stopping rules (their agreement is a test, tests/dynamics/test_inner.py; here the first
steps are compared before timing). Reported: model-steps/s, and the projected time of the full
reference analysis on this machine: 100 outer points × 100 epochs × 469 steps = 4.69 M model-steps
per seed.
"""

from __future__ import annotations


import numpy as np
import pytest

import fasttrap
from fasttrap.model import data

MLP = fasttrap.MLP((784, 100, 100, 10))
FULL = 100 * 100 * 469
_ds: dict = {}


def _data():
    if "d" not in _ds:
        _ds["d"] = data.load("mnist")
    return _ds["d"]


def _start(K):
    """K distinct start points: outer steps 1..K of one SGD path."""
    ds = _data()
    res = fasttrap.outer_sgd(MLP, ds, seeds=[0], steps=K, record=list(range(1, K + 1)), curve_points=2, progress=False)
    assert res.thetas.shape[1] == K
    return res.thetas[0]


@pytest.mark.parametrize("K", [16, 100])
@pytest.mark.parametrize("impl", ["fasttrap-cpu", "twin"])
def test_inner_descent(benchmark, recorder, impl, K):
    ds = _data()
    th0 = _start(K)
    # The twin is slow; it still gets a warm-up round and three timed rounds of enough steps
    # (≥ 1 s each here) for a stable median.
    steps = 200 if impl == "fasttrap-cpu" else (30 if K == 16 else 10)
    be = "cpu" if impl == "fasttrap-cpu" else "torch"
    kw = dict(lr=0.01, batch_size=128, progress=False, evaluate=False, record_every=1)
    # agreement on the first steps before timing (float32: relative)
    a = fasttrap.inner_descent(MLP, th0[:4], ds, steps=3, backend="cpu", **kw)
    b = fasttrap.inner_descent(MLP, th0[:4], ds, steps=3, backend="torch", **kw)
    rel = float(np.linalg.norm(a.theta - b.theta) / np.linalg.norm(b.theta))
    assert rel < 1e-5, rel
    res = {}

    def go():
        res["r"] = fasttrap.inner_descent(MLP, th0, ds, steps=steps, backend=be, **kw)

    benchmark.pedantic(go, rounds=3, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: agreement checked, nothing timed

        return
    med = benchmark.stats.stats.median
    r = res["r"]
    assert r.theta.shape[0] == K and r.model_steps == K * steps, "every model must run every step"
    rate = r.model_steps / med
    recorder.add("cpu_inner", _module=__name__, impl=impl, K=K, steps=steps, seconds=med, model_steps_s=rate,
                 full_reference_hours=FULL / rate / 3600, threads=fasttrap.get_num_threads())


def format_table(rows):
    by = {(r["impl"], r["K"]): r for r in rows}
    out = ["| K | implementation | model-steps/s | fasttrap is | projected full reference analysis (4.69 M model-steps) |",
           "|---:|---|---:|---:|---:|"]
    for (impl, K), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ours = by.get(("fasttrap-cpu", K))
        rel = f"{ours['model_steps_s'] / r['model_steps_s']:.0f}x faster" if ours and impl != "fasttrap-cpu" else ""
        h = r["full_reference_hours"]
        out.append(f"| {K} | {impl} | {r['model_steps_s']:,.0f} | {rel} | {h:.2f} h per seed |" if h < 48 else
                   f"| {K} | {impl} | {r['model_steps_s']:,.0f} | {rel} | {h / 24:.1f} days per seed |")
    return "\n".join(out)
