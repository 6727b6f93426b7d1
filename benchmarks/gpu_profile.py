"""Where the GPU time of an inner-descent step goes: kernel totals from CUPTI (torch.profiler).

    python benchmarks/gpu_profile.py [--models 900] [--steps 40]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from torch.profiler import ProfilerActivity, profile

import fasttrap
from fasttrap.ops import cuda as ftcuda
from fasttrap.model import data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=900)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--tf32", action="store_true")
    a = ap.parse_args()
    ftcuda.set_tf32(a.tf32)
    ftcuda.set_graphs(False)          # kernels attributed one by one
    ds = data.load("mnist")
    mlp = fasttrap.MLP((784, 100, 100, 10))
    th0 = mlp.init(a.models, 0)
    kw = dict(steps=a.steps, solver=fasttrap.SGD(lr=0.01), backend="cuda", progress=False, evaluate=False)
    fasttrap.inner_descent(mlp, th0, ds, **kw)                    # warm-up
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fasttrap.inner_descent(mlp, th0, ds, **kw)
    tot = defaultdict(float)
    cnt = defaultdict(int)
    for e in prof.events():
        if e.device_type.name == "CUDA":
            name = e.name
            key = ("gemm:" + name[:60]) if ("gemm" in name.lower() or "sm90" in name or "cutlass" in name.lower()) else name[:80]
            tot[key] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
            cnt[key] += 1
    total = sum(tot.values())
    print(f"{a.models} models, {a.steps} steps: GPU busy {total / 1e3:.1f} ms, {total / 1e3 / a.steps:.3f} ms/step")
    for k, v in sorted(tot.items(), key=lambda kv: -kv[1])[:28]:
        print(f"{100 * v / total:5.1f}%  {v / 1e3 / a.steps:7.3f} ms/step  x{cnt[k] // a.steps:<3d} {k}")


if __name__ == "__main__":
    main()
