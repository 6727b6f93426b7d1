"""What is each inner endpoint? A minimum, a saddle, a gradient-flat point, or a run that did not converge.

Gradient-norm minimisation, which is exactly the inner descent on G = ½‖∇L‖², stops wherever
∇G = H∇L vanishes: at critical points (∇L = 0), but also where ∇L lies in the kernel of H
(*gradient-flat* points, Frye et al. 2019, 2021), and anywhere a fixed budget of steps runs out.
:func:`certify` tells them apart, endpoint by endpoint, from the full-batch loss in float64:

* ``grad_sq`` = ‖∇L‖² on all the rows given;
* ``lambda_min``, ``lambda_max``: the extreme eigenvalues of the full-batch Hessian, by Lanczos
  with full reorthogonalisation on the compiled HVP (:mod:`fasttrap.linalg.lanczos`), from a fixed
  start vector; ``lambda_min_residual`` is the residual ‖Hu − λu‖ of the λ_min Ritz pair, so an
  unconverged estimate shows;
* ``index``: the number of eigenvalues **proven negative**: Ritz values below −τ, where τ is the
  solver's own error bound (:func:`fasttrap.linalg.lanczos.rounding_bound`: the asymmetry of the
  computed projection VᵀHV, which measures the rounding the products carried, times ``safety``).
  Cauchy interlacing and Weyl's inequality make that count a lower bound on the true index
  whether Lanczos converged or not (:func:`fasttrap.linalg.lanczos.signs` gives the argument);
  it is exact only when Lanczos spans the whole space (P steps). While the count reaches k, k
  doubles and Lanczos runs 3k steps, up to ``k_max``; ``index_lower_bound`` says which;
* ``undecided``: Ritz values whose residual interval, widened by τ, reaches zero: eigenvalues the
  solver cannot sign. A single start vector sees each distinct eigenvalue once, so this counts
  distinct near-zero values the run resolved, not their multiplicity;
* ``negative_fraction``, the SLQ weight of the nodes proven below zero: nodes whose interval
  θ ± (residual + τ) lies below zero (``krylov="one"``; the first probe is the extremes' own run).
  Runs made before it (``krylov="separate"``) counted every node below −τ, whatever its residual:
  a bulk node near zero with a large residual can then carry most of the weight and its sign decide
  the value (at a reference-net endpoint: 0.88 from a Rademacher probe, 0.03 from the extremes'
  run, 0.011 with the residual rule: ``benchmarks/results/cpu_certify_fast.md``);
* ``gf_residual`` r = ‖Hp + g‖/‖g‖ for the MINRES solution p of H p = −g: 0 when g lies in the
  range of H, 1 when g lies in its kernel. Following Frye et al. (2021), r ≥ 0.9 marks a
  gradient-flat point;
* ``kind``, by the rule (:func:`fasttrap.common.kinds.classify`):

  1. ‖∇L‖² < ``grad_tol`` (default 1e-10, the tolerance of the critical-point literature): a
     critical point — ``"saddle"`` if an eigenvalue is proven negative, ``"minimum"`` if none is
     and none is undecided, ``"degenerate_minimum"`` if none is negative but some are too close
     to zero to sign (flat directions: linear and ReLU nets have many);
  2. otherwise ``"gradient_flat"`` if r ≥ ``gf_cut`` (default 0.9, Frye et al.);
  3. otherwise ``"not_converged"``: the descent stopped where its budget ran out.

Why not a fixed fraction of λ_max (``eps``, the rule of runs made before this one, kept only so
that they resume with the rule they were made with): a float64 Lanczos resolves a curvature of
1e-6·λ_max with ease, and on a linear network two saddles with λ_min = −3e-2 and λ_max ≈ 400 and
1,200 were called minima under ε = 1e-4. Every threshold is an argument; the raw λ_min and τ are
always returned beside the verdict.

Cost: all of it is HVPs (Lanczos steps + SLQ probes × steps + MINRES steps + 1, each a pass over
the rows), batched over the K endpoints: one compiled call per step for all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..model.mlp import MLP
from ..ops import resolve_for
from ..ops.validate import check_dataset, check_float, check_int, check_model, check_theta
from ..linalg.hessian import full_batch_gradient, full_batch_hvp
from ..linalg.lanczos import damped_solve, extend, lanczos, minres, restricted, ritz, rounding_bound, signs, slq
from ..common.kinds import CRITICAL_KINDS, KINDS, classify


@dataclass
class Certificate:
    """What :func:`certify` found at K endpoints; every array is [K].

    Attributes:
        grad_sq: ‖∇L‖² (float64, full batch).
        loss: the full-batch loss.
        lambda_min, lambda_max: extreme Hessian eigenvalues (Lanczos).
        lambda_min_residual: ‖H u − λ_min u‖ of the Ritz pair (small: converged).
        index: eigenvalues proven negative (Ritz values below −tau), a lower bound by interlacing.
        index_lower_bound: True where the index is only a lower bound (Lanczos did not span the
            whole space); False where it is exact.
        undecided: Ritz values too close to zero to sign (0 under the old ``eps`` rule).
        tau: the error bound τ the signs were taken with: the rounding bound of the Lanczos run,
            plus ``shift`` at critical points (NaN under the ``eps`` rule).
        shift: at critical points, ‖H(θ + p) − H(θ)‖₂ for the Newton correction p (how far the
            spectrum can move between the endpoint and the critical point it approximates); 0
            elsewhere, NaN under the ``eps`` rule.
        negative_fraction: SLQ weight of the nodes proven negative (see the module docstring).
        gf_residual: ‖H p + g‖ / ‖g‖ for the MINRES solution of H p = −g (0 where g = 0).
        kind: one of :data:`KINDS`.
        settings: the thresholds and sizes used.
        hvps: Hessian-vector products per endpoint, in total.
    """

    grad_sq: np.ndarray
    loss: np.ndarray
    lambda_min: np.ndarray
    lambda_max: np.ndarray
    lambda_min_residual: np.ndarray
    index: np.ndarray
    index_lower_bound: np.ndarray
    negative_fraction: np.ndarray
    gf_residual: np.ndarray
    kind: np.ndarray
    undecided: np.ndarray
    tau: np.ndarray
    shift: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    hvps: int = 0

    def counts(self) -> dict[str, int]:
        """Endpoints of each kind (every kind listed, zeros included)."""
        return {k: int((self.kind == k).sum()) for k in KINDS}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The [K] arrays, for storage (under the old ``eps`` rule without ``undecided`` and ``tau``,
        which it does not compute, so that a run made with it keeps one set of fields)."""
        old = self.settings.get("eps") is not None
        return {k: v for k, v in asdict(self).items() if isinstance(v, np.ndarray)
                and not (old and k in ("undecided", "tau", "shift"))}


#: how the Lanczos runs of a certificate are laid out: ``"one"`` (the index search extends the first
#: run, and that run is the first SLQ probe) or ``"separate"`` (a fresh run per doubling of k and
#: separate SLQ probes: the certificates of runs made before ``"one"``, kept so that they resume alike)
KRYLOV = ("one", "separate")
#: the dtype of the Hessian-vector products of the Lanczos, SLQ and MINRES runs (the gradient, the
#: loss and the critical-point shift are float64 always)
PRODUCTS = ("float64", "float32")


def _checked(mlp: MLP, theta: Any, X: Any, y: Any, grad_tol: Any, eps: Any, gf_cut: Any, k: Any, k_max: Any,
             lanczos_steps: Any, slq_probes: Any, slq_steps: Any, minres_tol: Any, minres_iters: Any, block: Any,
             safety: Any = 10.0, krylov: Any = "one", products: Any = "float64") -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    check_model(mlp)
    th = check_theta(mlp, theta).astype(np.float64)
    Xa, ya = check_dataset(mlp, X, y, np.float64)
    P = mlp.n_params
    s = dict(grad_tol=check_float(grad_tol, "grad_tol", lo=0), eps=None if eps is None else check_float(eps, "eps", lo=0),
             safety=check_float(safety, "safety", lo=1),
             gf_cut=check_float(gf_cut, "gf_cut", lo=0), k=check_int(k, "k", lo=1, hi=P),
             lanczos_steps=check_int(lanczos_steps, "lanczos_steps", lo=1), slq_probes=check_int(slq_probes, "slq_probes", lo=0),
             slq_steps=check_int(slq_steps, "slq_steps", lo=1), minres_tol=check_float(minres_tol, "minres_tol", lo=0),
             minres_iters=check_int(minres_iters, "minres_iters", lo=1), block=check_int(block, "block", lo=1))
    s["k_max"] = check_int(k_max if k_max is not None else max(s["k"], min(P, 64)), "k_max", lo=s["k"], hi=P)
    if krylov not in KRYLOV:
        raise ValueError(f"krylov: expected one of {list(KRYLOV)}, got {krylov!r}")
    s["krylov"] = krylov
    if products not in PRODUCTS:
        raise ValueError(f"products: expected one of {list(PRODUCTS)}, got {products!r}")
    s["products"] = products
    if s["gf_cut"] > 1:
        raise ValueError(f"gf_cut: must lie in [0, 1] (a residual ratio), got {s['gf_cut']}")
    return th, Xa, ya, s


def certify(mlp: MLP, theta: Any, X: Any, y: Any, *, grad_tol: float = 1e-10, safety: float = 10.0,
            eps: float | None = None, gf_cut: float = 0.9, k: int = 8, k_max: int | None = None,
            lanczos_steps: int = 80, slq_probes: int = 2, slq_steps: int = 30, minres_tol: float = 1e-10,
            minres_iters: int = 100, block: int = 8192, seed: int = 0, krylov: str = "one",
            products: str = "float64", backend: str = "auto") -> Certificate:
    """Certify K endpoints: critical point (minimum or saddle), gradient-flat point, or not converged.

    Args:
        mlp: the network: a :class:`fasttrap.MLP` or a :class:`fasttrap.TorchModel` (torch.func path).
        theta: [K, P] endpoints (any float dtype; the work is float64).
        X: [N, n0] the rows of the full-batch loss (all of them, or a documented subset).
        y: [N] labels.
        grad_tol: ‖∇L‖² below which an endpoint is a critical point (default 1e-10).
        safety: the factor on the measured rounding of the products in τ (default 10, ≥ 1; see
            :func:`fasttrap.linalg.lanczos.rounding_bound`).
        eps: None (default) for the error-bound rule; a number selects the rule of runs made
            before it (eigenvalues below −eps·λ_max negative, no undecided count), kept so that
            those runs resume with what they were made with.
        gf_cut: gf_residual at or above which a non-critical endpoint is gradient-flat (0.9).
        k: smallest Ritz values first inspected for the index; doubled while all are negative.
        k_max: cap on k (default min(P, 64)); must not exceed P.
        lanczos_steps: Lanczos steps for the extremes (raised to 3k as k grows; at most P).
        slq_probes, slq_steps: probes and steps of the SLQ density (0 probes: skip it).
        minres_tol, minres_iters: MINRES relative tolerance and step cap for H p = −g.
        block: rows per compiled HVP call.
        seed: seed of the Lanczos start vector and the SLQ probes.
        krylov: ``"one"`` (default): when the index reaches k, the first Lanczos run is continued to
            3k steps (the same Krylov space a fresh run builds, for the new steps only), and that run,
            from a Gaussian start vector, is also the first SLQ probe (an unbiased one: for Gaussian v,
            E[vᵀf(H)v/‖v‖²] = tr f(H)/P); ``"separate"``: a fresh run per doubling and ``slq_probes``
            Rademacher probes of their own (certificates made before, kept so that runs resume alike).
        products: ``"float64"`` (default) or ``"float32"``: the dtype of the Hessian-vector products of
            the Lanczos, SLQ and MINRES runs (2.1× faster on the reference net). The sign rule holds
            either way: τ is measured from the products' own rounding (the skew of the computed
            projection, with the float32 unit roundoff as its floor), so float32 noise widens τ and
            the undecided count instead of signing anything. The gradient, the loss and the
            critical-point shift (a difference of Hessians a tiny step apart) stay float64.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.

    Returns:
        :class:`Certificate`.

    Raises:
        ValueError: bad shapes or values (K = 0, NaN in θ, a negative tolerance, k > P …).
    """
    th, Xa, ya, s = _checked(mlp, theta, X, y, grad_tol, eps, gf_cut, k, k_max, lanczos_steps, slq_probes,
                             slq_steps, minres_tol, minres_iters, block, safety, krylov, products)
    seed = check_int(seed, "seed", lo=0)
    K, P = th.shape
    backend = resolve_for(mlp, backend)
    count = [0]
    pdt = np.dtype(s["products"])
    thp, Xp = th.astype(pdt, copy=False), Xa.astype(pdt, copy=False)     # copies only for float32
    H = full_batch_hvp(mlp, thp, Xp, ya, s["block"], backend, counter=count)
    loss, g = full_batch_gradient(mlp, th, Xa, ya, s["block"], backend)
    grad_sq = (g * g).sum(1)

    lam_min, lam_max, res_min, index, capped, undecided, tau, ritzs = _extremes_and_index(H, K, P, s, seed, pdt)
    gf, _ = _gf_residual(H, g, s)
    shift = np.zeros(K) if s["eps"] is None else np.full(K, np.nan)
    crit = np.flatnonzero(grad_sq < s["grad_tol"]) if s["eps"] is None else np.zeros(0, np.int64)
    if crit.size:
        # the endpoint is near, not at, its critical point: widen τ by how far the spectrum moves
        # over the Newton correction p (see _critical_shift), then sign again
        shift[crit] = _critical_shift(mlp, th[crit], g[crit], lam_min[crit], lam_max[crit], Xa, ya, s, backend, seed,
                                      count)
        for i in crit:
            index[i], undecided[i] = signs(ritzs[i][0], ritzs[i][1], tau[i] + shift[i], not capped[i])
        tau = tau + np.nan_to_num(shift)
    neg_frac = np.zeros(K)
    thr = -s["eps"] * lam_max if s["eps"] is not None else -tau
    if s["slq_probes"] > 0:
        # "one": the first probe is the extremes' run itself, and a node counts where its whole
        # interval θ ± (residual + τ) lies below zero (proven, as the index is); "separate", the rule
        # of the runs made before it: a node below −τ, whatever its residual (a bulk node near 0
        # with a large residual then carries most of the weight either way)
        own = s["krylov"] == "one"
        reps = s["slq_probes"] - own
        if own:
            neg_frac += np.array([(w0 * (t + r < thr[i])).sum() for i, (t, r, w0) in enumerate(ritzs)])
        if reps:
            th_rep = np.repeat(thp, reps, axis=0)
            Hrep = full_batch_hvp(mlp, th_rep, Xp, ya, s["block"], backend)
            nodes, weights, res = slq(Hrep, K, P, s["slq_steps"], reps, seed=seed + 1, residuals=True)
            count[0] += s["slq_steps"] * K * reps
            below = nodes + (res if own else 0.0) < thr[:, None, None]
            neg_frac += (weights * below).sum(axis=(1, 2))
        neg_frac /= s["slq_probes"]
    kind = classify(grad_sq, index, neg_frac, gf, s["grad_tol"], s["gf_cut"],
                    undecided=None if s["eps"] is not None else undecided)
    return Certificate(grad_sq=grad_sq, loss=loss, lambda_min=lam_min, lambda_max=lam_max,
                       lambda_min_residual=res_min, index=index, index_lower_bound=capped, negative_fraction=neg_frac,
                       gf_residual=gf, kind=kind, undecided=undecided, tau=tau, shift=shift, settings=s | {"rows": int(Xa.shape[0]), "seed": seed},
                       hvps=int(count[0] // K))


def _extremes_and_index(H: Any, K: int, P: int, s: dict[str, Any], seed: int, pdt: np.dtype = np.dtype(np.float64)
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """λ_min, λ_max, the λ_min residual, the index, whether it is only a lower bound, the undecided
    count and the rounding bound τ.

    The index counts the Ritz values proven negative (:func:`fasttrap.linalg.lanczos.signs`): a
    lower bound, converged or not, and exact when Lanczos spans the whole space (P steps; an
    invariant subspace found earlier gives exact eigenvalues but not their multiplicities, so the
    count stays a lower bound). While that count reaches k (the k-th smallest Ritz value is still
    negative), k doubles and Lanczos runs 3k steps, up to k_max. Under the old ``eps`` rule the
    threshold is −eps·λ_max and an early invariant subspace counts as exact, as it did.
    """
    v0 = np.random.default_rng([seed, 7]).standard_normal(P)
    lam_min, lam_max, res_min = np.zeros(K), np.zeros(K), np.zeros(K)
    index, lower = np.zeros(K, dtype=np.int64), np.zeros(K, dtype=bool)
    undecided, tau = np.zeros(K, dtype=np.int64), np.full(K, np.nan)
    ritzs: list[Any] = [None] * K
    kk = np.full(K, s["k"])
    todo = np.arange(K)
    m = min(P, max(s["lanczos_steps"], 3 * s["k"]))
    lz, prev = None, np.arange(K)
    while todo.size:
        sub = todo
        # H acts on all K endpoints; only a re-run for some of them needs the scatter
        Hsub = restricted(H, K, sub)
        if s["krylov"] == "one" and lz is not None:       # continue the run: its first steps stand
            lz = extend(Hsub, lz, np.searchsorted(prev, sub), m)
        else:
            lz = lanczos(Hsub, np.tile(v0, (sub.size, 1)), m, keep_state=s["krylov"] == "one")
        prev = sub
        bound = rounding_bound(lz, s["safety"], pdt)
        again = []
        for j, i in enumerate(sub):
            th, S, res = ritz(lz, j)
            lam_min[i], lam_max[i], res_min[i] = th[0], th[-1], res[0]
            ritzs[i] = (th, res, S[0] ** 2)
            if s["eps"] is not None:
                index[i] = int((th < -s["eps"] * th[-1]).sum())
                exact = lz.steps[j] < m or m == P       # the Krylov space closed, or is everything
            else:
                tau[i] = bound[j]
                index[i], undecided[i] = signs(th, res, bound[j], bool(lz.steps[j] == P))
                exact = bool(lz.steps[j] == P)
            lower[i] = not exact
            if not exact and index[i] >= kk[i] and kk[i] < s["k_max"]:
                kk[i] = min(2 * kk[i], s["k_max"])
                again.append(i)
        todo = np.array(again, dtype=np.int64)
        if todo.size:
            m = min(P, max(m, 3 * int(kk[todo].max())))
    return lam_min, lam_max, res_min, index, lower, undecided, tau, ritzs


def _gf_residual(H: Any, g: np.ndarray, s: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(‖H p + g‖ / ‖g‖ [K], p [K, P]) for the MINRES solution p of H p = −g, the residual measured
    with one more product."""
    gn = np.linalg.norm(g, axis=1)
    sol = minres(H, -g, rtol=s["minres_tol"], maxiter=s["minres_iters"])
    r = np.linalg.norm(H(sol.x) + g, axis=1)
    return np.where(gn > 0, r / np.where(gn > 0, gn, 1.0), 0.0), sol.x


SHIFT_STEPS = 20


def _critical_shift(mlp: MLP, th: np.ndarray, g: np.ndarray, lam_min: np.ndarray, lam_max: np.ndarray, X: np.ndarray,
                    y: np.ndarray, s: dict[str, Any], backend: str, seed: int, count: list[int]) -> np.ndarray:
    """δ [K] = ‖H(θ + p) − H(θ)‖₂ by Lanczos on the difference of the two operators.

    Why: ‖∇L‖² < grad_tol puts θ near a critical point θ*, not on it, and near a degenerate one the
    Hessian's zero eigenvalues split by O(‖θ − θ*‖) either way, so a real but tiny negative value
    at θ may be none at θ*. p, the damped Newton correction p = −(H² + μI)⁻¹Hg with
    μ = ‖g‖·‖H‖ (:func:`fasttrap.linalg.lanczos.damped_solve`), is θ* − θ to first order along
    every direction curved by more than √μ and stays finite along the flat ones (the undamped
    least-squares step is not: near a singular H it can be 10⁴ times too long). By Weyl's
    inequality the spectrum of H(θ + p) lies within ‖H(θ + p) − H(θ)‖₂ of that of H(θ); its
    largest |Ritz value| after ``SHIFT_STEPS`` steps is what τ is widened by at critical points.
    """
    Ha = full_batch_hvp(mlp, th, X, y, s["block"], backend, counter=count)
    hn = np.maximum(np.abs(lam_min), np.abs(lam_max))
    p, _, _ = damped_solve(Ha, -g, np.linalg.norm(g, axis=1) * hn, min(s["minres_iters"], th.shape[1]))
    Hb = full_batch_hvp(mlp, th + p, X, y, s["block"], backend, counter=count)
    v0 = np.random.default_rng([seed, 13]).standard_normal(th.shape)
    lz = lanczos(lambda V: Hb(V) - Ha(V), v0, min(SHIFT_STEPS, th.shape[1]))
    out = np.zeros(th.shape[0])
    for k in range(th.shape[0]):
        t, _, _ = ritz(lz, k)
        out[k] = np.abs(t).max()
    return out


def segment_kinds(kind_at: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """What each trap (segment) is made of, from the kinds of its certified endpoints.

    Args:
        kind_at: [T] the kind of each endpoint of one window ("" where not certified).
        starts, lengths: [S] the segments of that window.

    Returns:
        [S]: ``"critical"`` (every certified endpoint a minimum or saddle), ``"gradient_flat"`` or
        ``"not_converged"`` (every certified endpoint of that kind), ``"mixed"``, or
        ``"uncertified"`` (none of its endpoints was certified).
    """
    out = []
    for a, n in zip(np.asarray(starts), np.asarray(lengths)):
        k = [x for x in kind_at[a:a + n] if x]
        if not k:
            out.append("uncertified")
        elif all(x in CRITICAL_KINDS for x in k):
            out.append("critical")
        elif all(x == k[0] for x in k):
            out.append(k[0])
        else:
            out.append("mixed")
    return np.array(out, dtype="U18")
