"""Lanczos, SLQ and MINRES, batched over K operators, against dense linear algebra."""

from __future__ import annotations

import numpy as np
import pytest

from fasttrap.linalg.lanczos import extend, lanczos, minres, restricted, ritz, slq


def _ops(rng, K, P, neg=3, zero=0):
    """K symmetric matrices with `neg` negative and `zero` zero eigenvalues, and their matvec."""
    Hs = []
    for _ in range(K):
        lam = np.concatenate([-rng.uniform(0.5, 2, neg), np.zeros(zero), rng.uniform(0.1, 5, P - neg - zero)])
        Q = np.linalg.qr(rng.standard_normal((P, P)))[0]
        Hs.append((Q * lam) @ Q.T)
    Hs = np.stack(Hs)
    return Hs, (lambda V: np.einsum("kpq,kq->kp", Hs, V))


def test_full_lanczos_is_exact(rng):
    Hs, mv = _ops(rng, 3, 40)
    lz = lanczos(mv, rng.standard_normal((3, 40)), 40)
    for k in range(3):
        th, S, res = ritz(lz, k)
        np.testing.assert_allclose(th, np.linalg.eigvalsh(Hs[k]), rtol=1e-10, atol=1e-10)
        assert res.max() < 1e-8


def test_extremes_converge_first_with_reorthogonalisation(rng):
    Hs, mv = _ops(rng, 2, 300)
    lz = lanczos(mv, rng.standard_normal((2, 300)), 120)
    for k in range(2):
        th, _, res = ritz(lz, k)
        lam = np.linalg.eigvalsh(Hs[k])
        assert th[0] == pytest.approx(lam[0], rel=1e-8) and th[-1] == pytest.approx(lam[-1], rel=1e-8)
        assert np.unique(np.round(th, 10)).size == th.size      # no ghost copies


def test_breakdown_on_an_invariant_subspace(rng):
    Hs, mv = _ops(rng, 1, 30)
    w, U = np.linalg.eigh(Hs[0])
    v0 = (U[:, 0] + U[:, 5])[None]                      # lies in a 2-dimensional invariant subspace
    lz = lanczos(mv, v0, 30)
    assert lz.steps[0] == 2
    np.testing.assert_allclose(ritz(lz, 0)[0], [w[0], w[5]], rtol=1e-10)


def test_minres_solves_indefinite_systems(rng):
    Hs, mv = _ops(rng, 4, 50, neg=5)
    b = rng.standard_normal((4, 50))
    sol = minres(mv, b, rtol=1e-12, maxiter=50)
    for k in range(4):
        np.testing.assert_allclose(sol.x[k], np.linalg.solve(Hs[k], b[k]), rtol=1e-7, atol=1e-9)
    assert np.all(sol.residual < 1e-10)


def test_minres_gives_the_least_squares_residual_on_singular_systems(rng):
    """With a kernel, min ‖b − Hx‖ is the size of b's kernel component: MINRES reaches it."""
    Hs, mv = _ops(rng, 2, 40, neg=2, zero=6)
    b = rng.standard_normal((2, 40))
    sol = minres(mv, b, rtol=1e-12, maxiter=40)
    for k in range(2):
        w, U = np.linalg.eigh(Hs[k])
        ker = U[:, np.abs(w) < 1e-9]
        want = np.linalg.norm(ker @ (ker.T @ b[k])) / np.linalg.norm(b[k])
        got = np.linalg.norm(Hs[k] @ sol.x[k] - b[k]) / np.linalg.norm(b[k])
        assert got == pytest.approx(want, rel=1e-6)
        assert sol.residual[k] == pytest.approx(want, rel=1e-6)


def test_minres_of_a_kernel_vector_is_hopeless(rng):
    Hs, mv = _ops(rng, 1, 20, neg=0, zero=3)
    w, U = np.linalg.eigh(Hs[0])
    b = U[:, np.abs(w) < 1e-9].sum(1)[None]
    sol = minres(mv, b, maxiter=20)
    assert sol.residual[0] == pytest.approx(1.0, abs=1e-10) and np.allclose(sol.x, 0)


def test_slq_density_integrates_to_one_and_matches_traces(rng):
    Hs, mv = _ops(rng, 2, 60, neg=6)
    probes = 400

    def mv_rep(V):
        return np.einsum("kpq,kq->kp", np.repeat(Hs, probes, axis=0), V)

    nodes, weights = slq(mv_rep, 2, 60, 25, probes, seed=1)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-10)
    for k in range(2):
        for p in (1, 2, 3):
            est = (weights[k] * nodes[k] ** p).sum() / probes
            exact = np.trace(np.linalg.matrix_power(Hs[k], p)) / 60
            sd = np.sqrt(2 * np.trace(np.linalg.matrix_power(Hs[k], 2 * p)) / probes) / 60   # Hutchinson's error
            assert abs(est - exact) < 5 * sd + 1e-9, (k, p, est, exact)


def test_hessian_eigs_finds_every_copy_of_a_zero_cluster():
    """Dead ReLU units make exact zero eigenvalues, many of them. One start vector sees the cluster
    once; with restarts k = P still gives all P eigenvalues, in place, with honest residuals."""
    import fasttrap
    from fasttrap import reference
    from fasttrap.linalg.spectra import hessian_eigs

    rng = np.random.default_rng(3)
    mlp = fasttrap.MLP((4, 6, 3), activation="relu", loss="nll")
    th = mlp.init(1, 2).astype(np.float64)
    (ow, ob, oe), _ = mlp.layer_offsets()
    th[0, ob:ob + 3] = -50.0                             # three dead hidden units
    X = rng.standard_normal((40, 4))
    y = rng.integers(0, 3, 40)
    P = mlp.n_params
    _, _, H = reference.dense_hessian(mlp, th[0], X, y)
    want = np.linalg.eigvalsh((H + H.T) / 2)
    assert (np.abs(want) < 1e-12).sum() >= 15            # the cluster is there
    got = hessian_eigs(mlp, th, X, y, k=P, which="SA", steps=P)
    assert np.all(np.isfinite(got.values)) and got.steps[0] == P
    np.testing.assert_allclose(got.values[0], want, atol=1e-9 * np.abs(want).max())
    assert np.all(got.residuals[0] < 1e-8)


def test_restricted_applies_each_chosen_models_operator_and_no_other():
    rng = np.random.default_rng(3)
    n, P = 5, 7
    Hs = rng.standard_normal((n, P, P))
    calls = []

    def H(V):                               # [n, P] -> [n, P], model k's matrix on row k
        calls.append(V.shape)
        return np.einsum("kpq,kq->kp", Hs, V)

    rows = np.array([3, 0])
    V = rng.standard_normal((2, P))
    out = restricted(H, n, rows)(V)
    np.testing.assert_allclose(out, np.stack([Hs[3] @ V[0], Hs[0] @ V[1]]), rtol=1e-12)
    assert calls == [(n, P)]                # one batched call of the full width
    assert restricted(H, n, np.arange(n)) is H


def test_an_extended_run_is_the_longer_run(rng):
    """extend continues a run: m0 steps then m - m0 more give what m steps from the same start give,
    for any subset of its operators, and can be extended again."""
    Hs, mv = _ops(rng, 3, 60)
    v0 = rng.standard_normal((3, 60))
    full = lanczos(mv, v0, 35)
    part = lanczos(mv, v0, 12, keep_state=True)
    rows = np.array([0, 2])
    sub = lambda V: np.einsum("kpq,kq->kp", Hs[rows], V)
    ext = extend(sub, extend(sub, part, rows, 20), np.arange(2), 35)
    np.testing.assert_allclose(ext.alpha, full.alpha[rows], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ext.beta, full.beta[rows], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ext.steps, full.steps[rows])
    np.testing.assert_allclose(ext.skew, full.skew[rows], atol=1e-12)
    with pytest.raises(ValueError, match="keep_state"):
        extend(mv, full, np.arange(3), 40)


def test_slq_residuals_are_the_ritz_residuals(rng):
    Hs, mv = _ops(rng, 2, 40)
    nodes, weights, res = slq(lambda V: np.einsum("kpq,kq->kp", np.repeat(Hs, 2, 0), V), 2, 40, 10, 2, seed=3,
                              residuals=True)
    for k in range(2):
        for p in range(2):
            H = Hs[k]
            # a node with a small residual is close to an eigenvalue of H
            lam = np.linalg.eigvalsh(H)
            for t, r in zip(nodes[k, p], res[k, p]):
                assert np.abs(lam - t).min() <= r + 1e-10
