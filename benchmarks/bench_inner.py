"""The inner descent on the CPU: the compiled loop against its torch twin, on real MNIST.

    python -m pytest benchmarks/bench_inner.py

784-100-100-10, batch 128, float32. The compiled loop runs both batch orders side by side,
``shared`` (one order for every model: one gather and one Gram X Xᵀ per step for all) and
``independent`` (each inner run its own order, as the ``thesis`` protocol runs: a gather and a
Gram per model), at K ∈ {16, 100, 900} start points; the twin runs shared orders at K ∈ {16, 100}.
Both implementations run the same batches and stopping rules (their agreement is a test,
tests/dynamics/test_inner.py; here the first steps are compared before timing). Reported:
model-steps/s, the independent/shared ratio at each K, and two projections on this machine:
the full reference analysis of one seed (100 outer points × 100 epochs × 469 steps = 4.69 M
model-steps) and the descents of the whole ``thesis`` profile (``THESIS_MODEL_STEPS``).
"""

from __future__ import annotations


import numpy as np
import pytest

import fasttrap
from fasttrap.model import data

MLP = fasttrap.MLP((784, 100, 100, 10))
FULL = 100 * 100 * 469
EPOCH = 469                     # steps of batch 128 per epoch of the 60,000 rows
# The thesis profile's descents (fasttrap/run/config.py, PROFILES["thesis"]), all with independent
# orders: regime 2, 9 seeds × 100 outer points × 100 epochs; regime 1, 3 seeds × 50 points × 100
# epochs; the reruns of the first 3 seeds (sensitivity.seeds), with batch seed 1 (100 epochs) and
# with half the budget (50 epochs), at each of their 100 points.
THESIS_MODEL_STEPS = (9 * 100 * 100 + 3 * 50 * 100 + 3 * 100 * (100 + 50)) * EPOCH
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


CASES = [("fasttrap-cpu", "shared", K) for K in (16, 100, 900)] + \
        [("fasttrap-cpu", "independent", K) for K in (16, 100, 900)] + \
        [("twin", "shared", K) for K in (16, 100)]


@pytest.mark.parametrize("impl, batches, K", CASES, ids=[f"{i}-{b}-{k}" for i, b, k in CASES])
def test_inner_descent(benchmark, recorder, impl, batches, K):
    ds = _data()
    th0 = _start(K)
    # The twin is slow; it still gets a warm-up round and three timed rounds of enough steps
    # (≥ 1 s each here) for a stable median. K = 900 runs fewer steps for the same model-steps.
    steps = (200 if K <= 100 else 30) if impl == "fasttrap-cpu" else (30 if K == 16 else 10)
    be = "cpu" if impl == "fasttrap-cpu" else "torch"
    kw = dict(solver=fasttrap.SGD(lr=0.01, batch_size=128, batches=batches), progress=False, evaluate=False,
              record_every=1)
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
    # Executed model-steps: a model whose own batches take it past a stopping rule stops (at K = 900
    # with independent orders a few do); the rate counts what ran, and nearly everything must run.
    assert r.theta.shape[0] == K and r.model_steps >= 0.99 * K * steps, (r.model_steps, K * steps)
    rate = r.model_steps / med
    recorder.add("cpu_inner", _module=__name__, impl=impl, batches=batches, K=K, steps=steps,
                 executed_model_steps=int(r.model_steps), seconds=med,
                 model_steps_s=rate, full_reference_hours=FULL / rate / 3600,
                 thesis_descent_hours=THESIS_MODEL_STEPS / rate / 3600, threads=fasttrap.get_num_threads())


def format_table(rows):
    by = {(r["impl"], r.get("batches", "shared"), r["K"]): r for r in rows}
    out = ["| K | implementation | batch orders | model-steps/s | independent / shared | fasttrap is | "
           "projected full reference analysis (4.69 M model-steps) | projected thesis descents "
           f"({THESIS_MODEL_STEPS / 1e6:.1f} M model-steps) |",
           "|---:|---|---|---:|---:|---:|---:|---:|"]

    def dur(h):
        return f"{h:.2f} h" if h < 48 else f"{h / 24:.1f} days"

    for (impl, bo, K), r in sorted(by.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1] != "shared")):
        ours = by.get(("fasttrap-cpu", bo, K))
        rel = f"{ours['model_steps_s'] / r['model_steps_s']:.0f}x faster" if ours and impl != "fasttrap-cpu" else ""
        sh = by.get((impl, "shared", K))
        ratio = f"{r['model_steps_s'] / sh['model_steps_s']:.2f}" if bo == "independent" and sh else ""
        th = THESIS_MODEL_STEPS / r["model_steps_s"] / 3600
        out.append(f"| {K} | {impl} | {bo} | {r['model_steps_s']:,.0f} | {ratio} | {rel} | "
                   f"{dur(r['full_reference_hours'])} per seed | {dur(th)} |")
    return "\n".join(out)
