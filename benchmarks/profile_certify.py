"""Where a certificate's time goes: the main job's certify settings on 10,000 rows, one reference-net endpoint.

    python benchmarks/profile_certify.py > benchmarks/results/cpu_certify_profile.txt
    python benchmarks/profile_certify.py separate float64 > benchmarks/results/cpu_certify_profile_before.txt
"""
import sys
import time, cProfile, pstats, numpy as np, fasttrap
from pathlib import Path
from fasttrap.linalg import hessian

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_certify import MLP, reference_endpoints  # noqa: E402  (the benchmark's own start points)
from fasttrap.model import data  # noqa: E402

ds = data.load("mnist")
th = reference_endpoints()[:1]          # the SGD endpoint at outer step 66, as in bench_certify
X, y = ds.X_train[:10000], ds.y_train[:10000]
# the main job's certify.* defaults (bench_certify.py); "separate" and "float64" profile a certificate as
# runs made before certify.krylov and certify.products were (python benchmarks/profile_certify.py separate float64)
krylov, products = (sys.argv[1:3] + ["one", "float32"][len(sys.argv[1:3]):])
kw = dict(lanczos_steps=40, k=8, k_max=16, slq_probes=1, slq_steps=30, minres_iters=40, krylov=krylov,
          products=products, backend="cpu")
t = time.perf_counter(); H = hessian.full_batch_hvp(MLP, th, np.ascontiguousarray(X, np.float64), y, backend="cpu")
V = np.random.default_rng(0).standard_normal(th.shape); H(V); t1 = time.perf_counter(); H(V); t2 = time.perf_counter()
print(f"one float64 HVP on 10,000 rows: {t2 - t1:.3f} s")
pr = cProfile.Profile(); t = time.perf_counter(); pr.enable()
c = fasttrap.certify(MLP, th, X, y, **kw)
pr.disable(); dt = time.perf_counter() - t
print(f"certify (krylov={krylov}, products={products}): {dt:.1f} s, kind {c.kind[0]}, lambda_min {c.lambda_min[0]:.4f}, lambda_max {c.lambda_max[0]:.3f}, index {c.index[0]}, hvps {getattr(c, 'hvps', None)}")
pstats.Stats(pr).sort_stats("cumulative").print_stats(18)
