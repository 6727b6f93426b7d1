"""Time the full reference analysis on one GPU (the inner stage dominates).

    python benchmarks/gpu_reference_analysis.py [--epochs 100] [--tf32] [--out DIR]

9 seeds of outer SGD (784-100-100-10, lr 0.1, batch 128) give 100 outer points each: 900 start
points, run as ONE batch of 900 models through 100 inner epochs of 469 steps (lr 0.1 for outer
steps 1-50, 0.01 after), then every endpoint is evaluated on the full training set. Prints the
wall time of each stage and writes a JSON record.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import fasttrap
from fasttrap.ops import cuda as ftcuda
from fasttrap.model import data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=100)
    ap.add_argument("--seeds", type=int, default=9)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    ftcuda.set_tf32(a.tf32)
    mlp = fasttrap.MLP((784, 100, 100, 10))
    t_all = time.perf_counter()
    ds = data.load("mnist")
    t0 = time.perf_counter()
    outer = fasttrap.outer_sgd(mlp, ds, seeds=list(range(a.seeds)), lr=0.1, batch_size=128, steps=150,
                               record=range(1, a.points + 1), curve_points=12, backend="cuda", progress=False)
    t_outer = time.perf_counter() - t0
    theta0 = outer.thetas.reshape(-1, mlp.n_params)              # [seeds·points, P]
    steps_axis = np.tile(outer.steps, a.seeds)
    lr = np.where(steps_axis <= 50, 0.1, 0.01)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    inner = fasttrap.inner_descent(mlp, theta0, ds, epochs=a.epochs, solver=fasttrap.SGD(lr=lr, batch_size=128),
                                   seed=0, backend="cuda", progress=None, evaluate=False)
    t_inner = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss, acc, g = fasttrap.evaluate(mlp, inner.theta[np.isfinite(inner.theta).all(1)], ds.X_train, ds.y_train,
                                     True, block=4096, backend="cuda")
    t_eval = time.perf_counter() - t0
    total = time.perf_counter() - t_all
    steps = inner.model_steps
    rec = {
        "device": torch.cuda.get_device_name(), "tf32": a.tf32, "models": int(theta0.shape[0]),
        "inner_epochs": a.epochs, "inner_steps_per_model": int(inner.steps_done.max()),
        "model_steps": int(steps), "model_steps_per_s": steps / t_inner,
        "seconds": {"outer": t_outer, "inner": t_inner, "evaluate": t_eval, "total": total},
        "status": inner.counts(),
        "projected_full_seconds": t_inner * 100 / a.epochs + t_outer + t_eval,
    }
    print(json.dumps(rec, indent=1))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"gpu_reference_analysis{'_tf32' if a.tf32 else ''}.json").write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
