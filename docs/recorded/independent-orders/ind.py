import sys, time, numpy as np, fasttrap
from fasttrap.model import data
MLP = fasttrap.MLP((784, 100, 100, 10))
ds = data.load("mnist")
from fasttrap.ops import backend as _b
import os
_b.set_chunk(int(os.environ.get("CH", "2")))
K = int(sys.argv[1]) if len(sys.argv) > 1 else 100
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
res = fasttrap.outer_sgd(MLP, ds, seeds=[0], steps=K, record=list(range(1, K + 1)), curve_points=2, progress=False)
th0 = res.thetas[0]
kw = dict(progress=False, evaluate=False, record_every=1)
out = {}
for mode in ["shared", "independent", "shared", "independent"]:
    t = time.perf_counter()
    r = fasttrap.inner_descent(MLP, th0, ds, steps=steps, backend="cpu", solver=fasttrap.SGD(lr=0.01, batch_size=128, batches=mode), **kw)
    dt = time.perf_counter() - t
    out[mode] = r
    print(mode, K, steps, f"{r.model_steps/dt:,.0f} model-steps/s", flush=True)
import hashlib
for m, r in out.items():
    print(m, hashlib.sha256(np.ascontiguousarray(r.theta).tobytes()).hexdigest()[:16], hashlib.sha256(np.ascontiguousarray(r.G_trace).tobytes()).hexdigest()[:16])
