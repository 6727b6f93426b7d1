"""The stages of the trapping-time analysis: data → outer → inner → indicators → traps → stats → report.

Each stage reads the previous stage's stored output from the run directory (through the readers of
:mod:`fasttrap.run.rundir`) and writes its own atomically, so any stage can be re-run alone and a
killed run resumes where it stopped. The inner stage, the expensive one, saves in blocks of start
points; a resumed run skips the blocks that are on disk. Every random stream derives from (seed,
stage, index) — the outer batches from each seed, the inner batches from ``run.seed`` and the start
point's global index, the bootstrap from ``run.seed`` — so a resumed run computes exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ... import ops
from ...analysis import powerlaw, sensitivity, stability, traps
from ...analysis.identity import identify, within_trap_scale
from ...analysis.ledges import series_from_arrays, series_to_arrays, traps_from_endpoints, traps_from_series
from ...analysis.certify import certify, segment_kinds
from ...common import store
from ...common.progress import Progress
from ...dynamics import stepsize
from ...dynamics import solvers
from ...dynamics.inner import inner_descent
from ...linalg.hessian import lambda_max
from ...linalg.spectra import hessian_density, hessian_eigs
from ...dynamics.outer import outer_sgd
from ...model import data as datamod
from .. import config as cfgmod, rundir
from ..executor import LocalExecutor, Task, make_executor
from ..report.traps import write_report
from ..rundir import Run, log
from .data import mlp_of, stage_data
from .swap import applied_moves, check_applied


def stage_outer(run: Run, ds: datamod.Dataset, progress: bool | None) -> None:
    cfg = run.cfg
    missing = [s for s in run.seeds if not (run.dir / "outer" / f"seed_{s}.npz").exists()]
    if not missing:
        return
    t0 = time.perf_counter()
    steps = cfgmod.window_steps(cfg)
    dtype = np.float32 if cfg["inner.dtype"] == "float32" else np.float64
    # swap.apply: a move inside the outer SGD; the recorded θ_t are permutation-aligned, so paired swaps
    # (symmetries) never look like motion to the trap analysis
    res = outer_sgd(mlp_of(cfg, ds), ds, seeds=missing, lr=cfg["outer.lr"], batch_size=cfg["outer.batch_size"],
                    steps=cfg["outer.steps"], record=steps, curve_points=cfg["outer.curve_points"], dtype=dtype,
                    backend=cfg["run.backend"], progress=progress, moves=applied_moves(cfg))
    for i, s in enumerate(missing):
        mv = ({"move_proposed": res.moves.proposed[:, i], "move_accepted": res.moves.accepted[:, i]}
              if res.moves is not None else {})
        store.write_npz(run.dir / "outer" / f"seed_{s}.npz", thetas=res.thetas[i], steps=res.steps,
                        curve_steps=res.curve_steps, train_loss=res.train_loss[i], train_acc=res.train_acc[i],
                        test_loss=res.test_loss[i], test_acc=res.test_acc[i], **mv)
    run.stage_done("outer", time.perf_counter() - t0)


def stage_inner(run: Run, ds: datamod.Dataset, progress: bool | None, variant: str = "main",
                executor: Any = None) -> None:
    """The inner descents from every start point of ``variant``, in blocks saved as they finish.

    ``variant`` "main" is the run, with its endpoints also kept at the fractions ``inner.checkpoints``
    of the budget; "seed" reruns every ``sensitivity.every``-th start point of the first
    ``sensitivity.seeds`` seeds with batch seed ``run.seed + 1`` (the noise of every endpoint signal
    at the same budget); "half" (runs made before the checkpoints) every start point at half the
    epochs. The reruns take each start point's λ_max and lr from the main run, so only the chosen
    setting changes. Each block is one task of ``executor`` (:mod:`fasttrap.run.executor`; default:
    this process).
    """
    cfg = run.cfg
    n = rundir.n_points(run, variant)
    out_dir = rundir.inner_dir(run, variant)
    blocks = rundir.blocks(n, rundir.block_size(cfg, n))
    n_steps = _inner_steps(cfg, ds, variant)
    tasks = [Task(f"inner-{variant}-{b:04d}", inner_block, (variant, b, lo, hi), out_dir / f"block_{b:04d}.npz",
                  (hi - lo) * n_steps) for b, (lo, hi) in enumerate(blocks)]
    todo = [t for t in tasks if not t.output.exists()]
    if not todo:
        return
    stage = "inner" if variant == "main" else f"inner_{variant}"
    if len(todo) < len(tasks):
        log(f"{stage}: resuming, {len(tasks) - len(todo)} of {len(blocks)} blocks already on disk")
    what = {"main": "inner descent", "seed": f"rerun: batch seed +1, every {cfg['sensitivity.every']}th point",
            "half": "rerun: half budget"}[variant]
    bar = Progress(sum(t.work for t in todo), what, "model-step", enabled=progress)
    t0 = time.perf_counter()
    ex = executor or LocalExecutor()
    try:
        for t, entry in ex.run(run, ds, todo, bar):
            blk = run.manifest["stages"].setdefault(stage, {}).setdefault("blocks", {})
            blk[str(t.args[1])] = entry
            run.save_manifest()
    finally:
        bar.close()
    secs = time.perf_counter() - t0
    blk = run.manifest["stages"][stage]["blocks"]
    ms = sum(v["model_steps"] for v in blk.values())
    # Throughput counts the model-steps that ran: a model that stopped early (converged, diverged)
    # executes no more steps, so the scheduled count (models × n_steps) would overstate the rate.
    executed_now = sum(blk[str(t.args[1])]["model_steps"] for t in todo)
    run.stage_done(stage, secs, n_steps=n_steps, models=n, n_blocks=len(blocks), batch_seed=_batch_seed(cfg, variant),
                   model_steps=ms, model_steps_scheduled=n * n_steps, executor=ex.name,
                   model_steps_per_s=round(executed_now / max(secs, 1e-9), 1))


def _inner_steps(cfg: dict[str, Any], ds: datamod.Dataset, variant: str) -> int:
    spe = solvers.from_settings(cfg, lr=cfg["inner.lr"][0]).steps_per_epoch(len(ds.y_train))
    epochs = cfg["inner.epochs"] / 2 if variant == "half" else cfg["inner.epochs"]
    return int(round(epochs * spe))


def _batch_seed(cfg: dict[str, Any], variant: str) -> int:
    return cfg["run.seed"] + 1 if variant == "seed" else cfg["run.seed"]


def inner_block(run: Run, ds: datamod.Dataset, variant: str, b: int, lo: int, hi: int, bar: Any = None,
                offset: int = 0) -> dict[str, Any]:
    """One task: the inner descents of positions [lo, hi) of ``variant``'s points, written to its block file.

    Everything it needs comes from the run directory and the settings, and every random stream from
    (batch seed, position), so it computes the same bytes wherever and whenever it runs. The main
    run's block also keeps its checkpoints (:func:`_checkpoint_arrays`); a rerun's block, the same
    fractions' losses, G and distances to the main run's checkpoints.

    Returns:
        the manifest's record of the block (models, seconds, model-steps, statuses).
    """
    cfg = run.cfg
    tb = time.perf_counter()
    pts = rundir.variant_points(run, variant)[lo:hi]
    theta0, steps, _ = rundir.start_points(run)
    theta0, steps = theta0[pts], steps[pts]
    n_steps = _inner_steps(cfg, ds, variant)
    rec = cfg["inner.record_every"] or max(1, _inner_steps(cfg, ds, "main") // 200)
    if variant == "main":
        # λ_max(H) at every start point: it sets lr under inner.lr_rule = "auto", and flags a fixed lr
        # beyond the linear-stability limit 2/λ_max² of descent on G otherwise
        rows = cfg["inner.lr_rows"]
        lam = lambda_max(mlp_of(cfg, ds), theta0, ds.X_train[:rows], ds.y_train[:rows], backend=cfg["run.backend"])
        lrs = cfg["inner.lr"]
        lr_b = (stepsize.auto_lr(lam, cfg["inner.lr_c"]) if cfg["inner.lr_rule"] == "auto"
                else np.where(steps <= cfg["inner.regime_split"], lrs[0], lrs[-1]))
    else:
        main = rundir.inner_fields_at(run, ("lambda_max", "lr"), pts)
        lam, lr_b = main["lambda_max"], main["lr"]
    ck = cfg["inner.checkpoints"] if variant != "half" else []
    res = inner_descent(mlp_of(cfg, ds), theta0, ds, solver=solvers.from_settings(cfg, lr=lr_b),
                        steps=n_steps, seed=_batch_seed(cfg, variant), record_every=rec, G_tol=cfg["inner.G_tol"],
                        growth=cfg["inner.growth"],                        eval_rows=cfg["inner.eval_rows"] or None, index_offset=lo, backend=cfg["run.backend"],
                        progress=bar if bar is not None else False, progress_offset=offset, checkpoints=ck)
    status, fl = _honest_status(cfg, ds, theta0, res)
    extra = _checkpoint_arrays(run, variant, pts, res) if len(res.checkpoint_steps) else {}
    store.write_npz(rundir.inner_dir(run, variant) / f"block_{b:04d}.npz", theta=res.theta,
                    status=status.astype("U18"), G_peak_ratio=fl["G_peak_ratio"], norm_ratio=fl["norm_ratio"],
                    lambda_max=lam, lr=lr_b, lr_unstable=stepsize.unstable(lr_b, lam),
                    steps_done=res.steps_done, G_start=res.G_start, G_last=res.G_last,
                    train_loss=res.train_loss, train_G=res.train_G, train_acc=res.train_acc,
                    G_trace=res.G_trace, trace_steps=res.trace_steps, index=pts, **extra)
    return {"models": hi - lo, "seconds": round(time.perf_counter() - tb, 3), "model_steps": int(res.model_steps),
            "status": {str(k): int(v) for k, v in zip(*np.unique(status, return_counts=True))}}


def _checkpoint_arrays(run: Run, variant: str, pts: np.ndarray, res: Any) -> dict[str, np.ndarray]:
    """What the analysis needs of a block's checkpoints, not every θ.

    All blocks: ``ckpt_steps`` [J], ``ckpt_loss``, ``ckpt_G`` [J, n]. The main run's also:
    ``ckpt_next`` [J, n−1] (distances between consecutive points of the block), ``ckpt_edge``
    [J, 2, P] (θ of its first and last point, for the distances across blocks), and ``ckpt_theta``
    [J, R, P] at ``ckpt_rows`` [R], the block's points the reruns start from. A rerun's block:
    ``ckpt_dist_main`` [J, n], each rerun checkpoint's distance to the main run's.
    """
    th = np.asarray(res.checkpoint_theta)                       # [J, n, P]
    n_steps = int(res.settings["steps"])
    # the fractions actually reached (a short descent rounds several fractions onto one step)
    out = {"ckpt_steps": res.checkpoint_steps, "ckpt_fraction": res.checkpoint_steps / max(n_steps, 1),
           "ckpt_loss": res.checkpoint_loss, "ckpt_G": res.checkpoint_G}
    if variant == "main":
        d = th[:, 1:].astype(np.float64) - th[:, :-1].astype(np.float64)
        out["ckpt_next"] = np.sqrt((d * d).sum(-1)) if th.shape[1] > 1 else np.zeros((th.shape[0], 0))
        out["ckpt_edge"] = th[:, [0, -1]]
        rows = np.flatnonzero(np.isin(pts, rundir.rerun_points(run))) if run.cfg["sensitivity.enabled"] else \
            np.zeros(0, np.int64)
        out["ckpt_rows"] = pts[rows]
        out["ckpt_theta"] = th[:, rows]
    else:
        main = _main_checkpoints_at(run, pts)                   # [J, n, P]
        d = th.astype(np.float64) - main.astype(np.float64)
        out["ckpt_dist_main"] = np.sqrt((d * d).sum(-1))
    return out


def _main_checkpoints_at(run: Run, pts: np.ndarray) -> np.ndarray:
    """The main run's checkpoint θ [J, len(pts), P] at global start points ``pts`` (rerun points)."""
    n = rundir.n_points(run)
    got: dict[int, np.ndarray] = {}
    for b, (a, e) in enumerate(rundir.blocks(n, rundir.block_size(run.cfg, n))):
        if not np.any((pts >= a) & (pts < e)):
            continue
        with store.open_npz(rundir.inner_dir(run) / f"block_{b:04d}.npz") as z:
            rows, th = z["ckpt_rows"], z["ckpt_theta"]
            for i, g in enumerate(rows):
                got[int(g)] = th[:, i]
    missing = [int(p) for p in pts if int(p) not in got]
    if missing:
        raise rundir.RunError(f"inner: the main run's checkpoints lack start points {missing[:5]} "
                              "(its blocks were made with other settings?)")
    return np.stack([got[int(p)] for p in pts], axis=1)


def stage_indicators(run: Run, variant: str = "main") -> None:
    if variant != "main" and run.cfg["sensitivity.every"] > 1:
        return                   # reruns at every k-th point are noise samples, not a window to segment
    d = rundir.indicators_dir(run, variant)
    seeds_v = rundir.variant_seeds(run, variant)
    if all((d / f"seed_{s}.npz").exists() for s in seeds_v):
        return
    t0 = time.perf_counter()
    theta0, steps, seeds = rundir.start_points(run)
    inn = rundir.inner_results(run, variant)
    n = len(inn["status"])
    theta0, steps, seeds = theta0[:n], steps[:n], seeds[:n]
    for s in seeds_v:
        m = seeds == s
        ind = traps.indicators(theta0[m], inn["theta"][m], inn["train_loss"][m], inn["train_G"][m],
                               acc_end=inn["train_acc"][m], status=inn["status"][m], steps=steps[m],
                               G_start=inn["G_start"][m])
        D = traps.pairwise_distances(inn["theta"][m])
        store.write_npz(d / f"seed_{s}.npz", pairwise=D, **ind.to_dict())
    run.stage_done("indicators" if variant == "main" else f"indicators_{variant}", time.perf_counter() - t0)


def _honest_status(cfg: dict[str, Any], ds: datamod.Dataset, theta0: np.ndarray, res: Any
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The runs' statuses, with ``blowup`` for a run that left its basin and came back and
    ``collapsed`` for a catapult into a collapsed network (:func:`fasttrap.analysis.stability.flags`):
    neither is counted as a valid endpoint, whatever the descent's own status said."""
    rows = cfg["inner.eval_rows"] or None
    loss0, acc0, _ = ops.evaluate(mlp_of(cfg, ds), theta0, ds.X_train[:rows], ds.y_train[:rows], backend=cfg["run.backend"])
    fl = stability.flags(res.G_trace, res.G_start, theta0, res.theta, loss0, acc0, res.train_loss, res.train_acc,
                         ds.n_classes, blowup=cfg["inner.blowup"], norm_growth=cfg["inner.norm_growth"])
    status = res.status.astype("U18").copy()
    ok = np.isin(status, ["converged", "max_steps"])
    status[ok & fl["blowup"]] = "blowup"
    status[ok & ~fl["blowup"] & fl["collapsed"]] = "collapsed"
    return status, fl


def stage_certify(run: Run, ds: datamod.Dataset, executor: Any = None) -> None:
    """Certify the inner endpoints (every ``certify.every``-th of each seed's window) on the first
    ``certify.rows`` training rows: ``certify/seed_<s>.npz``, one task and one file per seed, resumable."""
    cfg = run.cfg
    if not cfg["certify.enabled"]:
        return
    todo = [Task(f"certify-{s}", certify_seed, (s,), run.dir / "certify" / f"seed_{s}.npz", 1) for s in run.seeds]
    todo = [t for t in todo if not t.output.exists()]
    if not todo:
        return
    t0 = time.perf_counter()
    ex = executor or LocalExecutor()
    hvps = 0
    bar = Progress(len(todo), "certify", "seed", enabled=False)
    for _, entry in ex.run(run, ds, todo, bar):
        hvps += entry["hvps"]
    rows = cfg["certify.rows"] or len(ds.y_train)
    run.stage_done("certify", time.perf_counter() - t0, rows=int(rows), every=cfg["certify.every"], hvps=int(hvps))


def stage_sharpness(run: Run, ds: datamod.Dataset, executor: Any = None) -> None:
    """The full-batch Hessian at every ``sharpness.every``-th outer point of each seed's window (off by
    default): top eigenvalues by Lanczos and the SLQ density, ``sharpness/seed_<s>.npz``, a task per seed."""
    cfg = run.cfg
    if not cfg["sharpness.every"]:
        return
    todo = [Task(f"sharpness-{s}", sharpness_seed, (s,), run.dir / "sharpness" / f"seed_{s}.npz", 1)
            for s in run.seeds]
    todo = [t for t in todo if not t.output.exists()]
    if not todo:
        return
    t0 = time.perf_counter()
    for _ in (executor or LocalExecutor()).run(run, ds, todo, Progress(len(todo), "sharpness", "seed", enabled=False)):
        pass
    run.stage_done("sharpness", time.perf_counter() - t0, every=cfg["sharpness.every"],
                   rows=int(cfg["sharpness.rows"] or len(ds.y_train)))


def sharpness_seed(run: Run, ds: datamod.Dataset, s: int, bar: Any = None, offset: int = 0) -> dict[str, Any]:
    """One task: the Hessian at seed ``s``'s outer points, written to ``sharpness/seed_<s>.npz``."""
    cfg = run.cfg
    mlp = mlp_of(cfg, ds)
    out = store.read_npz(run.dir / "outer" / f"seed_{s}.npz")
    pick = np.arange(out["steps"].size)[:: cfg["sharpness.every"]]
    rows = cfg["sharpness.rows"] or len(ds.y_train)
    X, y = np.asarray(ds.X_train[:rows], np.float64), ds.y_train[:rows]
    th = out["thetas"][pick].astype(np.float64)
    t0 = time.perf_counter()
    top = hessian_eigs(mlp, th, X, y, k=min(cfg["sharpness.k"], mlp.n_params), backend=cfg["run.backend"])
    dens = hessian_density(mlp, th, X, y, probes=cfg["sharpness.probes"],
                           steps=min(cfg["sharpness.steps"], mlp.n_params), seed=s, backend=cfg["run.backend"])
    store.write_npz(run.dir / "sharpness" / f"seed_{s}.npz", steps=out["steps"][pick], top=top.values,
                    residuals=top.residuals, trace=dens.trace, nodes=dens.nodes, weights=dens.weights)
    return {"seconds": round(time.perf_counter() - t0, 3)}


def certify_seed(run: Run, ds: datamod.Dataset, s: int, bar: Any = None, offset: int = 0) -> dict[str, Any]:
    """One task: the certificates of seed ``s``'s endpoints, written to ``certify/seed_<s>.npz``."""
    cfg = run.cfg
    t0 = time.perf_counter()
    _, steps, seeds = rundir.start_points(run)
    mine = np.flatnonzero(seeds == s)                  # a contiguous range: start points are seed-major
    theta = rundir.inner_fields(run, ("theta",), lo=int(mine[0]), hi=int(mine[-1]) + 1)["theta"]
    rows = cfg["certify.rows"] or len(ds.y_train)
    X, y = ds.X_train[:rows], ds.y_train[:rows]
    mlp = mlp_of(cfg, ds)
    hvps = 0
    local = np.arange(mine.size)[:: cfg["certify.every"]]
    local = local[np.isfinite(theta[local]).all(1)]
    idx = mine[local]
    parts = []
    for lo in range(0, idx.size, 16):            # 16 endpoints per batch bounds the Lanczos bases' memory
        c = certify(mlp, theta[local[lo:lo + 16]], X, y, grad_tol=cfg["certify.grad_tol"],
                    safety=cfg["certify.safety"], eps=cfg["certify.eps"] if cfg["certify.rule"] == "eps" else None,
                    gf_cut=cfg["certify.gf_cut"], lanczos_steps=cfg["certify.lanczos_steps"],
                    slq_probes=cfg["certify.slq_probes"], minres_iters=cfg["certify.minres_iters"],
                    k=min(cfg["certify.k"], mlp.n_params), k_max=min(cfg["certify.k_max"], mlp.n_params),
                    seed=cfg["run.seed"], krylov=cfg["certify.krylov"],
                    products=cfg["certify.products"], backend=cfg["run.backend"])
        parts.append(c.to_arrays())
        hvps += c.hvps * (min(lo + 16, idx.size) - lo)
        if bar is not False:
            log(f"certify seed {s}: {min(lo + 16, idx.size)}/{idx.size} endpoints ({time.perf_counter() - t0:.0f} s)")
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    store.write_npz(run.dir / "certify" / f"seed_{s}.npz", point=idx, steps=steps[idx], **arrays)
    return {"seconds": round(time.perf_counter() - t0, 3), "hvps": int(hvps)}


def within_distances(run: Run) -> dict[str, np.ndarray]:
    """Distances between endpoints that must be one trap: each start point's main endpoint against its
    rerun with another batch seed (``seed``) and against the same descent at half the budget
    (``half``); only where both runs ended valid. Empty without the reruns."""
    out: dict[str, np.ndarray] = {}
    if not run.cfg["sensitivity.enabled"]:
        return out
    for v in rundir.variants(run)[1:]:
        inn = rundir.inner_results(run, v)
        main = rundir.inner_fields_at(run, ("theta", "status"), rundir.variant_points(run, v))
        ok = (np.isin(main["status"].astype(str), ["converged", "max_steps"])
              & np.isin(inn["status"].astype(str), ["converged", "max_steps"]))
        d = np.linalg.norm(main["theta"].astype(np.float64) - inn["theta"].astype(np.float64), axis=1)
        out[v] = d[ok]
    return out


VALID = ("converged", "max_steps")


def seed_endpoints(run: Run, s: int) -> dict[str, Any]:
    """What :func:`fasttrap.traps_from_endpoints` takes for seed ``s``'s window, from the run directory."""
    cfg = run.cfg
    _, steps, seeds = rundir.start_points(run)
    mine = np.flatnonzero(seeds == s)
    lo, hi = int(mine[0]), int(mine[-1]) + 1
    main = rundir.inner_fields(run, ("theta", "train_loss", "train_G", "status"), lo=lo, hi=hi)
    ind = rundir.load_indicators(run, s)
    rp = rundir.rerun_points(run) if cfg["sensitivity.enabled"] else np.zeros(0, np.int64)
    pos = np.flatnonzero((rp >= lo) & (rp < hi))
    kw: dict[str, Any] = {"steps": steps[lo:hi], "theta_end": main["theta"], "loss_end": main["train_loss"],
                          "G_end": main["train_G"], "invalid": ind.invalid}
    if pos.size:
        rr = rundir.inner_fields_at(run, ("theta", "train_loss", "train_G", "status"), pos, "seed")
        bad = ~np.isin(rr["status"].astype(str), VALID)
        rth = rr["theta"].astype(np.float64)
        rth[bad] = np.nan                  # an invalid rerun measures no noise
        kw |= {"rerun_steps": steps[rp[pos]], "rerun_theta_end": rth, "rerun_loss_end": rr["train_loss"],
               "rerun_G_end": rr["train_G"]}
    ck = rundir.checkpoint_series(run)
    if ck is not None and pos.size:
        kw["checkpoints"] = [{"fraction": float(f), "consecutive": ck["consecutive"][j, lo:hi - 1],
                              "loss": ck["loss"][j, lo:hi], "G": ck["G"][j, lo:hi],
                              "rerun_distance": ck["rerun_distance"][j, pos], "rerun_loss": ck["rerun_loss"][j, pos],
                              "rerun_G": ck["rerun_G"][j, pos]} for j, f in enumerate(ck["fraction"])]
    return kw


def ledge_settings(cfg: dict[str, Any], factor: float = 1.0) -> dict[str, Any]:
    """The ledge rule's settings of a run (the threshold scaled by ``factor``)."""
    return {"threshold": factor * cfg["ledges.threshold"], "min_gap": cfg["ledges.min_gap"],
            "max_share": cfg["ledges.max_share"], "max_disputed": cfg["ledges.max_disputed"],
            "max_spread": cfg["ledges.max_spread"],
            "quantile": cfg["identity.quantile"]}


def stage_ledges(run: Run) -> None:
    """The ledge rule on every seed's window (:func:`fasttrap.traps_from_endpoints`, the function a user
    calls on their own endpoints): ``ledges.json`` (verdicts, evidence, budget table per seed) and
    ``ledges.npz`` (the series it read, so the rule can be rerun from the directory alone)."""
    cfg = run.cfg
    t0 = time.perf_counter()
    per_seed, arrays = {}, {}
    for s in run.seeds:
        kw = seed_endpoints(run, s)
        if "rerun_steps" not in kw:
            per_seed[str(s)] = {"separable": False, "verdict": "refused: no reruns measure the noise of this seed "
                                "(sensitivity.enabled = false or sensitivity.seeds excludes it)",
                                "why": ["no reruns"], "boundaries": [], "boundary_steps": []}
            continue
        r = traps_from_endpoints(**kw, **ledge_settings(cfg))
        per_seed[str(s)] = r.to_dict() | {"n_reruns": int(np.asarray(r.series["noise"]["distance"]).size)}
        arrays |= series_to_arrays(r.series, prefix=f"s{s}_")
    store.write_npz(run.dir / "ledges.npz", **arrays)
    store.write_json(run.dir / "ledges.json", {"settings": ledge_settings(cfg), "per_seed": per_seed,
                                              "separable": all(v["separable"] for v in per_seed.values())})
    run.stage_done("ledges", time.perf_counter() - t0)


def ledge_result(run: Run, s: int, factor: float = 1.0, fraction: float | None = None) -> Any:
    """The ledge rule on seed ``s``'s stored series (threshold × ``factor``; at a checkpoint ``fraction``
    of the budget instead of the endpoints), or None when the seed has no series."""
    with store.open_npz(run.dir / "ledges.npz") as z:
        if f"s{s}_steps" not in z:
            return None
        ser = series_from_arrays(z, prefix=f"s{s}_")
    if fraction is not None:
        c = next(c for c in ser["checkpoints"] if abs(c["fraction"] - fraction) < 1e-12)
        ser = ser | {k: c[k] for k in ("consecutive", "loss", "G", "invalid", "noise")} | {"checkpoints": [],
                                                                                         "pairwise": None}
    return traps_from_series(ser, **ledge_settings(run.cfg, factor))


def stage_identity(run: Run) -> None:
    """The within-trap scale from the reruns, and the clusters of every seed's endpoints at
    ``identity.multiple`` × that scale (:func:`fasttrap.analysis.identity.identify`): identity.json/.npz."""
    cfg = run.cfg
    if cfg["traps.rule"] == "ledge":
        return
    t0 = time.perf_counter()
    wd = within_distances(run)
    if not wd or not any(v.size for v in wd.values()):
        why = ("no reruns (sensitivity.enabled = false)" if not wd else
               "no start point has a valid endpoint in both the run and its reruns")
        store.write_json(run.dir / "identity.json", {"within_scale": None, "why_not": why})
        store.write_npz(run.dir / "identity.npz", **{f"within_{k}": v for k, v in wd.items()})
        run.stage_done("identity", time.perf_counter() - t0)
        return
    scale = within_trap_scale(*wd.values(), q=cfg["identity.quantile"])
    per_seed, labels = {}, {}
    for s in run.seeds:
        idn = _identify(run, s, "main", scale, cfg["identity.multiple"])
        labels[f"labels_{s}"] = idn.labels
        per_seed[str(s)] = {"distinct": idn.n_distinct, "visits": idn.n_visits, "returns": idn.n_returns,
                            "separable": idn.separable, "evidence": idn.evidence}
    summ = {k: {"n": int(v.size), "median": float(np.median(v)) if v.size else None,
                "q": float(np.quantile(v, cfg["identity.quantile"])) if v.size else None} for k, v in wd.items()}
    store.write_json(run.dir / "identity.json", {
        "within_scale": scale, "quantile": cfg["identity.quantile"], "multiple": cfg["identity.multiple"],
        "cut": scale * cfg["identity.multiple"], "linkage": cfg["identity.linkage"], "within": summ,
        "per_seed": per_seed, "separable": all(v["separable"] for v in per_seed.values())})
    store.write_npz(run.dir / "identity.npz", **{f"within_{k}": v for k, v in wd.items()}, **labels)
    run.stage_done("identity", time.perf_counter() - t0)


def _identify(run: Run, s: int, variant: str, scale: float, multiple: float) -> Any:
    ind = rundir.load_indicators(run, s, variant)
    return identify(rundir.pairwise_distances(run, s, variant), scale, multiple, invalid=ind.invalid,
                    method=run.cfg["identity.linkage"])


def _consecutive(run: Run, s: int, variant: str = "main") -> tuple[traps.Indicators, np.ndarray]:
    """Seed ``s``'s indicators and the boundaries of the consecutive-jump rule (the run's thresholds)."""
    ind = rundir.load_indicators(run, s, variant)
    return ind, traps.segment(ind.end_to_end, ind.outer_step, ind.loss_end, ind.G_end, ind.invalid,
                              **rundir.thresholds(run.cfg))


def segments(run: Run, rule: str, variant: str = "main", factor: float = 1.0,
             fraction: float | None = None) -> list[traps.Segments]:
    """One :class:`Segments` per seed of ``variant``: by the ledge rule (threshold × ``factor``, at a
    checkpoint ``fraction``), the consecutive-jump rule, or (``rule="cluster"``) the visits of clusters
    cut at ``factor`` × ``identity.multiple`` × the measured within-trap scale."""
    if rule == "ledge":
        out = []
        for s in run.seeds:
            r = ledge_result(run, s, factor, fraction)
            n = len(rundir.load_indicators(run, s))
            out.append(r.segments if r is not None else traps.trapping_times([], n, invalid=np.ones(n, bool)))
        return out
    out = []
    scale = store.read_json(run.dir / "identity.json")["within_scale"] if rule == "cluster" else None
    for s in rundir.variant_seeds(run, variant):
        if rule == "cluster":
            out.append(_identify(run, s, variant, scale, factor * run.cfg["identity.multiple"]).visits)
        else:
            ind, b = _consecutive(run, s, variant)
            out.append(traps.trapping_times(b, len(ind), invalid=ind.invalid))
    return out


def rule_used(run: Run) -> str:
    """The rule the reported trapping times come from: ``traps.rule``, or 'consecutive' when clustering
    has no measured within-trap scale."""
    if run.cfg["traps.rule"] == "cluster" and store.read_json(run.dir / "identity.json")["within_scale"] is None:
        return "consecutive"
    return run.cfg["traps.rule"]


def rule_separable(run: Run, rule: str) -> bool | None:
    """Whether the reported rule found clean traps (None for the consecutive rule, which has no test)."""
    if rule == "ledge":
        return store.read_json(run.dir / "ledges.json")["separable"]
    if rule == "cluster":
        return store.read_json(run.dir / "identity.json").get("separable")
    return None


def stage_traps(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    t0 = time.perf_counter()
    rule = rule_used(run)
    segs = segments(run, rule)
    out = {}
    for s, sg in zip(run.seeds, segs):
        if rule == "ledge":
            ind = rundir.load_indicators(run, s)
            b = np.asarray(sg.starts[1:], np.int64)    # the trap changes
        else:
            ind, b = _consecutive(run, s)               # the consecutive rule's, shown beside the clusters'
        out[f"boundaries_{s}"] = b
        out[f"boundary_steps_{s}"] = ind.steps[b]
    pooled = traps.pool(segs)
    seg_kind = np.concatenate([certify_kinds(run, s, seg) for s, seg in zip(run.seeds, segs)]) if segs else np.zeros(0, "U18")
    # the split is an outer step; segments carry window indices
    steps0 = rundir.load_indicators(run, run.seeds[0]).steps
    split_idx = int(np.searchsorted(steps0, cfg["traps.split"]))
    summ = traps.summary(pooled, split=split_idx)
    summ["split_step"] = cfg["traps.split"]
    store.write_npz(run.dir / "traps.npz", lengths=pooled.lengths, censored=pooled.censored, flagged=pooled.flagged,
                    starts=pooled.starts, seed=pooled.seed, segment_kind=seg_kind, **out)
    kinds, counts = np.unique(seg_kind, return_counts=True)
    store.write_json(run.dir / "traps.json", {"rule": cfg["traps.rule"], "rule_used": rule,
                                             "separable": rule_separable(run, rule),
                                             "thresholds": rundir.thresholds(cfg), "summary": summ,
                                             "traps_per_seed": {str(s): int(len(g)) for s, g in zip(run.seeds, segs)},
                                             # what each trap is made of (fasttrap.analysis.certify.segment_kinds)
                                             "segments_by_certificate": {str(k): int(c) for k, c in zip(kinds, counts)}})
    run.stage_done("traps", time.perf_counter() - t0)
    return summ


def stage_sensitivity(run: Run) -> None:
    """sensitivity.json: every statistic, with bootstrap intervals over seeds, for the reported rule and
    under each change: the cut ×0.5 and ×2, the other rule, another batch seed, half the budget."""
    cfg = run.cfg
    if (run.dir / "sensitivity.json").exists():
        return
    t0 = time.perf_counter()
    split = int(np.searchsorted(rundir.load_indicators(run, run.seeds[0]).steps, cfg["traps.split"]))
    kw = dict(n_boot=cfg["sensitivity.seed_bootstrap"], n_bootstrap=cfg["sensitivity.n_bootstrap"],
              min_samples=cfg["stats.min_samples"], seed=cfg["run.seed"])
    rule = rule_used(run)
    rows = []
    if rule == "ledge":
        th = cfg["ledges.threshold"]
        for f in (1.0, 0.5, 2.0):
            rows.append(sensitivity.row(f"ledge rule, threshold {f * th:g} noise units", segments(run, "ledge", factor=f),
                                        split, change="threshold", factor=f, **kw))
        ser = next((x for s in run.seeds if (x := rundir.ledge_series(run, s)) is not None), None)
        for fr in ([c["fraction"] for c in ser["checkpoints"]] if ser else []):
            rows.append(sensitivity.row(f"budget {fr:g} ({fr * cfg['inner.epochs']:g} epochs)",
                                        segments(run, "ledge", fraction=fr), split, change="budget", fraction=fr, **kw))
        store.write_json(run.dir / "sensitivity.json", {"rule": rule, "split_step": cfg["traps.split"], "rows": rows,
                                                       "flips": sensitivity.flips(rows)})
        run.stage_done("sensitivity", time.perf_counter() - t0)
        return
    if rule == "cluster":
        for f in (1.0, 0.5, 2.0):
            rows.append(sensitivity.row(f"clusters, cut ×{f:g}", segments(run, "cluster", factor=f), split,
                                        change="cut", factor=f, **kw))
        rows.append(sensitivity.row("consecutive-jump rule", segments(run, "consecutive"), split, change="rule", **kw))
    else:
        rows.append(sensitivity.row("consecutive-jump rule", segments(run, "consecutive"), split, change="none", **kw))
    if cfg["sensitivity.enabled"]:
        sub = rundir.variant_seeds(run, "seed")
        if len(sub) < len(run.seeds):
            rows.append(sensitivity.row(f"{rows[0]['name']}, seeds {sub[0]}–{sub[-1]} only",
                                        segments(run, rule)[:len(sub)], split, change="same seeds", **kw))
        for v, label in (("seed", f"batch seed {cfg['run.seed'] + 1}"), ("half", f"half the budget ({cfg['inner.epochs'] / 2:g} epochs)")):
            rows.append(sensitivity.row(label, segments(run, rule, v), split, change=v, **kw))
    store.write_json(run.dir / "sensitivity.json", {"rule": rule, "split_step": cfg["traps.split"], "rows": rows,
                                                   "flips": sensitivity.flips(rows)})
    run.stage_done("sensitivity", time.perf_counter() - t0)


def stage_regime1(run: Run, progress: bool | None) -> None:
    """The regime-1 window of the first ``regime1.seeds`` seeds, analysed apart: a run directory of its
    own in ``<run>/regime1`` (same protocol, its own reruns, clusters and report)."""
    cfg = run.cfg
    if not cfg["regime1.seeds"]:
        return
    sub_cfg = cfgmod.regime1_config(cfg)
    d = run.dir / "regime1"
    d.mkdir(exist_ok=True)
    if not (d / "config.toml").exists():
        store.write_text(d / "config.toml", cfgmod.to_toml(sub_cfg))
    log(f"regime 1: steps {cfg['regime1.start']}–{cfg['regime1.stop']} of seeds "
        f"{run.seeds[0]}–{run.seeds[0] + cfg['regime1.seeds'] - 1}, in {d}")
    sub = Run(d, sub_cfg)
    sub.manifest["backend_resolved"] = run.manifest.get("backend_resolved")
    sub.check_settings()
    with sub.recording():
        sub.repair()
        execute(sub, progress)


def certify_kinds(run: Run, s: int, seg: traps.Segments) -> np.ndarray:
    """The certificate kind of each segment of seed ``s`` ("uncertified" without certificates)."""
    n = len(rundir.load_indicators(run, s))
    kind_at = np.full(n, "", dtype="U18")
    c = rundir.certificates(run, s)
    if c is not None:
        _, _, seeds = rundir.start_points(run)
        first = int(np.flatnonzero(seeds == s)[0])
        kind_at[c["point"] - first] = c["kind"]
    return segment_kinds(kind_at, seg.starts, seg.lengths)


def stage_stats(run: Run, progress: bool | None) -> dict[str, Any]:
    cfg = run.cfg
    t0 = time.perf_counter()
    z = store.read_npz(run.dir / "traps.npz")
    steps0 = rundir.load_indicators(run, run.seeds[0]).steps
    split_idx = int(np.searchsorted(steps0, cfg["traps.split"]))
    ok = ~z["censored"] & ~z["flagged"]
    groups = {"all": z["lengths"][ok], "early": z["lengths"][ok & (z["starts"] < split_idx)],
              "late": z["lengths"][ok & (z["starts"] >= split_idx)]}
    fits: dict[str, Any] = {}
    for name, x in groups.items():
        if x.size < cfg["stats.min_samples"] or np.unique(x).size < 3:
            fits[name] = {"skipped": f"{x.size} complete trapping times ({np.unique(x).size} distinct); "
                                     f"a fit needs at least {cfg['stats.min_samples']} with 3 distinct values"}
            continue
        try:
            f = powerlaw.fit_power_law(x, n_bootstrap=cfg["stats.n_bootstrap"], seed=cfg["run.seed"], progress=progress)
        except ValueError as exc:
            fits[name] = {"skipped": str(exc)}
            continue
        fits[name] = f.to_dict() | {"verdict": f.verdict()}
    store.write_json(run.dir / "stats.json", fits)
    run.stage_done("stats", time.perf_counter() - t0)
    return fits


def stage_report(run: Run) -> str:
    """Figures and report.md; returns the short summary printed at the end."""
    t0 = time.perf_counter()
    text = write_report(run)
    run.stage_done("report", time.perf_counter() - t0)
    return text


def check_sizes(cfg: dict[str, Any], mlp: Any) -> None:
    """Refuse, before any work, settings that ask for more eigenvalues than the network has
    parameters (they were once clamped to P silently, which started a P-step Lanczos)."""
    P = mlp.n_params
    for key, on in (("certify.k", cfg["certify.enabled"]), ("sharpness.k", cfg["sharpness.every"] > 0)):
        if on and cfg[key] > P:
            raise cfgmod.ConfigError(f"{key} = {cfg[key]}: more eigenvalues than the network has parameters "
                                     f"(P = {P}); give at most {P}")


def execute(run: Run, progress: bool | None = None) -> str:
    """Run (or resume) every stage of the trapping-time analysis; returns the short summary."""
    t_all = time.perf_counter()
    ds = stage_data(run)
    log(f"data: {ds!r}")
    check_sizes(run.cfg, mlp_of(run.cfg, ds))
    check_applied(run.cfg, mlp_of(run.cfg, ds), ds.image_shape)
    stage_outer(run, ds, progress)
    ex = make_executor(run.cfg, run.dir)
    try:
        for v in rundir.variants(run):
            stage_inner(run, ds, progress, v, ex)
        stage_certify(run, ds, ex)
        stage_sharpness(run, ds, ex)
    finally:
        ex.close()
    for v in rundir.variants(run):
        stage_indicators(run, v)
    if run.cfg["traps.rule"] == "ledge" and not all((run.dir / f).exists() for f in ("ledges.json", "ledges.npz")):
        stage_ledges(run)
    stage_identity(run)
    stage_traps(run)
    stage_stats(run, progress)
    stage_sensitivity(run)
    stage_regime1(run, progress)
    summary = stage_report(run)
    run.finished(time.perf_counter() - t_all)
    return summary
