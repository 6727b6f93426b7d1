"""Segmentation speed: 10⁶ outer points through fasttrap.analysis.traps.segment (Numba).

    python -m pytest benchmarks/bench_traps.py

Also times the NumPy reference of the rule (tests/naive/segment.py) on 10⁵ points for scale, and
checks that the two agree before timing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fasttrap.analysis import traps

# The slow reference lives with the tests' other naive references (tests/naive/, as stumpy keeps
# tests/naive.py); the benchmark compares against the same one.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from naive.segment import reference_segment  # noqa: E402


def _series(n, seed=0):
    rng = np.random.default_rng(seed)
    e2e = np.abs(rng.standard_normal(n)) * np.where(rng.random(n) < 0.05, 30.0, 0.3)
    yard = 1.0 + 0.1 * np.abs(rng.standard_normal(n))
    loss = np.repeat(rng.uniform(0.1, 2, n // 10 + 1), 10)[:n]
    G = np.repeat(np.exp(rng.uniform(-20, -2, n // 10 + 1)), 10)[:n]
    inv = rng.random(n) < 0.001
    return e2e, yard, loss, G, inv


@pytest.mark.parametrize("n", [10**6])
def test_segment_speed(benchmark, recorder, n):
    args = _series(n)
    small = tuple(a[:20_000] for a in args)
    np.testing.assert_array_equal(traps.segment(*small), reference_segment(*small))
    traps.segment(*args)   # compile outside the timing
    b = benchmark.pedantic(lambda: traps.segment(*args), rounds=10, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: agreement checked, nothing timed
        return
    t0 = time.perf_counter()
    reference_segment(*(a[:100_000] for a in args))
    ref_s = (time.perf_counter() - t0) * 10
    recorder.add("traps_segment", _module=__name__, n=n, median_s=benchmark.stats.stats.median,
                 boundaries=int(len(b)), numpy_reference_s_projected=ref_s)


def format_table(rows):
    out = ["| points | boundaries | segment() median | NumPy reference (projected from 10⁵) |", "|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['n']:,} | {r['boundaries']:,} | {1e3 * r['median_s']:.1f} ms | {r['numpy_reference_s_projected']:.1f} s |")
    return "\n".join(out)
