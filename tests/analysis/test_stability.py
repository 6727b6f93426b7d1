"""Step sizes from the curvature, and the flags of runs that blew up or collapsed."""

from __future__ import annotations

import numpy as np
import pytest

import fasttrap
from fasttrap.analysis import stability
from fasttrap.dynamics import stepsize
from fasttrap.linalg.hessian import lambda_max


def _sharp_problem(rng):
    """A small net on inputs scaled ×4: sharp enough that lr 0.5 on G diverges."""
    mlp = fasttrap.MLP((10, 16, 3), activation="tanh")
    X = 4.0 * rng.standard_normal((256, 10))
    y = rng.integers(0, 3, 256)
    return mlp, X, y


def test_lambda_max_matches_the_dense_hessian(rng):
    mlp, X, y = _sharp_problem(rng)
    th = mlp.init(3, 1).astype(np.float64)
    lam = lambda_max(mlp, th, X, y, steps=mlp.n_params)
    for k in range(3):
        H = fasttrap.reference.dense_hessian(mlp, th[k], X, y)[2]
        assert lam[k] == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-8)


def test_auto_lr_keeps_runs_stable_where_a_fixed_lr_diverges(rng):
    mlp, X, y = _sharp_problem(rng)
    th0 = mlp.init(6, 2)
    lam = lambda_max(mlp, th0.astype(np.float64), X, y)
    fixed = 50.0 / np.min(lam) ** 2                         # 25× past the stability limit for every run
    assert np.all(stepsize.unstable(fixed, lam))
    bad = fasttrap.inner_descent(mlp, th0, (X, y), steps=300, solver=fasttrap.GD(lr=fixed), growth=1e3,
                                 progress=False)
    good = fasttrap.inner_descent(mlp, th0, (X, y), steps=300, solver=fasttrap.GD(lr="auto", lr_rows=256),
                                  growth=1e3, progress=False)
    loss0, acc0, _ = fasttrap.evaluate(mlp, th0, X, y)

    def blown(r):
        f = stability.flags(r.G_trace, r.G_start, th0, r.theta, loss0, acc0, r.train_loss, r.train_acc, 3)
        return np.isin(r.status, ["diverged", "nonfinite"]) | f["blowup"]

    # past the limit the runs leave their basin: they diverge, or their weights blow up while G
    # stays small (tanh units saturate), which only the flags catch: the status says max_steps
    assert blown(bad).sum() >= 4
    assert set(good.status) <= {"max_steps", "converged"} and not blown(good).any()
    assert np.all(good.G_last <= good.G_start)               # and it descends
    np.testing.assert_allclose(good.settings["lr"], 1.0 / good.settings["lambda_max"] ** 2)
    assert not np.any(stepsize.unstable(good.settings["lr"], good.settings["lambda_max"]))


def test_a_blow_up_that_recovers_is_flagged():
    """G rises to 10⁷× its start and comes back: the final status would say max_steps; the flag says blowup."""
    K, T = 3, 50
    trace = np.tile(np.linspace(1.0, 0.1, T), (K, 1))
    trace[1, 20:25] = 1e7                                     # spike and recovery
    th0 = np.ones((K, 5))
    th = th0.copy()
    th[2] *= 50                                               # weights grew 50× without a G spike
    f = stability.flags(trace, trace[:, 0], th0, th, loss0=np.full(K, 1.0), acc0=np.full(K, 0.6),
                        loss=np.full(K, 0.5), acc=np.full(K, 0.8), n_classes=10)
    assert f["blowup"].tolist() == [False, True, True]
    assert f["G_peak_ratio"][1] == pytest.approx(1e7)
    assert not f["collapsed"].any()


def test_a_collapsed_endpoint_is_flagged_only_from_a_trained_start():
    """From loss 0.5 to chance: collapsed. From loss 2.0 (0.87 ln 10: barely off the trivial saddle)
    back to 2.30: the first regime's trap, not a collapse."""
    K = 5
    trace = np.ones((K, 5))
    th = np.ones((K, 3))
    f = stability.flags(trace, np.ones(K), th, th, loss0=np.array([0.5, 0.5, 2.3, 0.5, 2.0]),
                        acc0=np.array([0.8, 0.8, 0.1, 0.8, 0.3]), loss=np.array([2.3, 0.4, 2.3, 0.6, 2.3]),
                        acc=np.array([0.11, 0.85, 0.1, 0.09, 0.1]), n_classes=10)
    assert f["collapsed"].tolist() == [True, False, False, True, False]


def test_bad_arguments():
    with pytest.raises(ValueError, match="lam_max"):
        stepsize.auto_lr([1.0, -2.0])
    with pytest.raises(ValueError, match="c"):
        stepsize.auto_lr([1.0], c=0)
    mlp = fasttrap.MLP((4, 3))
    with pytest.raises(ValueError, match="lr"):
        fasttrap.inner_descent(mlp, mlp.init(1, 0), (np.zeros((8, 4)), np.zeros(8, int)), steps=1,
                               solver=fasttrap.SGD(lr="fast", batch_size=4), progress=False)
