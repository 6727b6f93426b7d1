"""Bytes of the inner descent (theta, G_trace) for several configs, both batch orders."""
import hashlib, numpy as np, fasttrap
from fasttrap.model import data
ds = data.load("mnist")
def h(a): return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
for sizes, act, loss, K, dt in [((784, 100, 100, 10), "relu", "nll", 16, np.float32), ((784, 50, 10), "tanh", "mse", 7, np.float32),
                               ((784, 100, 100, 10), "relu", "nll", 5, np.float64), ((784, 200, 10), "relu", "nll", 66, np.float32),
                               ((784, 100, 100, 10), "relu", "nll", 130, np.float32)]:
    mlp = fasttrap.MLP(sizes, activation=act, loss=loss)
    th0 = mlp.init(K, seed=1, dtype=dt)
    for mode in ["shared", "independent"]:
        for bs in [128, 100]:
            r = fasttrap.inner_descent(mlp, th0, ds, steps=30, solver=fasttrap.SGD(lr=0.01, batch_size=bs,
                                       batches=mode), backend="cpu", progress=False, evaluate=False, record_every=1)
            print(sizes, act, loss, K, dt.__name__, mode, bs, h(r.theta), h(r.G_trace), flush=True)
