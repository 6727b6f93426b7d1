"""The stages of the aging analysis: data → one aging run per network → report.

Each network's run is checkpointed atomically and resumes to bit-identical results
(:func:`fasttrap.analysis.aging.run_aging`); a finished network is skipped on resume.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...analysis.aging import default_grids, run_aging
from ...common import store
from ...model import data as datamod
from ...model.mlp import MLP
from .. import config as cfgmod
from ...common.progress import Progress
from ..executor import LocalExecutor, Task, run_analysis
from ..report.aging import write_aging_report
from ..rundir import Run, log
from .data import mlp_of
from .swap import applied_moves, check_applied


def aging_nets(cfg: dict[str, Any], ds: datamod.Dataset) -> dict[str, Any]:
    """The networks of the aging analysis, by name, input/output widths from the data.

    ``model.arch = "mlp"``: one MLP per entry of ``aging.hidden`` ('100-100'); ``"toy"``: one toy model
    (one hidden ReLU layer, sigmoid output, MSE) per entry ('toy-100'); a conv net: that one network
    ('smallnet', 'resnet18'), a TorchModel on the torch path (``aging.hidden`` is not used)."""
    arch = cfg["model.arch"]
    if arch == "mlp":
        return {"-".join(map(str, h)): MLP([ds.n_features, *h, ds.n_classes], cfg["model.activation"],
                                           cfg["model.loss"], cfg["model.output"]) for h in cfgmod.hidden_widths(cfg)}
    if arch == "toy":
        return {f"toy-{h[0]}": MLP([ds.n_features, h[0], ds.n_classes], "relu", "mse", "sigmoid")
                for h in cfgmod.hidden_widths(cfg)}
    return {arch: mlp_of(cfg, ds)}


def stage_aging(run: Run, ds: datamod.Dataset, progress: bool | None, executor: Any = None) -> None:
    """One aging run per network, each checkpointed and resumable to identical results; each network
    is one task of ``executor`` (:mod:`fasttrap.run.executor`; default: this process)."""
    nets = aging_nets(run.cfg, ds)
    for net in nets.values():                  # a move into a layer the net lacks: refused before any run
        check_applied(run.cfg, net, ds.image_shape)
    todo = [Task(f"aging-{name}", aging_net, (name,), run.dir / "aging" / f"net_{name}.npz", 1) for name in nets]
    todo = [t for t in todo if not t.output.exists()]
    if not todo:
        return
    ex = executor or LocalExecutor()
    # in this process each run shows its own progress; on a cluster one bar counts finished networks
    shown = progress if ex.name == "local" else Progress(len(todo), "aging runs", "network", enabled=progress)
    for t, entry in ex.run(run, ds, todo, shown):
        run.stage_done(f"aging_{t.args[0]}", entry["seconds"], params=entry["params"])


def aging_net(run: Run, ds: datamod.Dataset, name: str, bar: Any = None, offset: int = 0) -> dict[str, Any]:
    """One task: the aging run of network ``name`` (checkpointed), written to ``aging/net_<name>.npz``."""
    cfg = run.cfg
    mlp = aging_nets(cfg, ds)[name]
    steps = cfg["aging.steps"]
    t_w, lags = default_grids(steps, cfg["aging.n_tw"], cfg["aging.n_lags"], cfg["aging.tw_min"])
    ck = run.dir / "aging" / f"net_{name}.ckpt.npz"
    if ck.exists():
        log(f"aging {name}: resuming from its checkpoint")
    t0 = time.perf_counter()
    res = run_aging(mlp, ds, run.seeds, lr=cfg["outer.lr"], batch_size=cfg["outer.batch_size"], steps=steps,
                    t_w=t_w, lags=lags, curve_points=cfg["outer.curve_points"],
                    noise_rows=cfg["aging.noise_rows"] or None, eval_rows=cfg["aging.eval_rows"] or None,
                    dtype=np.float32 if cfg["aging.dtype"] == "float32" else np.float64,
                    backend=cfg["run.backend"], progress=bar, checkpoint=ck,
                    checkpoint_every=cfg["aging.checkpoint_every"], moves=applied_moves(cfg))
    store.write_npz(run.dir / "aging" / f"net_{name}.npz", **res.to_arrays())
    ck.unlink(missing_ok=True)
    return {"seconds": round(time.perf_counter() - t0, 3), "params": mlp.n_params}


def execute(run: Run, progress: bool | None = None) -> str:
    """Run (or resume) the aging analysis; returns the short summary."""
    return run_analysis(run, progress, [stage_aging], lambda r, ds: write_aging_report(r, aging_nets(r.cfg, ds)))
