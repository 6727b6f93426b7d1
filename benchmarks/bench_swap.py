"""The cost of swap moves relative to a plain SGD step.

    python -m pytest benchmarks/bench_swap.py -s
    python -m pytest benchmarks/bench_swap.py --benchmark-disable     # the checks only (CI)

The reference net (784-100-100-10) on MNIST, 10 seeds at once, batch 128, float32, every move firing
at every step. Two measurements, in the same run:

* **the move itself**: ``fasttrap.dynamics.swap.apply_moves`` called alone for 300 steps on a fixed θ and
  minibatch (best of 5), against a plain SGD step (``outer_sgd`` without moves, 300 steps, best of
  5): the overhead in % of a step. This is the precise number.
* **end to end**: ``outer_sgd`` with and without the move, alternating, best of 5. Machine noise
  between two identical plain runs is a few % here, so this one only checks the first.

Data moves touch every image of the batch (``images=0``). With a temperature, each proposal costs two
minibatch losses (compiled value_and_grad calls), so Metropolis costs about a step: reported too.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import fasttrap
from fasttrap import Swap
from fasttrap.model import data

MLP = fasttrap.MLP((784, 100, 100, 10))
SEEDS = list(range(10))
STEPS = 300
MOVES = {
    "pixels (all 128 images, 1 pair)": [Swap("pixels", images=0)],
    "rows@1": [Swap("rows", layer=1)],
    "columns@1": [Swap("columns", layer=1)],
    "paired@1": [Swap("paired", layer=1)],
    "kick@1": [Swap("kick", layer=1)],
    "rows@1, Metropolis T=0.01": [Swap("rows", layer=1, temperature=0.01)],
}
_cache: dict = {}


def _ds():
    if "ds" not in _cache:
        _cache["ds"] = data.load("mnist")
    return _cache["ds"]


def _moves_alone(moves, steps=STEPS) -> float:
    from fasttrap.dynamics import swap

    S = len(SEEDS)
    theta = np.stack([MLP.init(1, s)[0] for s in SEEDS])
    ds = _ds()
    Xb, yb = np.ascontiguousarray(ds.X_train[: S * 128].reshape(S, 128, 784)), ds.y_train[: S * 128].reshape(S, 128)
    log, al = swap.MoveLog.empty(len(moves), S), swap.Alignment(MLP, S)

    def loss(th, X, y):
        return fasttrap.value_and_grad(MLP, th, X, y, backend="cpu")[0]

    t0 = time.perf_counter()
    for t in range(steps):
        swap.apply_moves(moves, MLP, theta, Xb, yb, t, SEEDS, ds.image_shape, log, al, loss)
    return time.perf_counter() - t0


def _run(moves, steps=STEPS):
    t0 = time.perf_counter()
    r = fasttrap.outer_sgd(MLP, _ds(), SEEDS, steps=steps, record=[steps], curve_points=0, progress=False,
                           moves=moves, backend="cpu")
    return time.perf_counter() - t0, r


@pytest.mark.parametrize("name", list(MOVES))
def test_move_cost(benchmark, recorder, name):
    moves = MOVES[name]
    _, r = _run(moves, steps=5)
    assert r.moves.proposed.sum() == 5 * len(SEEDS)             # the move fired at every step, for every seed
    if benchmark.disabled:
        return
    plain, moved, alone = [], [], []
    for _ in range(5):
        plain.append(_run(None)[0])
        moved.append(_run(moves)[0])
        alone.append(_moves_alone(moves))
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    tp, tm, ta = min(plain) / STEPS, min(moved) / STEPS, min(alone) / STEPS
    recorder.add("cpu_swap", _module=__name__, move=name, plain_ms=1e3 * tp, move_ms=1e3 * ta,
                 move_pct=100 * ta / tp, moved_ms=1e3 * tm, end_to_end_pct=100 * (tm - tp) / tp, seeds=len(SEEDS),
                 threads=fasttrap.get_num_threads())


def format_table(rows: list[dict]) -> str:
    out = [f"### Swap moves, 784-100-100-10, {rows[0]['seeds']} seeds, batch 128, {rows[0]['threads']} threads", "",
           "| move (fires every step) | plain step | the move alone | % of a step | step with the move (end to end) | "
           "end-to-end difference |", "|---|---:|---:|---:|---:|---:|"]
    out += [f"| {r['move']} | {r['plain_ms']:.2f} ms | {r['move_ms']:.3f} ms | {r['move_pct']:.1f}% | "
            f"{r['moved_ms']:.2f} ms | {r['end_to_end_pct']:+.1f}% |" for r in rows]
    return "\n".join(out)
