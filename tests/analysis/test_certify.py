"""Certificates of endpoints: Lanczos against dense eigh, the gradient-flat residual, the closed-form
critical points of a linear network, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import fasttrap
from fasttrap import reference
from fasttrap.analysis.certify import _gf_residual


@pytest.mark.parametrize("act, widths, loss", [("tanh", (5, 6, 4, 3), "nll"), ("relu", (6, 8, 3), "nll"),
                                               ("sigmoid", (4, 5, 5, 2), "mse"), ("tanh", (3, 12, 4), "mse")])
def test_lanczos_matches_dense_eigh_on_small_nets(rng, act, widths, loss):
    mlp = fasttrap.MLP(widths, activation=act, loss=loss)
    th = mlp.init(3, int(rng.integers(100))).astype(np.float64) + 0.3 * rng.standard_normal((3, mlp.n_params))
    X = rng.standard_normal((50, widths[0]))
    y = rng.integers(0, widths[-1], 50)
    c = fasttrap.certify(mlp, th, X, y, lanczos_steps=mlp.n_params, k_max=mlp.n_params)
    r = reference.certify(mlp, th, X, y)
    np.testing.assert_allclose(c.lambda_min, r["lambda_min"], rtol=1e-6)
    np.testing.assert_allclose(c.lambda_max, r["lambda_max"], rtol=1e-6)
    np.testing.assert_array_equal(c.index, r["index"])
    np.testing.assert_allclose(c.grad_sq, r["grad_sq"], rtol=1e-10)
    np.testing.assert_allclose(c.gf_residual, r["gf_residual"], atol=1e-6)
    np.testing.assert_array_equal(c.kind, r["kind"])


def test_default_lanczos_budget_finds_the_extremes(rng):
    """With fewer Lanczos steps than parameters the extremes still converge (they come first)."""
    mlp = fasttrap.MLP((8, 16, 16, 4), activation="tanh")
    th = mlp.init(2, 4).astype(np.float64)
    X = rng.standard_normal((80, 8))
    y = rng.integers(0, 4, 80)
    c = fasttrap.certify(mlp, th, X, y, lanczos_steps=120)
    r = reference.certify(mlp, th, X, y)
    assert mlp.n_params > 120
    np.testing.assert_allclose(c.lambda_max, r["lambda_max"], rtol=1e-6)
    np.testing.assert_allclose(c.lambda_min, r["lambda_min"], rtol=1e-4)


def _linear_problem(seed=0, N=60):
    rng = np.random.default_rng(seed)
    n0, p, C = 4, 2, 3
    X = rng.standard_normal((N, n0)) * np.array([3.0, 2.0, 1.0, 0.5])
    y = rng.integers(0, C, N)
    Y = np.eye(C)[y]
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    S = (Yc.T @ Xc) @ np.linalg.solve(Xc.T @ Xc, Xc.T @ Yc)
    lam = np.sort(np.linalg.eigvalsh(S))[::-1]
    base = (Yc ** 2).sum()
    # Baldi & Hornik: critical points of a linear autoencoder-like net with p hidden units keep a
    # subset I (|I| ≤ p) of the eigenvectors of Σ_yx Σ_xx⁻¹ Σ_xy; L_I = (‖Y_c‖² − Σ_I λ_i) / (N C).
    values = {"none": base, "1": base - lam[0], "2": base - lam[1], "12": base - lam[0] - lam[1]}
    return fasttrap.MLP((n0, p, C), activation="linear", loss="mse"), X, y, {k: v / (N * C) for k, v in values.items()}


def test_newton_mr_lands_on_the_closed_form_critical_points_and_certify_names_them():
    mlp, X, y, values = _linear_problem()
    th0 = np.concatenate([mlp.init(12, 3), 0.01 * mlp.init(4, 5)]).astype(np.float64)   # some near the saddle W = 0
    r = fasttrap.inner_descent(mlp, th0, (X, y), solver=fasttrap.NewtonMR(), steps=60, progress=False)
    conv = r.status == "converged"
    assert conv.sum() >= 10
    assert np.all(2 * r.train_G[conv] < 1e-10)
    c = fasttrap.certify(mlp, r.theta[conv], X, y)
    vals = np.array(list(values.values()))
    glob = values["12"]
    for L, kind in zip(c.loss, c.kind):
        assert np.min(np.abs(vals - L)) < 1e-7, (L, values)              # an analytic critical value
        # the global minimum has the flat directions of the GL(p) symmetry: a degenerate minimum
        assert kind == ("degenerate_minimum" if abs(L - glob) < 1e-7 else "saddle"), (L, kind)
    assert {"degenerate_minimum", "saddle"} <= set(c.kind)              # both kinds were reached


def test_gf_residual_is_zero_at_a_non_degenerate_critical_point():
    """A least-squares fit with a linear model: its minimum is non-degenerate (H = 2XᵀX/(NC) ⊗ I)."""
    rng = np.random.default_rng(2)
    mlp = fasttrap.MLP((3, 2), activation="linear", loss="mse")
    X = rng.standard_normal((40, 3))
    y = rng.integers(0, 2, 40)
    A = np.c_[X, np.ones(40)]
    sol = np.linalg.lstsq(A, np.eye(2)[y], rcond=None)[0]                # [4, 2]: W1ᵀ; b1
    theta = np.concatenate([sol[:3].T.ravel(), sol[3]])[None]
    theta = theta + 1e-3 * rng.standard_normal(theta.shape)             # a step off the minimum
    c = fasttrap.certify(mlp, theta, X, y)
    assert c.gf_residual[0] < 1e-6 and c.kind[0] == "not_converged"   # g in the range of H: Newton removes it
    assert c.lambda_min[0] > 0 and c.index[0] == 0


def test_gf_residual_flags_a_gradient_in_the_kernel(rng):
    """Constructed gradient-flat point: an operator with a kernel and g inside it (r = 1), and one
    with g half in it (r = 1/√2), against one with g in its range (r = 0)."""
    P = 30
    lam = np.r_[np.zeros(4), rng.uniform(0.5, 3, P - 4)]
    Q = np.linalg.qr(rng.standard_normal((P, P)))[0]
    Hm = (Q * lam) @ Q.T

    def H(V):
        return V @ Hm

    ker, rng_vec = Q[:, 0], Q[:, 10]
    g = np.stack([ker, rng_vec, (ker + rng_vec) / np.sqrt(2)])
    s = dict(minres_tol=1e-12, minres_iters=P)
    r, _ = _gf_residual(H, g, s)
    np.testing.assert_allclose(r, [1.0, 0.0, 1 / np.sqrt(2)], atol=1e-8)
    kind = fasttrap.analysis.certify.classify(np.ones(3), np.zeros(3, int), np.zeros(3), r)
    assert list(kind) == ["gradient_flat", "not_converged", "not_converged"]


@pytest.mark.parametrize("kw, theta_fn, exc, match", [
    (dict(), lambda t: t[:0], ValueError, "K >= 1"),
    (dict(), lambda t: np.where(np.arange(t.size).reshape(t.shape) == 3, np.nan, t), ValueError, "theta"),
    (dict(grad_tol=-1.0), None, ValueError, "grad_tol"),
    (dict(eps=-1e-3), None, ValueError, "eps"),
    (dict(safety=0.5), None, ValueError, "safety"),
    (dict(seed=-1), None, ValueError, "seed"),
    (dict(seed="a"), None, TypeError, "seed"),
    (dict(safety="x"), None, TypeError, "safety"),
    (dict(k=10_000), None, ValueError, "k"),
    (dict(gf_cut=1.5), None, ValueError, "gf_cut"),
    (dict(k=4, k_max=2), None, ValueError, "k_max"),
    (dict(krylov="two"), None, ValueError, "krylov: expected one of"),
    (dict(products="float16"), None, ValueError, "products: expected one of"),
])
def test_bad_input_is_refused(rng, kw, theta_fn, exc, match):
    mlp = fasttrap.MLP((4, 5, 3))
    th = mlp.init(2, 0).astype(np.float64)
    if theta_fn is not None:
        th = theta_fn(th)
    X = rng.standard_normal((20, 4))
    y = rng.integers(0, 3, 20)
    with pytest.raises(exc, match=match):
        fasttrap.certify(mlp, th, X, y, **kw)


def test_newton_mr_bad_settings(rng):
    mlp = fasttrap.MLP((4, 5, 3))
    X = rng.standard_normal((20, 4))
    y = rng.integers(0, 3, 20)
    with pytest.raises(TypeError, match="solver"):
        fasttrap.inner_descent(mlp, mlp.init(1, 0), (X, y), solver="newton_mr", steps=2, progress=False)
    with pytest.raises(ValueError, match="alpha0"):
        fasttrap.inner_descent(mlp, mlp.init(1, 0), (X, y), solver=fasttrap.NewtonMR(alpha0=0.0), steps=2,
                               progress=False)


def test_sgd_then_newton_polish_keeps_the_basin_and_converges():
    mlp, X, y, values = _linear_problem(seed=1, N=64)
    th0 = mlp.init(4, 9)
    r = fasttrap.inner_descent(mlp, th0, (X, y), solver=fasttrap.SGDThenNewtonMR(sgd=fasttrap.SGD(lr=0.05,
                               batch_size=16), polish_steps=40), steps=200, progress=False)
    # line_search_failed: no step lowers ‖g‖² (g in the kernel of H: a gradient-flat stall)
    assert set(r.status) <= {"converged", "max_steps", "line_search_failed"}
    assert r.settings["polish_steps_done"].max() <= 40
    conv = r.status == "converged"
    assert conv.any() and np.all(2 * r.train_G[conv] < 1e-10)
    sgd = fasttrap.inner_descent(mlp, th0, (X, y), steps=200, solver=fasttrap.SGD(lr=0.05, batch_size=16),
                                 progress=False)
    # the polish starts where SGD ended: its start G is SGD's endpoint G (minibatch vs full: same point)
    assert np.allclose(r.settings["polish_G_start"], sgd.train_G, rtol=1e-6)


def test_newton_mr_with_a_huge_budget_allocates_only_what_it_runs():
    """steps = 10¹² once tried to allocate a [K, steps + 1] trace (14.6 TiB) before the first step."""
    rng = np.random.default_rng(4)
    mlp = fasttrap.MLP((3, 2), activation="linear", loss="mse")
    X = rng.standard_normal((30, 3))
    y = rng.integers(0, 2, 30)
    r = fasttrap.inner_descent(mlp, mlp.init(2, 0).astype(np.float64), (X, y), solver=fasttrap.NewtonMR(),
                               steps=10**12, progress=False)
    assert set(r.status) == {"converged"}
    assert r.G_trace.shape[1] == r.steps_done.max() + 1 <= 10


def _deep_endpoints(rng, K=3):
    """A tanh net well away from a minimum: many negative eigenvalues, so the index search doubles k."""
    mlp = fasttrap.MLP((6, 12, 12, 4), activation="tanh")
    th = mlp.init(K, 3).astype(np.float64) + 0.8 * rng.standard_normal((K, mlp.n_params))
    X = rng.standard_normal((70, 6))
    y = rng.integers(0, 4, 70)
    return mlp, th, X, y


def test_one_krylov_run_gives_todays_certificate_for_fewer_products(rng):
    """krylov='one' continues the first Lanczos run when the index reaches k instead of starting again:
    the same Krylov space, so the same extremes, index and kinds as krylov='separate' (the rule of the
    runs made before it), within the rounding, for fewer products."""
    mlp, th, X, y = _deep_endpoints(rng)
    kw = dict(lanczos_steps=20, k=4, k_max=32, slq_probes=1, minres_iters=30)
    a = fasttrap.certify(mlp, th, X, y, krylov="separate", **kw)
    b = fasttrap.certify(mlp, th, X, y, krylov="one", **kw)
    assert (a.index >= 4).any()                                   # the doubling did happen
    np.testing.assert_allclose(b.lambda_min, a.lambda_min, rtol=1e-9)
    np.testing.assert_allclose(b.lambda_max, a.lambda_max, rtol=1e-9)
    np.testing.assert_array_equal(b.index, a.index)
    np.testing.assert_array_equal(b.kind, a.kind)
    np.testing.assert_allclose(b.gf_residual, a.gf_residual, rtol=1e-9)
    assert b.hvps < a.hvps, (b.hvps, a.hvps)
    d = reference.certify(mlp, th, X, y)
    assert np.all(b.index <= d["index"])                          # a lower bound, as before


def test_float32_products_keep_the_extremes_and_the_index_within_their_bounds(rng):
    """products='float32': τ grows to the float32 rounding the run measures, and the extremes and the
    index agree with the float64 certificate within it (and with the dense twin)."""
    mlp, th, X, y = _deep_endpoints(rng)
    kw = dict(lanczos_steps=mlp.n_params, k_max=mlp.n_params)
    a = fasttrap.certify(mlp, th, X, y, products="float64", **kw)
    b = fasttrap.certify(mlp, th, X, y, products="float32", **kw)
    assert np.all(b.tau > 100 * a.tau) and np.all(b.tau < 1e-3 * b.lambda_max)
    assert np.all(np.abs(b.lambda_min - a.lambda_min) <= b.tau + b.lambda_min_residual)
    assert np.all(np.abs(b.lambda_max - a.lambda_max) <= b.tau + 1e-6 * a.lambda_max)
    d = reference.certify(mlp, th, X, y)
    lam = [np.linalg.eigvalsh(reference.dense_hessian(mlp, t, X, y)[2]) for t in th]
    # the float32 index counts exactly the eigenvalues below -tau (Lanczos spans everything here)
    np.testing.assert_array_equal(b.index, [int((l < -t).sum()) for l, t in zip(lam, b.tau)])
    assert np.all(b.index <= d["index"])
    np.testing.assert_array_equal(b.kind, a.kind)


def test_a_convex_minimum_has_no_proven_negative_weight(rng):
    """At the optimum of a convex problem (softmax regression: the one-layer MLP) H is positive
    semi-definite: neither the index nor the negative fraction may see anything below zero, in
    float64 or float32 products, and the kind is a minimum."""
    mlp = fasttrap.MLP((5, 3))
    X = rng.standard_normal((60, 5))
    y = rng.integers(0, 3, 60)
    from fasttrap.dynamics.newton import newton_mr

    out = newton_mr(mlp, mlp.init(2, 0).astype(np.float64), X, y, steps=100, G_tol=1e-26, growth=0.0)
    for products in ("float64", "float32"):
        c = fasttrap.certify(mlp, out["theta"], X, y, products=products, slq_probes=3)
        assert np.all(c.grad_sq < 1e-10), c.grad_sq
        assert np.all(c.index == 0) and np.all(c.negative_fraction == 0), (products, c.negative_fraction)
        assert set(c.kind) <= {"minimum", "degenerate_minimum"}, c.kind
