"""Aging and diffusion: the per-sample gradient-norm kernel against its twin, the gradient noise,
the two-time observables (streaming against direct), the non-Gaussian parameter, and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fasttrap
from fasttrap import reference
from fasttrap.analysis import aging, diffusion
from fasttrap.model import data
from fasttrap.common import store
from fasttrap.analysis.aging import TwoTime, TwoTimeStream

from _util import COMPILED_BACKENDS, cosine, num_threads, rel_l2, to_np

# (widths, activation, loss, output, K, N)
CONFIGS = [
    ((7, 3, 5), "relu", "nll", "identity", 1, 1),
    ((7, 3, 5), "tanh", "mse", "sigmoid", 3, 37),
    ((5, 4), "sigmoid", "nll", "identity", 2, 300),                 # depth 1
    ((6, 5, 4, 3, 2), "tanh", "nll", "identity", 3, 129),           # depth 4
    ((6, 5, 4, 3, 2), "linear", "mse", "identity", 1, 64),
    ((20, 16, 8, 4), "relu", "mse", "sigmoid", 4, 257),
    ((784, 100, 100, 10), "relu", "nll", "identity", 2, 300),       # the reference net
    ((129, 7, 7, 7, 3), "sigmoid", "mse", "sigmoid", 3, 50),
]


def _ids(c):
    w, act, loss, out, K, N = c
    return f"{'-'.join(map(str, w))}-{act}-{loss}{'-sig' if out == 'sigmoid' else ''}-K{K}-N{N}"


def _inputs(rng, cfg, dtype=np.float64):
    widths, act, loss, out, K, N = cfg
    mlp = fasttrap.MLP(widths, act, loss, out)
    theta = mlp.init(K, int(rng.integers(2**31)), np.float64) + 0.05 * rng.standard_normal((K, mlp.n_params))
    X = rng.standard_normal((N, widths[0]))
    y = rng.integers(0, widths[-1], size=N)
    return mlp, theta.astype(dtype), X.astype(dtype), y


# ------------------------------------------------------------------ per-sample kernel ---------
def test_twin_equals_explicit_per_sample_gradients(rng):
    """The twin (vmap(grad)) against a plain loop of autograd calls, one sample at a time."""
    mlp, theta, X, y = _inputs(rng, ((6, 5, 4, 3), "tanh", "mse", "sigmoid", 2, 9))
    sq, g = reference.per_sample_grad_sq(mlp, theta, X, y, want_grad=True, block=4)
    for k in range(2):
        rows = [to_np(fasttrap.value_and_grad(mlp, theta[k:k + 1], X[a:a + 1], y[a:a + 1], backend="torch")[1])[0]
                for a in range(9)]
        G = np.stack(rows)
        np.testing.assert_allclose(to_np(sq)[k], (G ** 2).sum(1), rtol=1e-12)
        np.testing.assert_allclose(to_np(g)[k], G.mean(0), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_per_sample_grad_sq_float64(rng, cfg, backend):
    mlp, theta, X, y = _inputs(rng, cfg)
    sq, g = fasttrap.per_sample_grad_sq(mlp, theta, X, y, True, block=64, backend=backend)
    sq_r, g_r = reference.per_sample_grad_sq(mlp, theta, X, y, True, block=100)
    assert rel_l2(sq, sq_r) <= 1e-10
    np.testing.assert_allclose(to_np(sq), to_np(sq_r), rtol=1e-9)   # every sample, not only in norm
    assert rel_l2(g, g_r) <= 1e-10
    assert np.all(to_np(sq) >= 0)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_per_sample_grad_sq_float32(rng, cfg, backend):
    mlp, theta, X, y = _inputs(rng, cfg, np.float64)
    sq_r, g_r = reference.per_sample_grad_sq(mlp, theta, X, y, True)
    sq, g = fasttrap.per_sample_grad_sq(mlp, theta.astype(np.float32), X.astype(np.float32), y, True, block=64,
                                        backend=backend)
    assert to_np(sq).dtype == np.float32
    for out, ref, what in ((sq, sq_r, "sq"), (g, g_r, "grad")):
        out, ref = to_np(out).astype(np.float64), to_np(ref).astype(np.float64)
        assert rel_l2(out, ref) <= 1e-4, what
        assert cosine(out, ref) >= 1 - 1e-6, what
        np.testing.assert_allclose(out, ref, rtol=2e-3, atol=2e-4 * np.abs(ref).max() + 1e-12, err_msg=what)


def test_per_sample_grad_sq_without_grad_and_block_invariance(rng):
    mlp, theta, X, y = _inputs(rng, ((30, 12, 4), "relu", "nll", "identity", 3, 1001))
    a, none = fasttrap.per_sample_grad_sq(mlp, theta, X, y, backend="cpu")
    assert none is None
    b, _ = fasttrap.per_sample_grad_sq(mlp, theta, X, y, block=7, backend="cpu")
    np.testing.assert_allclose(a, b, rtol=1e-13)
    # ∇L from the same pass equals evaluate's
    _, g = fasttrap.per_sample_grad_sq(mlp, theta, X, y, True, backend="cpu")
    _, _, g2 = fasttrap.evaluate(mlp, theta, X, y, True, backend="cpu")
    assert rel_l2(g, g2) < 1e-12


def test_per_sample_grad_sq_thread_paths_agree(rng):
    """K = 1 on 2 threads splits the data blocks; K ≥ threads splits the models."""
    mlp, theta, X, y = _inputs(rng, ((10, 9, 3), "tanh", "mse", "identity", 1, 3000))
    with num_threads(1):
        a = fasttrap.per_sample_grad_sq(mlp, theta, X, y, True, block=128, backend="cpu")
    with num_threads(2):
        b = fasttrap.per_sample_grad_sq(mlp, theta, X, y, True, block=128, backend="cpu")
    np.testing.assert_array_equal(a[0], b[0])
    assert rel_l2(a[1], b[1]) < 1e-12


def test_per_sample_grad_sq_torch_in_torch_out(rng):
    mlp, theta, X, y = _inputs(rng, ((7, 3, 5), "relu", "nll", "identity", 2, 20))
    sq, g = fasttrap.per_sample_grad_sq(mlp, torch.from_numpy(theta), X, y, True, backend="cpu")
    assert isinstance(sq, torch.Tensor) and isinstance(g, torch.Tensor)
    sq2, _ = fasttrap.per_sample_grad_sq(mlp, torch.from_numpy(theta), X, y, backend="torch")
    assert isinstance(sq2, torch.Tensor)
    assert rel_l2(sq, sq2) < 1e-10


_M = fasttrap.MLP((6, 4, 3))
_TH = _M.init(2, 0, np.float64)
_X = np.zeros((10, 6))
_Y = np.zeros(10, np.int64)


@pytest.mark.parametrize("over, exc, match", [
    (dict(want_grad="yes"), TypeError, "want_grad"),
    (dict(block=0), ValueError, "block"),
    (dict(X=np.zeros((2, 10, 6))), ValueError, "X"),
    (dict(X=np.zeros((10, 5))), ValueError, "X"),
    (dict(X=np.full((10, 6), np.nan)), ValueError, "X"),
    (dict(y=np.zeros(11, np.int64)), ValueError, "y"),
    (dict(y=np.full(10, 3)), ValueError, "y"),
    (dict(theta=_TH[:, :-1]), ValueError, "theta"),
    (dict(backend="gpu"), ValueError, "backend"),
])
def test_bad_per_sample_arguments(over, exc, match):
    args = dict(theta=_TH, X=_X, y=_Y, want_grad=False, block=16, backend="cpu")
    args.update(over)
    with pytest.raises(exc, match=match):
        fasttrap.per_sample_grad_sq(_M, args["theta"], args["X"], args["y"], args["want_grad"], args["block"],
                                    backend=args["backend"])


# ------------------------------------------------------------------ gradient noise ------------
def test_gradient_noise_is_the_variance_of_per_sample_gradients(rng):
    mlp, theta, X, y = _inputs(rng, ((8, 6, 3), "tanh", "nll", "identity", 2, 40))
    nz = diffusion.gradient_noise(mlp, theta, X, y, block=16, backend="cpu")
    for k in range(2):
        G = np.stack([to_np(fasttrap.value_and_grad(mlp, theta[k:k + 1], X[a:a + 1], y[a:a + 1], backend="torch")[1])[0]
                      for a in range(40)])
        direct = ((G - G.mean(0)) ** 2).sum(1).mean()
        assert nz.D[k] == pytest.approx(direct, rel=1e-10)
        assert nz.grad_sq[k] == pytest.approx((G.mean(0) ** 2).sum(), rel=1e-10)
    assert np.all(nz.D > 0)


def test_gradient_noise_vanishes_for_one_sample_and_identical_samples(rng):
    mlp, theta, X, y = _inputs(rng, ((8, 6, 3), "relu", "nll", "identity", 1, 1))
    assert abs(diffusion.gradient_noise(mlp, theta, X, y, backend="cpu").D[0]) < 1e-14
    Xr, yr = np.repeat(X, 5, 0), np.repeat(y, 5)
    nz = diffusion.gradient_noise(mlp, theta, Xr, yr, backend="cpu")
    assert abs(nz.D[0]) <= 1e-12 * nz.mean_sq[0]


# ------------------------------------------------------------------ two-time observables -----
def test_time_grids():
    g = aging.time_grid(1, 1000, 10)
    assert g[0] == 1 and g[-1] == 1000 and np.all(np.diff(g) > 0)
    tw, lags = aging.default_grids(10_000, 6, 40, tw_min=10)
    assert tw[0] == 10 and tw[-1] == 5000 and lags[0] == 1 and lags[-1] == 9990
    with pytest.raises(ValueError, match="tw_min"):
        aging.default_grids(100, tw_min=100)
    with pytest.raises(ValueError, match="t_w"):
        TwoTimeStream([5, 3], [1])
    with pytest.raises(ValueError, match="lags"):
        TwoTimeStream([1], [0.5, 1.0])


def test_displacement_moments_formula(rng):
    a, b = rng.standard_normal((3, 50)), rng.standard_normal((3, 50))
    msd, m4 = aging.displacement_moments(b, a)
    np.testing.assert_allclose(msd, ((b - a) ** 2).mean(1), rtol=1e-14)
    np.testing.assert_allclose(m4, ((b - a) ** 4).mean(1), rtol=1e-14)


@pytest.mark.parametrize("draw, expected", [
    (lambda r, n: r.standard_normal(n), 0.0),       # ⟨x⁴⟩ = 3⟨x²⟩²
    (lambda r, n: r.laplace(size=n), 1.0),          # kurtosis 6
    (lambda r, n: r.uniform(-1, 1, n), -0.4),       # kurtosis 9/5
])
def test_non_gaussian_parameter_values(rng, draw, expected):
    x = draw(rng, 400_000)[None]
    msd, m4 = aging.displacement_moments(x, np.zeros_like(x))
    assert aging.non_gaussian(msd, m4)[0] == pytest.approx(expected, abs=0.05)
    assert np.isnan(aging.non_gaussian(np.zeros(1), np.zeros(1))[0])


@pytest.fixture(scope="module")
def tiny_data():
    return data.load("mnist").subset(600, 200)


def test_streaming_equals_direct_and_msd_properties(tiny_data):
    mlp = fasttrap.MLP((784, 8, 10))
    t_w, lags = np.array([0, 3, 10, 25]), np.array([0, 1, 2, 7, 20, 40])
    stream = TwoTimeStream(t_w, lags)
    res = fasttrap.outer_sgd(mlp, tiny_data, seeds=[0, 1], lr=0.1, batch_size=50, steps=50, record="all",
                             curve_points=0, progress=False, observe=stream)
    got = stream.result()
    ref = aging.two_time(res.thetas, res.steps, t_w, lags)
    np.testing.assert_array_equal(got.msd, ref.msd)
    np.testing.assert_array_equal(got.m4, ref.m4)
    # only the snapshots were kept: W × N per seed, never the path
    assert stream.snap.shape == (2, 4, mlp.n_params)
    # lag 0 is exactly zero; everything measured is ≥ 0; beyond the run is NaN
    assert np.all(got.msd[:, :, 0] == 0)
    measured = np.isfinite(got.msd)
    assert np.all(got.msd[measured] >= 0) and np.all(got.m4[measured] >= 0)
    assert np.isnan(got.msd[:, 3, 5]).all()                     # 25 + 40 > 50
    assert np.all(np.isfinite(got.msd[:, 0, :]))


def test_stream_ignores_repeats_and_checks_shape(rng):
    s = TwoTimeStream([0], [1])
    th = rng.standard_normal((2, 5))
    s(0, th)
    s(1, th + 1)
    s(1, th + 5)                        # a repeated step (a checkpoint boundary) is ignored
    np.testing.assert_allclose(s.result().msd[:, 0, 0], 1.0)
    with pytest.raises(ValueError, match="theta"):
        s(2, rng.standard_normal((3, 5)))


def test_two_time_needs_recorded_waiting_times(rng):
    with pytest.raises(ValueError, match="t_w"):
        aging.two_time(rng.standard_normal((1, 3, 4)), [0, 1, 2], [5], [1])


def _synthetic(fn, t_w, lags):
    msd = np.array([[fn(tw, t) for t in lags] for tw in t_w], dtype=float)[None]
    return TwoTime(np.asarray(t_w), np.asarray(lags), msd, 3 * msd ** 2)


def test_timescales_read_simple_and_no_aging():
    t_w, lags = aging.time_grid(10, 10_000, 7), aging.time_grid(1, 100_000, 60)
    simple = aging.timescales(_synthetic(lambda tw, t: np.log1p(t / tw), t_w, lags))
    assert simple["mu"] == pytest.approx(1.0, abs=0.05)
    none = aging.timescales(_synthetic(lambda tw, t: np.log1p(t / 100.0), t_w, lags))
    assert none["mu"] == pytest.approx(0.0, abs=0.05)
    # aging up to t_w = 1000, then none: read as interrupted
    inter = aging.timescales(_synthetic(lambda tw, t: np.log1p(t / min(tw, 300)), t_w, lags))
    assert inter["mu_early"] > 0.5 and inter["mu_late"] < 0.3
    # a waiting time whose Δ never reaches the level is marked beyond the grid, not dropped silently
    frozen = aging.timescales(_synthetic(lambda tw, t: np.log1p(t / tw) * (1e-6 if tw == t_w[-1] else 1.0), t_w, lags))
    assert frozen["tau_beyond"][-1] and not frozen["tau_beyond"][:-1].any() and np.isnan(frozen["tau"][-1])
    # per seed: identical seeds give the seed-mean μ; a different second seed gives its own
    two = _synthetic(lambda tw, t: np.log1p(t / tw), t_w, lags)
    mixed = TwoTime(two.t_w, two.lags, np.concatenate([two.msd, _synthetic(lambda tw, t: np.log1p(t / 100.0), t_w, lags).msd]),
                    np.concatenate([two.m4, two.m4]))
    per = aging.timescales_per_seed(mixed, simple["level"])
    assert per["mu"][0] == pytest.approx(simple["mu"], abs=1e-12) and per["mu"][1] == pytest.approx(0.0, abs=0.05)
    from fasttrap.analysis.aging import aging_verdict
    assert aging_verdict(simple).startswith("aging throughout")
    assert aging_verdict(none).startswith("no aging")
    assert aging_verdict(inter).startswith("interrupted")


# ------------------------------------------------------------------ the driver ---------------
def _run(tiny_data, **kw):
    args = dict(seeds=[0, 1], lr=0.1, batch_size=50, steps=60, t_w=[2, 10, 30], lags=[0, 1, 5, 20, 50],
                curve_points=6, progress=False)
    args.update(kw)
    return aging.run_aging(fasttrap.MLP((784, 6, 10)), tiny_data, **args)


def test_run_aging_measures_everything(tiny_data):
    r = _run(tiny_data)
    assert r.two_time.msd.shape == (2, 3, 5)
    assert np.isfinite(r.noise_D).all() and np.all(r.noise_D > 0)
    assert np.isfinite(r.train_loss).all() and r.train_loss[:, -1].mean() < r.train_loss[:, 0].mean()
    # the same seeds give the trap analysis's outer path: θ at the end equals outer_sgd's
    o = fasttrap.outer_sgd(fasttrap.MLP((784, 6, 10)), tiny_data, seeds=[0, 1], lr=0.1, batch_size=50, steps=60,
                           record=[60], curve_points=0, progress=False)
    np.testing.assert_array_equal(r.theta_final, o.thetas[:, 0])


def test_checkpoint_resume_is_bit_identical(tiny_data, tmp_path, monkeypatch):
    full = _run(tiny_data)
    ck = tmp_path / "ck.npz"
    real = store.write_npz
    calls = {"n": 0}

    def dying_write(path, **arrays):
        real(path, **arrays)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt      # killed right after the second checkpoint

    monkeypatch.setattr(store, "write_npz", dying_write)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_data, checkpoint=ck, checkpoint_every=13)
    monkeypatch.setattr(store, "write_npz", real)
    assert int(store.read_npz(ck)["t"]) == 26
    resumed = _run(tiny_data, checkpoint=ck, checkpoint_every=13)
    for k, v in full.to_arrays().items():
        np.testing.assert_array_equal(resumed.to_arrays()[k], v, err_msg=k)
    with pytest.raises(ValueError, match="other settings"):
        _run(tiny_data, checkpoint=ck, checkpoint_every=13, lr=0.05)
