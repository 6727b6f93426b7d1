"""Where a certificate's time goes: the main job's certify settings on 10,000 rows, one reference-net endpoint."""
import time, cProfile, pstats, numpy as np, fasttrap
from fasttrap.model import data
from fasttrap.linalg import hessian
MLP = fasttrap.MLP((784, 100, 100, 10))
ds = data.load("mnist")
out = fasttrap.outer_sgd(MLP, ds, seeds=[0], steps=66, record=[66], curve_points=2, progress=False)
inn = fasttrap.inner_descent(MLP, out.thetas[0], ds, epochs=5, lr=0.01, progress=False, evaluate=False)
th = inn.theta.astype(np.float64)
X, y = ds.X_train[:10000], ds.y_train[:10000]
kw = dict(lanczos_steps=40, slq_probes=1, slq_steps=30, minres_iters=40, backend="cpu")   # bench_certify.py
t = time.perf_counter(); H = hessian.full_batch_hvp(MLP, th, np.ascontiguousarray(X, np.float64), y, backend="cpu")
V = np.random.default_rng(0).standard_normal(th.shape); H(V); t1 = time.perf_counter(); H(V); t2 = time.perf_counter()
print(f"one float64 HVP on 10,000 rows: {t2 - t1:.3f} s")
pr = cProfile.Profile(); t = time.perf_counter(); pr.enable()
c = fasttrap.certify(MLP, th, X, y, **kw)
pr.disable(); dt = time.perf_counter() - t
print(f"certify: {dt:.1f} s, kind {c.kind[0]}, lambda_min {c.lambda_min[0]:.4f}, lambda_max {c.lambda_max[0]:.3f}, index {c.index[0]}, hvps {getattr(c, 'hvps', None)}")
pstats.Stats(pr).sort_stats("cumulative").print_stats(18)
