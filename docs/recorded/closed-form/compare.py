"""The closed-form check of issue 27, as a table: Newton-MR from 24 starts on Baldi-Hornik nets, and
what the error-bound rule and the old eps rule call the converged endpoints.

    python docs/recorded/closed-form/compare.py > docs/recorded/closed-form/compare.txt
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "analysis"))
from test_closed_form import baldi_hornik  # noqa: E402  (the test's own case builder)

import fasttrap  # noqa: E402
from fasttrap.dynamics.newton import newton_mr  # noqa: E402
from fasttrap.linalg.hessian import full_batch_gradient  # noqa: E402

print("| net | data seed | reach ‖∇L‖² < 1e-10 | reach 1e-20 | at an analytic value (1e-7) | global | "
      "new rule: degenerate min / saddle | old rule (eps 1e-4): minimum / saddle | wrong under old rule | reach 1e-10 without converging: farthest from an analytic value | seconds |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for shape, seed in [((9, 3, 6), 0), ((9, 3, 6), 1), ((8, 2, 5), 3), ((10, 4, 6), 4)]:
    t0 = time.perf_counter()
    mlp, X, y, vals, glob = baldi_hornik(*shape, seed=seed)
    th0 = mlp.init(24, seed=5, dtype=np.float64) * 3.0
    out = newton_mr(mlp, th0, X, y, steps=300, G_tol=0.5e-22, growth=0.0, geodesic=True)
    loss, g = full_batch_gradient(mlp, out["theta"], X, y)
    gsq = (g * g).sum(1)
    tight = gsq < 1e-20
    loose = (gsq < 1e-10) & ~tight
    far = max((np.abs(vals - L).min() for L in loss[loose]), default=float("nan"))
    at = np.array([np.abs(vals - L).min() < 1e-7 for L in loss[tight]])
    kw = dict(lanczos_steps=mlp.n_params, k_max=mlp.n_params)
    new = fasttrap.certify(mlp, out["theta"][tight], X, y, **kw)
    old = fasttrap.certify(mlp, out["theta"][tight], X, y, eps=1e-4, **kw)
    is_glob = np.abs(new.loss - glob) < 1e-7
    wrong_old = int(((old.kind == "minimum") != is_glob).sum())
    print(f"| {'-'.join(map(str, shape))} linear | {seed} | {(gsq < 1e-10).sum()}/24 | {tight.sum()} | {at.sum()}/{tight.sum()} | "
          f"{is_glob.sum()} | {(new.kind == 'degenerate_minimum').sum()} / {(new.kind == 'saddle').sum()} | "
          f"{(old.kind == 'minimum').sum()} / {(old.kind == 'saddle').sum()} | {wrong_old} | {loose.sum()}: {far:.1e} | {time.perf_counter() - t0:.0f} |")
