"""Certificates and Newton-MR against closed form: the sign rule on operators with a known
spectrum, and the critical points of linear networks (Baldi & Hornik 1989), where every critical
value is known and every one but the global minimum is a strict saddle."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

import fasttrap
from fasttrap import reference
from fasttrap.dynamics.newton import newton_mr
from fasttrap.linalg.hessian import full_batch_gradient
from fasttrap.linalg.lanczos import lanczos, ritz, rounding_bound, signs


def _operator(rng, eigenvalues):
    P = eigenvalues.size
    Q = np.linalg.qr(rng.standard_normal((P, P)))[0]
    H = (Q * eigenvalues) @ Q.T
    return (H + H.T) / 2


def _signed(matvec, K, P, rng, steps=None):
    lz = lanczos(matvec, rng.standard_normal((K, P)), steps or P)
    tau = rounding_bound(lz)
    out = []
    for k in range(K):
        th, _, res = ritz(lz, k)
        out.append(signs(th, res, tau[k], bool(lz.steps[k] == P)))
    return out, tau


@pytest.mark.parametrize("seed", range(4))
def test_a_saddle_of_one_millionth_of_lambda_max_is_a_saddle_in_float64(seed):
    rng = np.random.default_rng(seed)
    P = 120
    lam = np.r_[-1e-6 * 50.0, rng.uniform(0.1, 50.0, P - 2), 50.0]
    H = _operator(rng, lam)
    counts, tau = _signed(lambda V: V @ H, 3, P, rng)
    assert np.all(tau < 1e-6 * 50.0 / 100)              # the bound is far below the curvature
    assert all(neg == 1 for neg, _ in counts)


@pytest.mark.parametrize("seed", range(6))
def test_float32_rounding_alone_never_makes_a_minimum_a_saddle(seed):
    """A positive semi-definite H with a cluster of exact zeros, applied in float32: the Ritz values
    of the zeros scatter either side of 0 by the rounding, and none may count as negative."""
    rng = np.random.default_rng(100 + seed)
    P = 150
    lam = np.r_[np.zeros(30), np.logspace(-3, 2, P - 30)]
    H32 = _operator(rng, lam).astype(np.float32)

    def f32(V):
        return (V.astype(np.float32) @ H32).astype(np.float64)

    counts, tau = _signed(f32, 4, P, rng)
    assert all(neg == 0 for neg, _ in counts)
    assert all(und >= 1 for _, und in counts)           # the zeros are reported, not signed
    assert np.all(tau < 1e-3 * 100)                     # and the bound stays a small share of ‖H‖
    # a real negative curvature well above that rounding is still seen in float32
    lam2 = lam.copy()
    lam2[0] = -1e-3 * 100
    H2 = _operator(rng, lam2).astype(np.float32)
    counts2, _ = _signed(lambda V: (V.astype(np.float32) @ H2).astype(np.float64), 2, P, rng)
    assert all(neg == 1 for neg, _ in counts2)


def baldi_hornik(d=9, p=3, k=6, N=400, seed=0):
    """A linear d-p-k net with MSE on correlated Gaussian inputs and one-hot targets, and its
    critical values: subsets I (|I| ≤ p) of the eigenvalues λ of Σ_yx Σ_xx⁻¹ Σ_xy give
    L_I = (tr Σ_yy − Σ_I λ_i) / k (centred covariances over N; torch's mse is the mean over rows
    and classes). Returns (mlp, X, y, distinct critical values, global minimum)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d))
    X = rng.standard_normal((N, d)) @ A.T * 0.5 + rng.standard_normal(d)
    M = rng.standard_normal((k, d))
    y = np.argmax(X @ M.T + rng.standard_normal((N, k)), axis=1)
    T = np.eye(k)[y]
    Xc, Tc = X - X.mean(0), T - T.mean(0)
    Sxx, Syx, Syy = Xc.T @ Xc / N, Tc.T @ Xc / N, Tc.T @ Tc / N
    lam = np.sort(np.linalg.eigvalsh(Syx @ np.linalg.solve(Sxx, Syx.T)))[::-1]
    vals = sorted({(np.trace(Syy) - lam[list(I)].sum()) / k for r in range(p + 1) for I in combinations(range(k), r)})
    return fasttrap.MLP((d, p, k), activation="linear", loss="mse"), X, y, np.array(vals), (np.trace(Syy) - lam[:p].sum()) / k


def _closed_form_check(mlp, X, y, vals, glob, starts, iters, min_rate, geodesic=False, min_tight=0.5):
    th0 = mlp.init(starts, seed=5, dtype=np.float64) * 3.0
    out = newton_mr(mlp, th0, X, y, steps=iters, G_tol=0.5e-22, growth=0.0, geodesic=geodesic)
    loss, g = full_batch_gradient(mlp, out["theta"], X, y)
    gsq = (g * g).sum(1)
    reached = gsq < 1e-10
    assert reached.mean() >= min_rate, (reached.sum(), starts)
    tight = gsq < 1e-20                                  # converged to the end: on the critical set
    assert tight.sum() >= min_tight * reached.sum(), (tight.sum(), reached.sum())
    dist = np.array([np.abs(vals - L).min() for L in loss[tight]])
    assert np.all(dist < 1e-7), dist
    c = fasttrap.certify(mlp, out["theta"][tight], X, y, lanczos_steps=mlp.n_params, k_max=mlp.n_params)
    is_glob = np.abs(c.loss - glob) < 1e-7
    assert np.all(c.kind[is_glob] == "degenerate_minimum"), c.kind[is_glob]   # GL(p): flat directions
    assert np.all(c.kind[~is_glob] == "saddle"), (c.loss[~is_glob], c.kind[~is_glob])
    d = reference.certify(mlp, out["theta"][tight], X, y)
    assert np.all(d["kind"] == c.kind)
    np.testing.assert_array_equal(c.index, d["index"])  # each negative eigenvalue is simple here
    return reached.mean(), tight.sum(), (~is_glob).sum()


def test_newton_mr_and_certify_on_a_baldi_hornik_net():
    """CI's version: 8 starts of the 9-3-6 net, 300 iterations."""
    mlp, X, y, vals, glob = baldi_hornik()
    _closed_form_check(mlp, X, y, vals, glob, starts=8, iters=300, min_rate=0.6)


def test_the_geodesic_acceleration_reaches_small_gradients_where_the_plain_step_creeps():
    """CI's version of the 24-start record on the 8-2-5 net (docs/recorded/closed-form: 8 of 24 starts
    reach ‖∇L‖² < 1e-10 without the acceleration, 24 with it): 8 starts, 300 iterations, and every
    endpoint that converged to 1e-20 at an analytic value, named right."""
    mlp, X, y, vals, glob = baldi_hornik(8, 2, 5, seed=3)
    th0 = mlp.init(8, seed=5, dtype=np.float64) * 3.0
    plain = newton_mr(mlp, th0, X, y, steps=300, G_tol=0.5e-22, growth=0.0)
    gsq_plain = (full_batch_gradient(mlp, plain["theta"], X, y)[1] ** 2).sum(1)
    rate, _, _ = _closed_form_check(mlp, X, y, vals, glob, starts=8, iters=300, min_rate=0.9, geodesic=True,
                                    min_tight=0.25)
    assert rate > (gsq_plain < 1e-10).mean(), (rate, (gsq_plain < 1e-10).mean())


@pytest.mark.slow
@pytest.mark.parametrize("shape, seed", [((9, 3, 6), 0), ((9, 3, 6), 1), ((8, 2, 5), 3), ((10, 4, 6), 4)])
def test_newton_mr_and_certify_on_baldi_hornik_nets_24_starts(shape, seed, capsys):
    """The issue's protocol: 24 starts, mlp.init(24, seed=5) × 3, 300 iterations, float64, with the
    geodesic acceleration: at least 90%
    reach ‖∇L‖² < 1e-10 (docs/recorded/closed-form/; 33–88% before the geodesic acceleration), and each
    endpoint that converged to 1e-20 is at an analytic critical value, named right. Reaching 1e-10 is
    not converging on these nets: 42–83% converge, the rest creep along flat valleys, up to 4.4e-4 in
    loss from any critical value (the record says so; the test asserts only what holds)."""
    d, p, k = shape
    mlp, X, y, vals, glob = baldi_hornik(d, p, k, seed=seed)
    rate, tight, saddles = _closed_form_check(mlp, X, y, vals, glob, starts=24, iters=300, min_rate=0.9, geodesic=True,
                                              min_tight=0.4)
    with capsys.disabled():
        print(f"\nBaldi-Hornik {shape} seed {seed}: {rate:.0%} reach |grad L|^2 < 1e-10, {tight} to 1e-20, "
              f"{saddles} of them saddles")


def test_deep_linear_net_lands_on_the_shallow_critical_values_and_no_saddle_is_a_minimum():
    """A two-hidden-layer linear net d-p-p-k has the critical values of the one-layer d-p-k net
    (the subsets of at most p eigenvectors; Kawaguchi 2016), every local minimum is global, and
    some saddles (W = 0 among them) have no negative curvature at all: second order cannot see them,
    so the kind may say degenerate_minimum there, but never minimum, and every value that is not the
    global one with a negative eigenvalue is a saddle."""
    mlp1, X, y, vals, glob = baldi_hornik(6, 2, 4, N=300, seed=7)
    mlp = fasttrap.MLP((6, 2, 2, 4), activation="linear", loss="mse")
    th0 = mlp.init(12, seed=5, dtype=np.float64) * 2.0
    out = newton_mr(mlp, th0, X, y, steps=300, G_tol=0.5e-22, growth=0.0)
    loss, g = full_batch_gradient(mlp, out["theta"], X, y)
    tight = (g * g).sum(1) < 1e-20
    assert tight.sum() >= 6, tight.sum()
    dist = np.array([np.abs(vals - L).min() for L in loss[tight]])
    assert np.all(dist < 1e-7), dist
    c = fasttrap.certify(mlp, out["theta"][tight], X, y, lanczos_steps=mlp.n_params, k_max=mlp.n_params)
    d = reference.certify(mlp, out["theta"][tight], X, y)
    assert "minimum" not in set(c.kind)                  # flat directions everywhere: never a strict minimum
    is_glob = np.abs(c.loss - glob) < 1e-7
    assert np.all(c.kind[is_glob] == "degenerate_minimum")
    assert np.all((c.kind == "saddle") == (d["index"] > 0))
    np.testing.assert_array_equal(c.kind, d["kind"])


@pytest.mark.parametrize("geodesic", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_relu_net_certificates_agree_with_the_dense_hessian(seed, geodesic):
    """A ReLU net has no closed form; its dense Hessian (torch.func, eigh) is the reference. Newton-MR
    endpoints that converge are certified alike by Lanczos and by the dense twin: kind and index.
    With the geodesic acceleration too: its finite difference is wrong across the kinks, and the
    plain-step fallback must keep the solver converging (without it 0 and 1 of 16 reached 1e-10)."""
    rng = np.random.default_rng(seed)
    mlp = fasttrap.MLP((5, 6, 3), activation="relu", loss="mse")
    X = rng.standard_normal((120, 5))
    y = rng.integers(0, 3, 120)
    out = newton_mr(mlp, mlp.init(16, seed=seed, dtype=np.float64), X, y, steps=150, G_tol=0.5e-22, growth=0.0,
                    geodesic=geodesic)
    loss, g = full_batch_gradient(mlp, out["theta"], X, y)
    conv = (g * g).sum(1) < 1e-10
    assert conv.sum() >= 2, conv.sum()
    c = fasttrap.certify(mlp, out["theta"][conv], X, y, lanczos_steps=mlp.n_params, k_max=mlp.n_params)
    d = reference.certify(mlp, out["theta"][conv], X, y)
    np.testing.assert_array_equal(c.kind, d["kind"])
    # The index is signed against tau + shift, the shift being |H(θ + p) - H(θ)| over the Newton
    # correction p. Lanczos takes p in a Krylov space, the dense twin solves exactly: where an endpoint
    # sits on a ReLU kink (a pre-activation within |p| of 0), the two corrections land on different
    # pieces and the shifts differ (seen: 1.8e-10 against 1.7e-2, and 0.023 against 0.035, with the
    # BLAS of scipy-openblas32 0.3.34). So the Lanczos index is checked against the dense eigenvalues
    # signed with the same margin, and against the dense twin's own index where the shifts agree.
    for i in range(conv.sum()):
        lam = np.linalg.eigvalsh(reference.dense_hessian(mlp, out["theta"][conv][i], X, y)[2])
        assert c.index[i] == int((lam < -c.tau[i]).sum()), (i, c.index[i], c.tau[i], lam[:14])
    same = np.abs(c.shift - d["shift"]) <= 0.1 * np.maximum(d["shift"], 1e-12)
    assert same.sum() >= 2, (c.shift, d["shift"])
    np.testing.assert_array_equal(c.index[same], d["index"][same])
    assert set(c.kind) <= {"minimum", "degenerate_minimum", "saddle"}
