"""The stages of the aging analysis: data → one aging run per network → report.

Each network's run is checkpointed atomically and resumes to bit-identical results
(:func:`fasttrap.aging.run_aging`); a finished network is skipped on resume.
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
from ..report.aging import write_aging_report
from ..rundir import Run, log
from .data import stage_data


def aging_nets(cfg: dict[str, Any], ds: datamod.Dataset) -> dict[str, MLP]:
    """The networks of the aging analysis, by name ('100-100'), input/output widths from the data."""
    return {"-".join(map(str, h)): MLP([ds.n_features, *h, ds.n_classes], cfg["model.activation"], cfg["model.loss"],
                                       cfg["model.output"]) for h in cfgmod.hidden_widths(cfg)}


def stage_aging(run: Run, ds: datamod.Dataset, progress: bool | None) -> None:
    """One aging run per network, each checkpointed and resumable to identical results."""
    cfg = run.cfg
    steps = cfg["aging.steps"]
    t_w, lags = default_grids(steps, cfg["aging.n_tw"], cfg["aging.n_lags"], cfg["aging.tw_min"])
    for name, mlp in aging_nets(cfg, ds).items():
        out = run.dir / "aging" / f"net_{name}.npz"
        if out.exists():
            continue
        ck = run.dir / "aging" / f"net_{name}.ckpt.npz"
        if ck.exists():
            log(f"aging {name}: resuming from its checkpoint")
        t0 = time.perf_counter()
        res = run_aging(mlp, ds, run.seeds, lr=cfg["outer.lr"], batch_size=cfg["outer.batch_size"], steps=steps,
                        t_w=t_w, lags=lags, curve_points=cfg["outer.curve_points"],
                        noise_rows=cfg["aging.noise_rows"] or None, eval_rows=cfg["aging.eval_rows"] or None,
                        dtype=np.float32 if cfg["aging.dtype"] == "float32" else np.float64,
                        backend=cfg["run.backend"], progress=progress, checkpoint=ck,
                        checkpoint_every=cfg["aging.checkpoint_every"])
        store.write_npz(out, **res.to_arrays())
        ck.unlink(missing_ok=True)
        run.stage_done(f"aging_{name}", time.perf_counter() - t0, params=mlp.n_params)


def execute(run: Run, progress: bool | None = None) -> str:
    """Run (or resume) the aging analysis; returns the short summary."""
    cfg = run.cfg
    t_all = time.perf_counter()
    ds = stage_data(run)
    log(f"data: {ds!r}")
    stage_aging(run, ds, progress)
    t0 = time.perf_counter()
    summary = write_aging_report(run, aging_nets(cfg, ds))
    run.stage_done("report", time.perf_counter() - t0)
    run.finished(time.perf_counter() - t_all)
    return summary
