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
from ...analysis.certify import certify, segment_kinds
from ...common import store
from ...common.progress import Progress
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
from .swap import applied_moves


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
    """The inner descents from every start point of ``variant``'s seeds, in blocks saved as they finish.

    ``variant`` "main" is the run; "seed" reruns it with batch seed ``run.seed + 1`` and "half" with
    half the epochs (same batch order: its endpoints are where the main descents were halfway), on
    the first ``sensitivity.seeds`` seeds. The reruns take each start point's λ_max and lr from the
    main run, so only the chosen setting changes. Each block is one task of ``executor``
    (:mod:`fasttrap.run.executor`; default: this process).
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
    what = {"main": "inner descent", "seed": "rerun: batch seed +1", "half": "rerun: half budget"}[variant]
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
    spe = 1 if cfg["inner.method"] == "gd" else -(-len(ds.y_train) // cfg["inner.batch_size"])
    epochs = cfg["inner.epochs"] / 2 if variant == "half" else cfg["inner.epochs"]
    return int(round(epochs * spe))


def _batch_seed(cfg: dict[str, Any], variant: str) -> int:
    return cfg["run.seed"] + 1 if variant == "seed" else cfg["run.seed"]


def inner_block(run: Run, ds: datamod.Dataset, variant: str, b: int, lo: int, hi: int, bar: Any = None,
                offset: int = 0) -> dict[str, Any]:
    """One task: the inner descents of start points [lo, hi) of ``variant``, written to its block file.

    Everything it needs comes from the run directory and the settings, and every random stream from
    (batch seed, start-point index), so it computes the same bytes wherever and whenever it runs.

    Returns:
        the manifest's record of the block (models, seconds, model-steps, statuses).
    """
    cfg = run.cfg
    tb = time.perf_counter()
    theta0, steps, _ = rundir.start_points(run)
    theta0, steps = theta0[lo:hi], steps[lo:hi]
    n_steps = _inner_steps(cfg, ds, variant)
    rec = cfg["inner.record_every"] or max(1, _inner_steps(cfg, ds, "main") // 200)
    if variant == "main":
        # λ_max(H) at every start point: it sets lr under inner.lr_rule = "auto", and flags a fixed lr
        # beyond the linear-stability limit 2/λ_max² of descent on G otherwise
        rows = cfg["inner.lr_rows"]
        lam = lambda_max(mlp_of(cfg, ds), theta0, ds.X_train[:rows], ds.y_train[:rows], backend=cfg["run.backend"])
        lrs = cfg["inner.lr"]
        lr_b = (stability.auto_lr(lam, cfg["inner.lr_c"]) if cfg["inner.lr_rule"] == "auto"
                else np.where(steps <= cfg["inner.regime_split"], lrs[0], lrs[-1]))
    else:
        main = rundir.inner_fields(run, ("lambda_max", "lr"), lo=lo, hi=hi)
        lam, lr_b = main["lambda_max"], main["lr"]
    res = inner_descent(mlp_of(cfg, ds), theta0, ds, steps=n_steps, lr=lr_b, batch_size=cfg["inner.batch_size"],
                        seed=_batch_seed(cfg, variant), batches=cfg["inner.batches"], method=cfg["inner.method"],
                        record_every=rec, G_tol=cfg["inner.G_tol"], growth=cfg["inner.growth"],
                        eval_rows=cfg["inner.eval_rows"] or None, index_offset=lo, backend=cfg["run.backend"],
                        progress=bar if bar is not None else False, progress_offset=offset)
    status, fl = _honest_status(cfg, ds, theta0, res)
    store.write_npz(rundir.inner_dir(run, variant) / f"block_{b:04d}.npz", theta=res.theta,
                    status=status.astype("U18"), G_peak_ratio=fl["G_peak_ratio"], norm_ratio=fl["norm_ratio"],
                    lambda_max=lam, lr=lr_b, lr_unstable=stability.unstable(lr_b, lam),
                    steps_done=res.steps_done, G_start=res.G_start, G_last=res.G_last,
                    train_loss=res.train_loss, train_G=res.train_G, train_acc=res.train_acc,
                    G_trace=res.G_trace, trace_steps=res.trace_steps, index=np.arange(lo, hi))
    return {"models": hi - lo, "seconds": round(time.perf_counter() - tb, 3), "model_steps": int(res.model_steps),
            "status": {str(k): int(v) for k, v in zip(*np.unique(status, return_counts=True))}}


def stage_indicators(run: Run, variant: str = "main") -> None:
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
                    eps=cfg["certify.eps"], gf_cut=cfg["certify.gf_cut"], lanczos_steps=cfg["certify.lanczos_steps"],
                    slq_probes=cfg["certify.slq_probes"], minres_iters=cfg["certify.minres_iters"],
                    k=min(cfg["certify.k"], mlp.n_params), k_max=min(cfg["certify.k_max"], mlp.n_params),
                    seed=cfg["run.seed"], backend=cfg["run.backend"])
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
    main = rundir.inner_results(run)
    ok_main = np.isin(main["status"].astype(str), ["converged", "max_steps"])
    for v in ("seed", "half"):
        inn = rundir.inner_results(run, v)
        n = len(inn["status"])
        ok = ok_main[:n] & np.isin(inn["status"].astype(str), ["converged", "max_steps"])
        d = np.linalg.norm(main["theta"][:n].astype(np.float64) - inn["theta"].astype(np.float64), axis=1)
        out[v] = d[ok]
    return out


def stage_identity(run: Run) -> None:
    """The within-trap scale from the reruns, and the clusters of every seed's endpoints at
    ``identity.multiple`` × that scale (:func:`fasttrap.analysis.identity.identify`): identity.json/.npz."""
    cfg = run.cfg
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


def segments(run: Run, rule: str, variant: str = "main", factor: float = 1.0) -> list[traps.Segments]:
    """One :class:`Segments` per seed of ``variant``: by the consecutive-jump rule, or (``rule="cluster"``)
    the visits of clusters cut at ``factor`` × ``identity.multiple`` × the measured within-trap scale."""
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


def stage_traps(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    t0 = time.perf_counter()
    rule = rule_used(run)
    segs = segments(run, rule)
    out = {}
    for s in run.seeds:
        ind, b = _consecutive(run, s)
        out[f"boundaries_{s}"] = b                      # the consecutive rule's, shown beside the clusters'
        out[f"boundary_steps_{s}"] = ind.steps[b]
    pooled = traps.pool(segs)
    seg_kind = np.concatenate([certify_kinds(run, s, seg) for s, seg in zip(run.seeds, segs)]) if segs else np.zeros(0, "U13")
    # the split is an outer step; segments carry window indices
    steps0 = rundir.load_indicators(run, run.seeds[0]).steps
    split_idx = int(np.searchsorted(steps0, cfg["traps.split"]))
    summ = traps.summary(pooled, split=split_idx)
    summ["split_step"] = cfg["traps.split"]
    store.write_npz(run.dir / "traps.npz", lengths=pooled.lengths, censored=pooled.censored, flagged=pooled.flagged,
                    starts=pooled.starts, seed=pooled.seed, segment_kind=seg_kind, **out)
    kinds, counts = np.unique(seg_kind, return_counts=True)
    ident = store.read_json(run.dir / "identity.json")
    store.write_json(run.dir / "traps.json", {"rule": cfg["traps.rule"], "rule_used": rule,
                                             "separable": ident.get("separable") if rule == "cluster" else None,
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
    execute(sub, progress)


def certify_kinds(run: Run, s: int, seg: traps.Segments) -> np.ndarray:
    """The certificate kind of each segment of seed ``s`` ("uncertified" without certificates)."""
    n = len(rundir.load_indicators(run, s))
    kind_at = np.full(n, "", dtype="U13")
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


def execute(run: Run, progress: bool | None = None) -> str:
    """Run (or resume) every stage of the trapping-time analysis; returns the short summary."""
    t_all = time.perf_counter()
    ds = stage_data(run)
    log(f"data: {ds!r}")
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
    stage_identity(run)
    stage_traps(run)
    stage_stats(run, progress)
    stage_sensitivity(run)
    stage_regime1(run, progress)
    summary = stage_report(run)
    run.finished(time.perf_counter() - t_all)
    return summary
