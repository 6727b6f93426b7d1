"""Spectra: fasttrap's Jacobian ESD and Hessian spectrum against the methods they replace, in one run.

    python -m pytest benchmarks/bench_spectra.py -s
    python -m pytest benchmarks/bench_spectra.py --benchmark-disable     # the agreement checks only (CI)

* **Jacobian ESD** of the reference net (784-100-100-10, ReLU, trained 300 SGD steps) on the 10,000
  MNIST test images, float32 Jacobians, float64 eigensolver:
  - fasttrap: :func:`fasttrap.jacobian_esd` (the compiled Jacobian, one GEMM per layer per block,
    𝒥ᵀ𝒥 accumulated by SYRK, then torch's ``eigvalsh`` of the 7,840 × 7,840 matrix);
  - the draft's method (``ww-phys_theory/Jacobian/jacobian.py``), written in torch: one backward pass
    per class on batches of inputs, 𝒥 stacked whole [10,000, 7,840], 𝒥ᵀ𝒥 by one matmul, then the
    same ``eigvalsh``.
  Both spectra are compared (relative error of the top eigenvalues and of the trace) before the
  times are reported; the eigensolver's time is reported apart, since both pay it.
* **Hessian top-k** (k = 5) of the full-batch loss on 10,000 training rows, float64:
  - fasttrap: :func:`fasttrap.hessian_eigs` (Lanczos on the compiled batched HVP);
  - PyHessian's algorithm (``hessian.eigenvalues``: power iteration with deflation against the found
    eigenvectors, Hessian-vector products by double backward, stop at relative change < 1e-3 or
    100 iterations), written in torch.
* **Hessian density** by SLQ (4 probes × 60 steps): fasttrap's :func:`fasttrap.hessian_density`
  against PyHessian's ``density`` algorithm (Lanczos with full reorthogonalisation, double-backward
  HVP), same probes and steps; the traces are compared.
* **model-HVPs per second** for K ∈ {1, 8, 32} models on one 1,000-row batch, float64: the compiled
  batched HVP against torch's double backward over the K models at once.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import fasttrap
from fasttrap import reference
from fasttrap.model import data
from fasttrap.linalg.spectra import symmetric_eigvalsh

MLP = fasttrap.MLP((784, 100, 100, 10))
_cache: dict = {}


def _ds():
    if "ds" not in _cache:
        _cache["ds"] = data.load("mnist")
    return _cache["ds"]


def _trained(K: int = 1) -> np.ndarray:
    key = ("theta", K)
    if key not in _cache:
        out = fasttrap.outer_sgd(MLP, _ds(), seeds=list(range(K)), steps=300, record=[300], curve_points=0,
                                 progress=False)
        _cache[key] = out.thetas[:, 0].copy()
    return _cache[key]


# ---- the draft's Jacobian ESD, in torch ---------------------------------------------------------

def draft_jacobian_esd(mlp: fasttrap.MLP, theta: np.ndarray, X: np.ndarray, batch: int = 500,
                       gram_side: bool = False) -> tuple[np.ndarray, dict]:
    """One backward per class on batches (``batch_diagJ``), 𝒥 stacked whole, 𝒥ᵀ𝒥 (or, with
    ``gram_side``, 𝒥𝒥ᵀ), eigvalsh (float64)."""
    th = torch.from_numpy(np.asarray(theta, np.float32))
    Js = []
    t0 = time.perf_counter()
    for r0 in range(0, X.shape[0], batch):
        x = torch.from_numpy(np.asarray(X[r0:r0 + batch], np.float32)).requires_grad_(True)
        out = reference.outputs(mlp, th[None], x)[0]                          # [b, C]
        J = torch.zeros(mlp.n_out, *x.shape)
        for c in range(mlp.n_out):
            g = torch.zeros_like(out)
            g[:, c] = 1
            (gx,) = torch.autograd.grad(out, x, g, retain_graph=True)
            J[c] = gx
        Js.append(J.transpose(0, 1).reshape(x.shape[0], -1))
    full = torch.cat(Js)                                                       # [N, C·n0]
    M = (full @ full.T if gram_side else full.T @ full).double()
    t1 = time.perf_counter()
    ev = torch.linalg.eigvalsh(M).numpy()[::-1]
    t2 = time.perf_counter()
    return np.maximum(ev, 0), {"jacobian_s": t1 - t0, "eigh_s": t2 - t1}


def fasttrap_jacobian_esd(mlp: fasttrap.MLP, theta: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, dict]:
    from fasttrap.ops import jacobian_gram

    t0 = time.perf_counter()
    M = jacobian_gram(mlp, np.asarray(theta, np.float32)[None], np.asarray(X, np.float32), 256, backend="cpu")[0]
    t1 = time.perf_counter()
    ev = symmetric_eigvalsh(M)[::-1]                       # what fasttrap.jacobian_esd uses: torch's LAPACK
    t2 = time.perf_counter()
    return np.maximum(ev, 0), {"jacobian_s": t1 - t0, "eigh_s": t2 - t1}


def test_jacobian_esd_against_the_draft(benchmark, recorder):
    ds = _ds()
    th = _trained()[0]
    if benchmark.disabled:
        # agreement only, on a slice: the two spectra are the same
        X = ds.X_test[:300]
        a = fasttrap.jacobian_esd(MLP, th[None], X)[0]             # the 300 × 300 side
        b, _ = draft_jacobian_esd(MLP, th, X, batch=100, gram_side=True)
        assert np.abs(a - b).max() <= 1e-4 * b[0]
        return
    X = ds.X_test
    res = {}
    benchmark.pedantic(lambda: res.setdefault("ft", fasttrap_jacobian_esd(MLP, th, X)), rounds=1, iterations=1)
    ev_ft, t_ft = res["ft"]
    ev_dr, t_dr = draft_jacobian_esd(MLP, th, X)
    top = float(np.abs(ev_ft[:50] - ev_dr[:50]).max() / ev_dr[0])
    tr = float(abs(ev_ft.sum() / ev_dr.sum() - 1))
    assert top < 1e-4 and tr < 1e-4
    recorder.add("cpu_spectra", _module=__name__, what="jacobian_esd", rows=X.shape[0], kd=MLP.n_in * MLP.n_out,
                 ft_jacobian_s=t_ft["jacobian_s"], ft_eigh_s=t_ft["eigh_s"], draft_jacobian_s=t_dr["jacobian_s"],
                 draft_eigh_s=t_dr["eigh_s"], top50_rel_err=top, trace_rel_err=tr,
                 threads=fasttrap.get_num_threads())


# ---- PyHessian's algorithms, in torch ----------------------------------------------------------

class TorchHessian:
    """The full-batch Hessian operator as PyHessian builds it: double backward on one model (float64)."""

    def __init__(self, mlp: fasttrap.MLP, theta: np.ndarray, X: np.ndarray, y: np.ndarray):
        self.mlp = mlp
        self.th = torch.from_numpy(np.asarray(theta, np.float64)[None].copy()).requires_grad_(True)
        self.X = torch.from_numpy(np.asarray(X, np.float64))
        self.y = torch.from_numpy(np.asarray(y, np.int64))
        L = reference.losses(mlp, reference.outputs(mlp, self.th, self.X), self.y)[0]
        (self.g,) = torch.autograd.grad(L, self.th, create_graph=True)
        self.hvps = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.hvps += 1
        (Hv,) = torch.autograd.grad(self.g, self.th, v[None], retain_graph=True)
        return Hv[0].detach()


def pyhessian_top_k(H: TorchHessian, P: int, k: int, max_iter: int = 100, tol: float = 1e-3, seed: int = 0) -> np.ndarray:
    """PyHessian's ``hessian.eigenvalues``: power iteration per eigenvalue, deflated against the found ones."""
    gen = torch.Generator().manual_seed(seed)
    vals, vecs = [], []
    for _ in range(k):
        v = torch.randn(P, dtype=torch.float64, generator=gen)
        v /= v.norm()
        lam = None
        for _ in range(max_iter):
            for u in vecs:                                    # orthonormalise against the found ones
                v = v - (v @ u) * u
            v /= v.norm()
            Hv = H(v)
            new = float(Hv @ v)
            v = Hv / Hv.norm()
            if lam is not None and abs(new - lam) / (abs(lam) + 1e-6) < tol:
                lam = new
                break
            lam = new
        vals.append(lam)
        vecs.append(v)
    return np.array(vals)


def pyhessian_density(H: TorchHessian, probes: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """PyHessian's ``hessian.density``: Lanczos with full reorthogonalisation per Rademacher probe
    (the probes [probes, P] are given, so that both implementations integrate against the same ones)."""
    nodes, weights = [], []
    for v0 in probes:
        v = torch.from_numpy(np.asarray(v0, np.float64))
        v = v / v.norm()
        V, a, b = [v], [], []
        w = H(v)
        alpha = float(w @ v)
        w = w - alpha * v
        a.append(alpha)
        for _ in range(1, steps):
            beta = float(w.norm())
            b.append(beta)
            v = w / beta
            for u in V:
                v = v - (v @ u) * u
            v /= v.norm()
            V.append(v)
            w = H(v)
            alpha = float(w @ v)
            w = w - alpha * v - beta * V[-2]
            a.append(alpha)
        T = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
        ev, U = np.linalg.eigh(T)
        nodes.append(ev)
        weights.append(U[0] ** 2)
    return np.array(nodes), np.array(weights)


def test_hessian_top_k_against_pyhessian(benchmark, recorder):
    ds = _ds()
    rows = 10_000 if not benchmark.disabled else 500
    X, y = ds.X_train[:rows].astype(np.float64), ds.y_train[:rows]
    th = _trained()[0].astype(np.float64)
    k = 5
    res = {}
    benchmark.pedantic(lambda: res.setdefault("ft", fasttrap.hessian_eigs(MLP, th[None], X, y, k=k, backend="cpu")),
                       rounds=1, iterations=1)
    ft = res["ft"]
    t_ft = benchmark.stats.stats.median if benchmark.stats is not None else float("nan")
    t0 = time.perf_counter()
    H = TorchHessian(MLP, th, X, y)
    ph = pyhessian_top_k(H, MLP.n_params, k)
    t_ph = time.perf_counter() - t0
    # the largest agree; power iteration with tolerance 1e-3 is only that accurate, and deflated
    # power iteration can swap or miss close eigenvalues: compared as sorted sets, to 1%
    assert abs(ph[0] / ft.values[0, 0] - 1) < 1e-2
    rel = np.abs(np.sort(ph)[::-1] - ft.values[0]) / np.abs(ft.values[0])
    if benchmark.disabled:
        return
    recorder.add("cpu_spectra", _module=__name__, what="hessian_top_k", rows=rows, k=k, ft_s=t_ft,
                 ft_lanczos_steps=int(ft.steps[0]), ft_residual_max=float(np.nanmax(ft.residuals)), pyhessian_s=t_ph,
                 pyhessian_hvps=H.hvps, ft_values=ft.values[0].tolist(), pyhessian_values=ph.tolist(),
                 max_rel_diff=float(rel.max()))


def test_hessian_density_against_pyhessian(benchmark, recorder):
    ds = _ds()
    rows = 10_000 if not benchmark.disabled else 500
    probes, steps = (4, 60) if not benchmark.disabled else (2, 10)
    X, y = ds.X_train[:rows].astype(np.float64), ds.y_train[:rows]
    th = _trained()[0].astype(np.float64)
    res = {}
    benchmark.pedantic(lambda: res.setdefault("ft", fasttrap.hessian_density(MLP, th[None], X, y, probes=probes,
                                                                           steps=steps, backend="cpu")),
                       rounds=1, iterations=1)
    ft = res["ft"]
    t_ft = benchmark.stats.stats.median if benchmark.stats is not None else float("nan")
    # the same Rademacher probes as fasttrap's SLQ (seed 0), so the two quadratures must agree
    V0 = np.random.default_rng(0).choice([-1.0, 1.0], size=(probes, MLP.n_params))
    t0 = time.perf_counter()
    H = TorchHessian(MLP, th, X, y)
    nodes, weights = pyhessian_density(H, V0, steps)
    t_ph = time.perf_counter() - t0
    tr_ph = float((weights * nodes).sum() / probes * MLP.n_params)
    tr_ft = float(ft.trace[0])
    np.testing.assert_allclose(ft.weights.sum(axis=2), 1.0, rtol=1e-8)
    assert abs(tr_ph / tr_ft - 1) < 1e-6
    assert abs(nodes.max() / ft.nodes.max() - 1) < 1e-6
    if benchmark.disabled:
        return
    recorder.add("cpu_spectra", _module=__name__, what="hessian_density", rows=rows, probes=probes, steps=steps,
                 ft_s=t_ft, pyhessian_s=t_ph, ft_trace=tr_ft, pyhessian_trace=tr_ph,
                 ft_top_node=float(ft.nodes.max()), pyhessian_top_node=float(nodes.max()))


@pytest.mark.parametrize("K", [1, 8, 32])
def test_model_hvps_per_second(benchmark, recorder, K):
    ds = _ds()
    B = 1000
    X, y = ds.X_train[:B].astype(np.float64), ds.y_train[:B]
    th = MLP.init(K, 0, np.float64)
    V = np.random.default_rng(0).standard_normal(th.shape)
    ref = reference.hvp(MLP, th, X, y, V).numpy()
    out = fasttrap.hvp(MLP, th, X, y, V, backend="cpu")
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-10
    if benchmark.disabled:
        return
    benchmark.pedantic(lambda: fasttrap.hvp(MLP, th, X, y, V, backend="cpu"), rounds=5, iterations=1, warmup_rounds=1)
    t_ft = benchmark.stats.stats.median
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        reference.hvp(MLP, th, X, y, V)
        ts.append(time.perf_counter() - t0)
    t_tw = float(np.median(ts))
    recorder.add("cpu_spectra", _module=__name__, what="hvp", K=K, rows=B, ft_s=t_ft, torch_s=t_tw,
                 ft_model_hvps_s=K / t_ft, torch_model_hvps_s=K / t_tw, threads=fasttrap.get_num_threads())


def format_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if r["what"] == "jacobian_esd":
            ft, dr = r["ft_jacobian_s"] + r["ft_eigh_s"], r["draft_jacobian_s"] + r["draft_eigh_s"]
            out += [f"### Jacobian ESD, reference net, {r['rows']:,} MNIST test images (𝒥ᵀ𝒥 is {r['kd']:,}²), "
                    f"{r['threads']} threads", "",
                    "| | Jacobian (and 𝒥ᵀ𝒥) | eigvalsh | total |", "|---|---:|---:|---:|",
                    f"| fasttrap (compiled J, SYRK) | {r['ft_jacobian_s']:.2f} s | {r['ft_eigh_s']:.2f} s | {ft:.2f} s |",
                    f"| the draft's method (C backward passes, torch) | {r['draft_jacobian_s']:.2f} s | "
                    f"{r['draft_eigh_s']:.2f} s | {dr:.2f} s |",
                    f"| ratio | {r['draft_jacobian_s'] / r['ft_jacobian_s']:.1f}× | | {dr / ft:.2f}× |", "",
                    f"Agreement: top-50 eigenvalues within {r['top50_rel_err']:.1e} of λ_max, trace within "
                    f"{r['trace_rel_err']:.1e}.", ""]
        elif r["what"] == "hessian_top_k":
            out += [f"### Hessian top-{r['k']} eigenvalues, {r['rows']:,} training rows, float64", "",
                    "| | seconds | HVPs |", "|---|---:|---:|",
                    f"| fasttrap.hessian_eigs (Lanczos, compiled HVP) | {r['ft_s']:.2f} | {r['ft_lanczos_steps']} |",
                    f"| PyHessian's algorithm (deflated power iteration, double backward) | {r['pyhessian_s']:.2f} | "
                    f"{r['pyhessian_hvps']} |", f"| ratio | {r['pyhessian_s'] / r['ft_s']:.1f}× | |", "",
                    f"Values: fasttrap {', '.join(f'{v:.4g}' for v in r['ft_values'])} (largest Ritz residual "
                    f"{r['ft_residual_max']:.1e}); PyHessian's algorithm {', '.join(f'{v:.4g}' for v in r['pyhessian_values'])}"
                    f" (largest relative difference {r['max_rel_diff']:.1e}).", ""]
        elif r["what"] == "hessian_density":
            out += [f"### Hessian SLQ density, {r['rows']:,} training rows, {r['probes']} probes × {r['steps']} steps", "",
                    "| | seconds | trace estimate | top node |", "|---|---:|---:|---:|",
                    f"| fasttrap.hessian_density | {r['ft_s']:.2f} | {r['ft_trace']:.4g} | {r['ft_top_node']:.4g} |",
                    f"| PyHessian's algorithm | {r['pyhessian_s']:.2f} | {r['pyhessian_trace']:.4g} | "
                    f"{r['pyhessian_top_node']:.4g} |", f"| ratio | {r['pyhessian_s'] / r['ft_s']:.1f}× | | |", ""]
    hv = [r for r in rows if r["what"] == "hvp"]
    if hv:
        out += [f"### model-HVPs per second, one {hv[0]['rows']:,}-row batch, float64, {hv[0]['threads']} threads", "",
                "| K | fasttrap | torch double backward | ratio |", "|---:|---:|---:|---:|"]
        out += [f"| {r['K']} | {r['ft_model_hvps_s']:.1f} | {r['torch_model_hvps_s']:.1f} | "
                f"{r['ft_model_hvps_s'] / r['torch_model_hvps_s']:.1f}× |" for r in hv]
    return "\n".join(out)
