"""Swap moves during SGD: exact symmetry of paired swaps, data never touched, resumability bit for bit,
the Metropolis rate, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import fasttrap
from fasttrap import reference
from fasttrap.model import data
from fasttrap.dynamics import swap
from fasttrap.dynamics.swap import Alignment, Draws, MoveLog, Swap, apply_data, apply_moves, apply_weight


def _one(m, mlp, th, step=0):
    """Move m on one parameter row (seed 0 at ``step``): the new row and its pairs."""
    out = th[None].copy()
    i, j = apply_weight(m, mlp, out, Draws([0], step), np.array([True]))
    return out[0], list(zip(i[0], j[0]))
from fasttrap.model.data import Dataset


@pytest.fixture(scope="module")
def small():
    return data.load("mnist").subset(1000, 200)


def _colour(rng, n=300, classes=4):
    X = rng.standard_normal((n, 3 * 4 * 4)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return Dataset(X, y, X[:50], y[:50], "synthetic", "none", classes, {"image_shape": (3, 4, 4)})


def test_paired_swap_leaves_outputs_and_loss_unchanged(rng):
    mlp = fasttrap.MLP((20, 9, 7, 3), "tanh")
    th = mlp.init(1, 0, np.float64)[0] + 0.1 * rng.standard_normal(mlp.n_params)
    X, y = rng.standard_normal((40, 20)), rng.integers(0, 3, 40)
    for layer in (1, 2):
        new, pairs = _one(Swap("paired", layer=layer, pairs=4), mlp, th, step=layer)
        assert not np.array_equal(new, th) and len(pairs) == 4
        z0 = reference.outputs(mlp, reference.as_tensor(th[None]), reference.as_tensor(X)).numpy()
        z1 = reference.outputs(mlp, reference.as_tensor(new[None]), reference.as_tensor(X)).numpy()
        np.testing.assert_allclose(z1, z0, rtol=0, atol=1e-12)
        L0 = fasttrap.value_and_grad(mlp, th[None], X, y, backend="cpu")[0]
        L1 = fasttrap.value_and_grad(mlp, new[None], X, y, backend="cpu")[0]
        assert abs(L1[0] - L0[0]) <= 1e-12
    # a rows swap is not a symmetry: it changes the outputs
    new, _ = _one(Swap("rows", layer=1), mlp, th, step=7)
    z1 = reference.outputs(mlp, reference.as_tensor(new[None]), reference.as_tensor(X)).numpy()
    assert np.abs(z1 - z0).max() > 1e-3


def test_paired_swaps_under_sgd_give_the_permuted_baseline_path(small):
    """The negative control: with paired swaps at every step, the aligned path equals the plain path."""
    mlp = fasttrap.MLP((784, 12, 8, 10))
    kw = dict(lr=0.1, batch_size=32, steps=40, record="all", curve_points=0, progress=False, dtype=np.float64)
    base = fasttrap.outer_sgd(mlp, small, [0, 1], **kw)
    moves = [Swap("paired", layer=1, pairs=2), Swap("paired", layer=2, every=3)]
    sw = fasttrap.outer_sgd(mlp, small, [0, 1], moves=moves, **kw)
    raw = fasttrap.outer_sgd(mlp, small, [0, 1], moves=moves, align=False, **kw)
    assert not Alignment(mlp, 2, sw.alignment).identity
    assert np.abs(raw.thetas[:, -1] - base.thetas[:, -1]).max() > 1e-2       # the raw weights did move apart
    np.testing.assert_allclose(sw.thetas, base.thetas, rtol=0, atol=1e-10)   # but only by a relabelling
    np.testing.assert_allclose(Alignment(mlp, 2, sw.alignment).align(sw.theta_end), base.thetas[:, -1], atol=1e-10)
    assert sw.moves.proposed[0].tolist() == [40, 40] and sw.moves.proposed[1].tolist() == [14, 14]


def test_data_swaps_never_change_the_stored_data(small, rng):
    mlp = fasttrap.MLP((784, 8, 10))
    before = small.X_train.copy()
    fasttrap.outer_sgd(mlp, small, [0], steps=20, moves=[Swap("pixels", pairs=50, images=0)], record=[20],
                       curve_points=0, progress=False)
    np.testing.assert_array_equal(small.X_train, before)
    col = _colour(rng)
    before = col.X_train.copy()
    fasttrap.outer_sgd(fasttrap.MLP((48, 8, 4)), col, [0], steps=20, moves=[Swap("channels", images=0)],
                       record=[20], curve_points=0, progress=False)
    np.testing.assert_array_equal(col.X_train, before)


def test_data_moves_exchange_what_they_say(rng):
    x = np.arange(2 * 3 * 16, dtype=np.float32).reshape(2, 48)
    out = x[None].copy()
    apply_data(Swap("channels", images=0), out, (3, 4, 4), Draws([3], 0), np.array([True]))
    out = out[0]
    for b in range(2):
        a, o = x[b].reshape(3, 16), out[b].reshape(3, 16)
        same = [c for c in range(3) if np.array_equal(a[c], o[c])]
        assert len(same) == 1 and sorted(map(tuple, o.tolist())) == sorted(map(tuple, a.tolist()))
    out = x[None].copy()
    apply_data(Swap("pixels", images=1, pairs=1), out, (3, 4, 4), Draws([3], 1), np.array([True]))
    out = out[0]
    changed = np.flatnonzero((out != x).any(axis=1))
    assert changed.size == 1                                      # one image of the two
    d = (out[changed[0]] != x[changed[0]]).reshape(3, 16)
    assert d.sum() == 6 and np.all(d.sum(axis=0)[d.any(axis=0)] == 3)   # two pixels, every channel
    np.testing.assert_array_equal(np.sort(out, axis=1), np.sort(x, axis=1))


def test_kick_has_the_norm_of_a_swap(rng):
    mlp = fasttrap.MLP((10, 6, 3))
    th = rng.standard_normal(mlp.n_params)
    for pairs in (2, 3):                          # several exchanges (which may undo each other) have a norm too
        new_rows, _ = _one(Swap("rows", layer=1, pairs=pairs), mlp, th, step=9)
        new_kick, _ = _one(Swap("kick", layer=1, pairs=pairs), mlp, th, step=9)
        assert np.linalg.norm(new_kick - th) == pytest.approx(np.linalg.norm(new_rows - th), rel=1e-12, abs=1e-14)
    new_rows, pr = _one(Swap("rows", layer=1), mlp, th, step=4)
    new_kick, pk = _one(Swap("kick", layer=1), mlp, th, step=4)
    assert pr == pk                                                   # the same swap drawn
    assert np.linalg.norm(new_kick - th) == pytest.approx(np.linalg.norm(new_rows - th), rel=1e-12)
    assert np.linalg.norm(new_rows - th) > 0
    ow, ob, oe = mlp.layer_offsets()[0]
    np.testing.assert_array_equal(new_kick[oe:], th[oe:])            # only layer 1 moves,
    rows = sorted({int(v) for p in pk for v in p})
    W0, Wk = th[ow:ob].reshape(6, 10), new_kick[ow:ob].reshape(6, 10)
    others = [r for r in range(6) if r not in rows]
    np.testing.assert_array_equal(Wk[others], W0[others])            # only the rows the swap touches,
    assert np.count_nonzero(Wk[rows] - W0[rows]) == 10 * len(rows)   # in a random direction, not a swap


@pytest.mark.parametrize("moves", [
    [Swap("pixels", pairs=3, images=4)],
    [Swap("rows", layer=1, prob=0.3)],
    [Swap("columns", layer=2, every=2, pairs=2)],
    [Swap("paired", layer=1, temperature=0.05)],
    [Swap("kick", layer=1, temperature=0.0), Swap("pixels", prob=0.5, temperature=0.01)],
], ids=lambda m: "+".join(x.label() for x in m))
def test_moves_are_reproducible_and_resumable_bit_for_bit(small, moves):
    mlp = fasttrap.MLP((784, 10, 10))
    kw = dict(lr=0.05, batch_size=16, curve_points=0, progress=False)
    full = fasttrap.outer_sgd(mlp, small, [0, 5], steps=30, record=[30], moves=moves, **kw)
    again = fasttrap.outer_sgd(mlp, small, [0, 5], steps=30, record=[30], moves=moves, **kw)
    a = fasttrap.outer_sgd(mlp, small, [0, 5], steps=13, record=[13], moves=moves, **kw)
    b = fasttrap.outer_sgd(mlp, small, [0, 5], steps=30, start=13, theta0=a.theta_end, alignment0=a.alignment,
                           record=[30], moves=moves, **kw)
    assert full.thetas.tobytes() == again.thetas.tobytes() == b.thetas.tobytes()
    assert full.theta_end.tobytes() == b.theta_end.tobytes()
    assert np.array_equal(full.moves.proposed, a.moves.proposed + b.moves.proposed)
    assert np.array_equal(full.moves.accepted, a.moves.accepted + b.moves.accepted)
    assert full.moves.proposed.sum() > 0
    plain = fasttrap.outer_sgd(mlp, small, [0, 5], steps=30, record=[30], **kw)
    assert not np.array_equal(plain.thetas, full.thetas) or all(m.kind == "paired" for m in moves)


def test_no_moves_is_exactly_todays_run(small):
    mlp = fasttrap.MLP((784, 10, 10))
    kw = dict(steps=15, record=[15], curve_points=0, progress=False)
    a = fasttrap.outer_sgd(mlp, small, [2], **kw)
    b = fasttrap.outer_sgd(mlp, small, [2], moves=[], **kw)
    assert a.thetas.tobytes() == b.thetas.tobytes() and b.moves is None


@pytest.mark.parametrize("dL, T", [(0.1, 0.1), (0.5, 0.25), (0.02, 0.1), (-0.3, 0.1), (0.2, 0.0)])
def test_metropolis_accepts_at_the_right_rate(dL, T):
    """Every proposal has the same known ΔL: the acceptance fraction over 4,000 seeds is min(1, e^(−ΔL/T))."""
    mlp = fasttrap.MLP((6, 5, 3))
    S = 4000
    theta = np.tile(mlp.init(1, 0, np.float64), (S, 1))
    Xb, yb = np.zeros((S, 2, 6)), np.zeros((S, 2), np.int64)
    current = theta

    def loss(th, X, y):
        return np.zeros(S) if th is current else np.full(S, dL)

    log = MoveLog.empty(1, S)
    apply_moves([Swap("rows", layer=1, temperature=T)], mlp, theta, Xb, yb, 0, list(range(S)), (1, 6, 1), log,
                Alignment(mlp, S), loss)
    rate = log.accepted.sum() / S
    want = 1.0 if dL <= 0 else (0.0 if T == 0 else np.exp(-dL / T))
    assert abs(rate - want) <= 4 * np.sqrt(max(want * (1 - want), 1e-4) / S), (rate, want)
    assert len(log.delta[0]) == S and all(abs(r[2] - dL) < 1e-15 for r in log.delta[0])


@pytest.mark.parametrize("make, err, words", [
    (lambda: Swap("rows", layer=3), ValueError, ["layer 3 does not exist", "1..2"]),
    (lambda: Swap("paired", layer=2), ValueError, ["needs layer 3"]),
    (lambda: Swap("channels"), ValueError, ["at least 2 channels", "has 1"]),
    (lambda: Swap("rows", layer=1, temperature=-1.0), ValueError, ["temperature", ">= 0"]),
    (lambda: Swap("rows"), ValueError, ["needs the layer"]),
    (lambda: Swap("swirl"), ValueError, ["pixels, channels, rows"]),
    (lambda: Swap("pixels", prob=1.5), ValueError, ["prob"]),
    (lambda: Swap("pixels", every=0), ValueError, ["every"]),
    (lambda: Swap("pixels", prob=True), ValueError, ["prob"]),              # a bool is not a probability
    (lambda: Swap("rows", layer=1, temperature=True), ValueError, ["temperature"]),
    (lambda: "rows", TypeError, ["list of fasttrap.Swap"]),
])
def test_bad_moves_get_clear_errors(small, make, err, words):
    mlp = fasttrap.MLP((784, 8, 10))
    with pytest.raises(err) as e:
        m = make()
        fasttrap.outer_sgd(mlp, small, [0], steps=2, moves=m if isinstance(m, str) else [m], progress=False)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_measuring_dL_never_changes_the_moves(small):
    mlp = fasttrap.MLP((784, 10, 10))
    kw = dict(lr=0.05, batch_size=16, steps=20, record=[20], curve_points=0, progress=False)
    for kind in ("rows", "pixels"):
        m = dict(layer=1) if kind == "rows" else {}
        a = fasttrap.outer_sgd(mlp, small, [0, 1], moves=[Swap(kind, **m)], **kw)
        b = fasttrap.outer_sgd(mlp, small, [0, 1], moves=[Swap(kind, measure_every=3, **m)], **kw)
        assert a.thetas.tobytes() == b.thetas.tobytes()
        assert len(b.moves.delta[0]) == 2 * 7 and all(r[3] for r in b.moves.delta[0])   # t = 0, 3, …, 18
        assert np.array_equal(b.moves.accepted, b.moves.proposed)


class _KillAt(fasttrap.common.progress.Progress):
    """A progress bar that interrupts the run when it reaches a step (a kill, for resume tests)."""

    def __init__(self, total, at):
        super().__init__(total, "test", enabled=False)
        self.at = at

    def update_to(self, n, **kw):
        if n >= self.at:
            raise KeyboardInterrupt
        super().update_to(n, **kw)


def test_aging_with_swaps_aligns_symmetries_and_resumes(small, tmp_path):
    """Paired swaps do not show up as motion in Δ (aligned weights); rows swaps do; an interrupted
    aging run with moves resumes from its checkpoint to the same bytes."""
    from fasttrap.analysis import aging

    mlp = fasttrap.MLP((784, 16, 10))
    kw = dict(seeds=[0, 1], lr=0.05, batch_size=32, steps=300, t_w=[10, 50], lags=[1, 10, 100], curve_points=4,
              noise_rows=200, eval_rows=200, dtype=np.float64, progress=False)
    plain = aging.run_aging(mlp, small, **kw)
    paired = aging.run_aging(mlp, small, moves=[Swap("paired", layer=1, pairs=2)], **kw)
    rows = aging.run_aging(mlp, small, moves=[Swap("rows", layer=1)], **kw)
    np.testing.assert_allclose(paired.two_time.msd, plain.two_time.msd, rtol=1e-8, equal_nan=True)
    assert not np.allclose(rows.two_time.msd, plain.two_time.msd, rtol=1e-3, equal_nan=True)
    ck = tmp_path / "ck.npz"
    moves = [Swap("rows", layer=1, prob=0.5), Swap("paired", layer=1)]
    full = aging.run_aging(mlp, small, moves=moves, **kw)
    with pytest.raises(KeyboardInterrupt):
        aging.run_aging(mlp, small, moves=moves, checkpoint=ck, checkpoint_every=100, **(kw | {"progress": _KillAt(300, 170)}))
    assert int(store_npz(ck)["t"]) == 100 and "alignment" in store_npz(ck)
    resumed = aging.run_aging(mlp, small, moves=moves, checkpoint=ck, checkpoint_every=100, **kw)
    for a, b in zip(full.to_arrays().values(), resumed.to_arrays().values()):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    with pytest.raises(ValueError, match="moves differs"):
        aging.run_aging(mlp, small, moves=[Swap("rows", layer=1)], checkpoint=ck, **kw)


def store_npz(p):
    from fasttrap.common import store

    return store.read_npz(p)
