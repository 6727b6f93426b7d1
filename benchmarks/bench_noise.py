"""Per-sample gradient norms on the CPU: the compiled kernel against torch.func vmap(grad).

    python -m pytest benchmarks/bench_noise.py

The reference net 784-100-100-10 (relu, nll) on the full MNIST training set (60,000 rows), float32,
one model (as along one outer path) and 4 models. Implementations:

- ``fasttrap-cpu``: :func:`fasttrap.per_sample_grad_sq` with ∇L from the same pass, never forming a
  per-sample gradient (‖e_α a_αᵀ‖² = ‖e_α‖²‖a_α‖²);
- ``vmap-grad``: the twin, ``torch.func.vmap(torch.func.grad(ℓ))`` over each layer's (W, b) in
  blocks of 1,024 rows, which forms every per-sample gradient and squares it (sums in float64);
- ``vmap-tutorial``: the recipe of torch.func's per-sample-gradient tutorial verbatim:
  ``vmap(grad(ℓ))`` through ``functional_call`` on the ``torch.nn.Sequential`` of the same net,
  float32 squares; the fastest torch variant tried;
- ``plain-grad``: :func:`fasttrap.evaluate` with ``want_grad=True``, one forward and backward pass
  over the data giving only ∇L: the floor that shows what the norms cost on top of a gradient.

Agreement with the float64 twin is checked before timing.
"""

from __future__ import annotations

import numpy as np
import pytest

import fasttrap
from fasttrap import reference
from fasttrap.model import data

MLP = fasttrap.MLP((784, 100, 100, 10))
_ds: dict = {}


def _data():
    if "d" not in _ds:
        _ds["d"] = data.load("mnist")
    return _ds["d"]


def _theta(K):
    # points along a real SGD path, so the per-sample gradients have their real spread
    r = fasttrap.outer_sgd(MLP, _data(), seeds=list(range(K)), steps=50, record=[50], curve_points=0, progress=False)
    return np.ascontiguousarray(r.thetas[:, 0])


def _tutorial(row):
    """torch.func's per-sample-gradient recipe on the nn.Sequential of θ: squared norms [N]."""
    import torch
    from torch.func import functional_call, grad, vmap

    net = MLP.to_torch(row)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p, x, t):
        return torch.nn.functional.cross_entropy(functional_call(net, p, (x[None],)), t[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))

    def run(X, y, block=1024):
        out = []
        for r0 in range(0, len(y), block):
            g = per_sample(params, torch.from_numpy(X[r0:r0 + block]), torch.from_numpy(y[r0:r0 + block]))
            out.append(sum((v.flatten(1) ** 2).sum(1) for v in g.values()))
        return torch.cat(out).numpy()

    return run


@pytest.mark.parametrize("K", [1, 4])
@pytest.mark.parametrize("impl", ["fasttrap-cpu", "vmap-grad", "vmap-tutorial", "plain-grad"])
def test_per_sample_norms(benchmark, recorder, impl, K):
    ds = _data()
    th = _theta(K)
    X, y = ds.X_train, ds.y_train
    # agreement on 2,000 rows against the float64 twin before timing
    sq, _ = fasttrap.per_sample_grad_sq(MLP, th, X[:2000], y[:2000], backend="cpu")
    ref, _ = reference.per_sample_grad_sq(MLP, th.astype(np.float64), X[:2000].astype(np.float64), y[:2000])
    ref = ref.numpy()
    rel = float(np.linalg.norm(sq - ref) / np.linalg.norm(ref))
    assert rel < 1e-4, rel
    if impl.startswith("vmap") and K > 1:
        pytest.skip("the vmap variants are timed at K = 1 only (they loop over models)")
    if impl == "vmap-tutorial":
        tut = _tutorial(th[0])
        s_t = tut(X[:2000], y[:2000])
        assert float(np.linalg.norm(s_t - ref[0]) / np.linalg.norm(ref[0])) < 1e-4

    def go():
        if impl == "fasttrap-cpu":
            fasttrap.per_sample_grad_sq(MLP, th, X, y, True, backend="cpu")
        elif impl == "vmap-grad":
            reference.per_sample_grad_sq(MLP, th, X, y, True, 1024)
        elif impl == "vmap-tutorial":
            tut(X, y)
        else:
            fasttrap.evaluate(MLP, th, X, y, True, backend="cpu")

    benchmark.pedantic(go, rounds=1 if impl.startswith("vmap") else 3, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: agreement checked, nothing timed
        return
    med = benchmark.stats.stats.median
    recorder.add("cpu_noise", _module=__name__, impl=impl, K=K, N=len(y), seconds=med,
                 samples_per_s=K * len(y) / med, threads=fasttrap.get_num_threads())


def format_table(rows):
    by = {(r["impl"], r["K"]): r for r in rows}
    out = ["| K | implementation | seconds (60,000 rows) | samples/s | fasttrap-cpu against it |", "|---:|---|---:|---:|---:|"]
    for (impl, K), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ours = by.get(("fasttrap-cpu", K))
        rel = ""
        if ours and impl != "fasttrap-cpu":
            x = r["seconds"] / ours["seconds"]
            rel = f"{x:.1f}x faster" if x >= 1 else f"{1 / x:.2f}x slower"
        out.append(f"| {K} | {impl} | {r['seconds']:.3f} | {r['samples_per_s']:,.0f} | {rel} |")
    return "\n".join(out)
