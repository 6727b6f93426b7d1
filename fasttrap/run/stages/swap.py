"""The stages of the swap study: data → one run of every seed per condition → report.

Does the swap Monte Carlo of glasses speed up SGD? A *condition* is the baseline (plain SGD) or one
protocol (a :class:`fasttrap.Swap` kind) at one intensity (``swap.pairs``) and frequency
(``swap.every``). Every condition trains the same ``swap.seeds`` seeds, with the same initial weights
and the same batch order (the moves draw from their own stream), so each seed is a paired
comparison with its baseline. Along the way the training and test loss and accuracy are evaluated
every ``swap.eval_every`` steps on ``swap.eval_rows`` rows of each set.

Tasks: one per condition, ``swap/cond_<i>.npz`` (curves, steps to every target, what the moves did),
written atomically and skipped on resume; any executor gives the same bytes.

``swap.apply`` also puts one move into the outer SGD of the traps and aging analyses
(:func:`applied_moves`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...analysis.speedup import steps_to_target
from ...common import store
from ...common.progress import Progress
from ...dynamics.outer import DivergenceError, outer_sgd
from ...dynamics.swap import DATA_KINDS, KINDS, MoveLog, Swap, check_moves
from ...model import data as datamod
from ...ops import evaluate
from ..executor import Task, run_analysis, run_tasks
from ..report.swap import write_swap_report
from ..config import ConfigError
from ..rundir import Run, log
from .data import mlp_of


def _move(cfg: dict[str, Any], kind: str, pairs: int, every: int) -> Swap:
    return Swap(kind, layer=None if kind in DATA_KINDS else cfg["swap.layer"], every=every, pairs=pairs,
                images=cfg["swap.images"], temperature=cfg["swap.temperature"] if cfg["swap.metropolis"] else None,
                measure_every=0 if cfg["swap.metropolis"] else cfg["swap.measure_every"])


def protocols(cfg: dict[str, Any], ds: datamod.Dataset) -> list[str]:
    """The protocols of the study, baseline first ('auto': every move the data and the network allow)."""
    if cfg["swap.protocols"] == "auto":
        names = ["baseline"] + [k for k in KINDS if not (k == "channels" and ds.image_shape[0] < 2)]
    else:
        names = [p.strip() for p in str(cfg["swap.protocols"]).split(",") if p.strip()]
        if "baseline" not in names:
            names = ["baseline"] + names
        names = ["baseline"] + [n for n in names if n != "baseline"]
    return names


def conditions(cfg: dict[str, Any], ds: datamod.Dataset) -> list[dict[str, Any]]:
    """Every condition in a fixed order: ``{"label", "kind", "pairs", "every", "move": Swap | None}``.

    Raises:
        ConfigError: a protocol the data or the network cannot take (channel swaps on one-channel data,
            a layer that does not exist), with the reason.
    """
    mlp = mlp_of(cfg)
    out = [{"label": "baseline", "kind": "baseline", "pairs": 0, "every": 0, "move": None}]
    for kind in protocols(cfg, ds)[1:]:
        for every in cfg["swap.every"]:
            for pairs in cfg["swap.pairs"]:
                m = _move(cfg, kind, pairs, every)
                try:
                    check_moves([m], mlp, ds.image_shape)
                except ValueError as exc:
                    raise ConfigError(f"swap.protocols: {exc}") from None
                out.append({"label": m.label(), "kind": kind, "pairs": pairs, "every": every, "move": m})
    return out


def applied_moves(cfg: dict[str, Any]) -> list[Swap] | None:
    """The move ``swap.apply`` puts into the traps and aging analyses' outer SGD (None: none)."""
    if not cfg.get("swap.apply"):
        return None
    return [_move(cfg, cfg["swap.apply"], cfg["swap.pairs"][0], cfg["swap.every"][0])]


def check_applied(cfg: dict[str, Any], mlp: Any, image_shape: tuple[int, int, int] | None) -> None:
    """Refuse, before any work, a ``swap.apply`` move that this network or data cannot take (a layer
    it does not have, channel swaps on one channel …), naming the settings.

    Raises:
        ConfigError: what :func:`fasttrap.dynamics.swap.check_moves` found, with the settings' names.
    """
    moves = applied_moves(cfg)
    if not moves:
        return
    try:
        check_moves(moves, mlp, image_shape)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"swap.apply = {cfg['swap.apply']!r} with swap.layer = {cfg['swap.layer']}: {exc}") from None


def seeds(cfg: dict[str, Any]) -> list[int]:
    return [cfg["outer.seed_offset"] + i for i in range(cfg["swap.seeds"])]


def run_condition(run: Run, ds: datamod.Dataset, i: int, bar: Any = None, offset: int = 0) -> dict[str, Any]:
    """One task: every seed of condition i, with its curves and steps to each target."""
    cfg = run.cfg
    mlp = mlp_of(cfg)
    cond = conditions(cfg, ds)[i]
    S, steps, every = len(seeds(cfg)), cfg["swap.steps"], cfg["swap.eval_every"]
    rows = cfg["swap.eval_rows"] or None
    Xtr, ytr = ds.X_train[:rows], ds.y_train[:rows]
    Xte, yte = ds.X_test[:rows], ds.y_test[:rows]
    ev_steps = np.arange(0, steps + 1, every)
    if ev_steps[-1] != steps:
        ev_steps = np.append(ev_steps, steps)
    curves = {k: np.full((S, ev_steps.size), np.nan) for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
    be = cfg["run.backend"]
    moves = [cond["move"]] if cond["move"] is not None else None
    t0 = time.perf_counter()
    theta, align, t = None, None, 0
    logs = []
    # run from one evaluation to the next, continuing the dynamics exactly (θ as the dynamics hold it,
    # and the paired-swap relabelling): the same path as one call, with the weights aligned only here
    diverged = None
    for j, e in enumerate(ev_steps):
        if e > t:
            try:
                res = outer_sgd(mlp, ds, seeds(cfg), lr=cfg["outer.lr"], batch_size=cfg["outer.batch_size"],
                                steps=int(e), start=t, theta0=theta, alignment0=align, record=[int(e)], curve_points=0,
                                backend=be, progress=False, moves=moves)
            except DivergenceError as exc:
                # a protocol may blow training up: that is a result. The condition stops there (every
                # later evaluation stays NaN: targets not reached count as censored at swap.steps)
                diverged = (exc.step, exc.seeds)
                log(f"swap: {cond['label']} diverged at step {exc.step} (seeds {exc.seeds}); the condition stops there")
                break
            shown = res.thetas[:, 0]
            theta = res.theta_end if moves else shown
            align, t = res.alignment, int(e)
            if res.moves is not None:
                logs.append(res.moves)
        else:
            shown = theta = np.stack([mlp.init(1, s)[0] for s in seeds(cfg)])
        for name, X, y in (("train", Xtr, ytr), ("test", Xte, yte)):
            L, A, _ = evaluate(mlp, shown, X, y, backend=be)
            curves[f"{name}_loss"][:, j], curves[f"{name}_acc"][:, j] = L, A
        if isinstance(bar, Progress):
            bar.update_to(offset + t)
    out: dict[str, Any] = {"eval_steps": ev_steps, **curves}
    if diverged is not None:
        out["diverged_step"] = np.array(diverged[0])
        out["diverged_seeds"] = np.asarray(diverged[1])
    for a in cfg["swap.target_acc"]:
        out[f"to_acc_{a:g}"] = steps_to_target(ev_steps, curves["train_acc"], a, "acc")
    for L in cfg["swap.target_loss"]:
        out[f"to_loss_{L:g}"] = steps_to_target(ev_steps, curves["train_loss"], L, "loss")
    if logs:
        total = MoveLog(sum(lg.proposed for lg in logs), sum(lg.accepted for lg in logs),
                        [sum((lg.delta[k] for lg in logs), []) for k in range(len(logs[0].delta))])
        out |= total.to_arrays()
    store.write_npz(run.dir / "swap" / f"cond_{i:03d}.npz", **out)
    return {"seconds": round(time.perf_counter() - t0, 3)}


def stage_conditions(run: Run, ds: datamod.Dataset, progress: bool | None, executor: Any) -> None:
    conds = conditions(run.cfg, ds)
    todo = [Task(f"swap-{i:03d}", run_condition, (i,), run.dir / "swap" / f"cond_{i:03d}.npz", run.cfg["swap.steps"])
            for i in range(len(conds))]
    todo = [t for t in todo if not t.output.exists()]
    if not todo:
        return
    t0 = time.perf_counter()
    run_tasks(executor, run, ds, todo, f"swap study ({len(conds)} conditions × {run.cfg['swap.seeds']} seeds)", "step",
              progress)
    run.stage_done("swap_runs", time.perf_counter() - t0, conditions=len(todo))


def check_conditions(run: Run, ds: datamod.Dataset, progress: bool | None, executor: Any) -> None:
    """The first stage: refuse impossible protocols before any run, and say what will run."""
    conds = conditions(run.cfg, ds)
    log(f"swap study: {len(conds)} conditions: {', '.join(c['label'] for c in conds)}")


def execute(run: Run, progress: bool | None = None) -> str:
    """Run (or resume) the swap study; returns the short summary."""
    return run_analysis(run, progress, [check_conditions, stage_conditions],
                        lambda r, ds: write_swap_report(r, conditions(r.cfg, ds)))
