"""The main job's stages, joined: data → outer → inner → indicators → traps → stats → report.

(With ``--analysis aging`` the stages are data → one aging run per network → report; see
:func:`execute_aging`.)

Each stage reads the previous stage's stored output from the run directory and writes its own
atomically (:mod:`fasttrap.store`), so any stage can be re-run alone and a killed run resumes where
it stopped. The inner stage, the expensive one, saves in blocks of start points; a resumed run skips
the blocks that are on disk. Every random stream derives from (seed, stage, index) — the outer
batches from each seed, the inner batches from ``run.seed`` and the start point's global index, the
bootstrap from ``run.seed`` — so a resumed run computes exactly what an uninterrupted one would.

Layout of a run directory::

    config.toml  manifest.json  report.md
    outer/seed_<s>.npz            θ_t of the window, training curves
    inner/block_<b>.npz           endpoints θ*, statuses, G records, endpoint loss/G/accuracy
    indicators/seed_<s>.npz       the indicator series and the endpoints' pairwise distances
    traps.npz  traps.json         boundaries per seed, trapping times, their summary
    stats.json                    power-law fits (all, early, late)
    figures/*.png|pdf|npz

and for the aging analysis::

    config.toml  manifest.json  report.md
    aging/net_<hidden>.npz        Δ, Δ₄ on the (t_w, lag) grid, curves, D(t), final θ
    aging/net_<hidden>.ckpt.npz   the checkpoint of an unfinished run (removed when it finishes)
    figures/*.png|pdf|npz
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, backend, config as cfgmod, data as datamod, plots, stats, store, traps
from .inner import inner_descent
from .mlp import MLP
from .outer import outer_sgd
from .progress import Progress


class RunError(RuntimeError):
    """The run cannot go on (bad data, an unusable directory, a full disk …); the message says why."""


def log(msg: str) -> None:
    print(f"[fasttrap] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- manifest -----
def _versions() -> dict[str, str]:
    out = {"fasttrap": __version__, "python": platform.python_version()}
    for mod in ("numpy", "torch", "numba", "powerlaw", "scipy", "matplotlib"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = "n/a"
    return out


def _hardware() -> dict[str, Any]:
    hw: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": backend.get_num_threads()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                hw["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if backend.cuda_available():
        try:
            import torch

            hw["gpu"] = torch.cuda.get_device_name()
        except Exception:  # noqa: BLE001
            hw["gpu"] = "cuda device"
    return hw


class Run:
    """A run directory and its manifest."""

    def __init__(self, directory: Path, cfg: dict[str, Any]):
        self.dir = directory
        self.cfg = cfg
        self.manifest_path = directory / "manifest.json"
        if self.manifest_path.exists():
            self.manifest = store.read_json(self.manifest_path)
        else:
            self.manifest = {"versions": _versions(), "hardware": _hardware(), "backend": backend.info(),
                             "profile": cfg.get("profile"), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "seeds": self.seeds, "stages": {}, "resumes": 0}

    @property
    def seeds(self) -> list[int]:
        return [self.cfg["outer.seed_offset"] + i for i in range(self.cfg["outer.seeds"])]

    def save_manifest(self) -> None:
        store.write_json(self.manifest_path, self.manifest)

    def stage_done(self, name: str, seconds: float, **extra: Any) -> None:
        st = self.manifest["stages"].setdefault(name, {})
        st.update(done=True, seconds=round(st.get("seconds", 0.0) + seconds, 3), **extra)
        self.save_manifest()

    def is_done(self, name: str) -> bool:
        return bool(self.manifest["stages"].get(name, {}).get("done"))


# ------------------------------------------------------------------------------- stages -------
def stage_data(run: Run) -> datamod.Dataset:
    cfg = run.cfg
    try:
        ds = datamod.load(cfg["data.name"], normalize=cfg["data.normalize"])
    except datamod.DataError as exc:
        raise RunError(f"data: {exc}") from None
    w = cfg["model.widths"]
    if cfg.get("analysis", "traps") == "traps":  # the aging nets take their input/output widths from the data
        if w[0] != ds.n_features:
            raise RunError(f"model.widths starts with {w[0]} inputs but {ds.name} has {ds.n_features} features")
        if w[-1] < ds.n_classes:
            raise RunError(f"model.widths ends with {w[-1]} outputs but {ds.name} has {ds.n_classes} classes")
    run.manifest["data"] = {"name": ds.name, "train": list(ds.X_train.shape), "test": list(ds.X_test.shape),
                            "classes": ds.n_classes, "normalize": ds.normalize, "mean": ds.info.get("mean"),
                            "std": ds.info.get("std")}
    return ds


def _mlp(cfg: dict[str, Any]) -> MLP:
    return MLP(cfg["model.widths"], cfg["model.activation"], cfg["model.loss"], cfg["model.output"])


def stage_outer(run: Run, ds: datamod.Dataset, progress: bool | None) -> None:
    cfg = run.cfg
    missing = [s for s in run.seeds if not (run.dir / "outer" / f"seed_{s}.npz").exists()]
    if not missing:
        return
    t0 = time.perf_counter()
    steps = cfgmod.window_steps(cfg)
    dtype = np.float32 if cfg["inner.dtype"] == "float32" else np.float64
    res = outer_sgd(_mlp(cfg), ds, seeds=missing, lr=cfg["outer.lr"], batch_size=cfg["outer.batch_size"],
                    steps=cfg["outer.steps"], record=steps, curve_points=cfg["outer.curve_points"], dtype=dtype,
                    backend=cfg["run.backend"], progress=progress)
    for i, s in enumerate(missing):
        store.write_npz(run.dir / "outer" / f"seed_{s}.npz", thetas=res.thetas[i], steps=res.steps,
                        curve_steps=res.curve_steps, train_loss=res.train_loss[i], train_acc=res.train_acc[i],
                        test_loss=res.test_loss[i], test_acc=res.test_acc[i])
    run.stage_done("outer", time.perf_counter() - t0)


def _start_points(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All start points in global order (seed-major): θ0 [N, P], their outer steps, their seeds."""
    th, st, sd = [], [], []
    for s in run.seeds:
        z = store.read_npz(run.dir / "outer" / f"seed_{s}.npz")
        th.append(z["thetas"])
        st.append(z["steps"])
        sd.append(np.full(len(z["steps"]), s))
    return np.concatenate(th), np.concatenate(st), np.concatenate(sd)


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(n, a + size)) for a in range(0, n, size)]


def block_size(cfg: dict[str, Any], n: int) -> int:
    """inner.block, or for 0: every start point at once on a GPU (one batch), 25 on a CPU."""
    if cfg["inner.block"]:
        return cfg["inner.block"]
    return n if backend.resolve(cfg["run.backend"]) == "cuda" else 25


def stage_inner(run: Run, ds: datamod.Dataset, progress: bool | None) -> None:
    cfg = run.cfg
    theta0, steps, _ = _start_points(run)
    blocks = _blocks(len(theta0), block_size(cfg, len(theta0)))
    todo = [(b, lo, hi) for b, (lo, hi) in enumerate(blocks) if not (run.dir / "inner" / f"block_{b:04d}.npz").exists()]
    if not todo:
        return
    lrs = cfg["inner.lr"]
    lr = np.where(steps <= cfg["inner.regime_split"], lrs[0], lrs[-1])
    spe = 1 if cfg["inner.method"] == "gd" else -(-len(ds.y_train) // cfg["inner.batch_size"])
    n_steps = int(round(cfg["inner.epochs"] * spe))
    rec = cfg["inner.record_every"] or max(1, n_steps // 200)
    total = sum(hi - lo for _, lo, hi in todo) * n_steps
    done_before = len(blocks) - len(todo)
    if done_before:
        log(f"inner: resuming, {done_before} of {len(blocks)} blocks already on disk")
    bar = Progress(total, "inner descent", "model-step", enabled=progress)
    t0 = time.perf_counter()
    offset = 0
    try:
        for b, lo, hi in todo:
            tb = time.perf_counter()
            res = inner_descent(_mlp(cfg), theta0[lo:hi], ds, steps=n_steps, lr=lr[lo:hi],
                                batch_size=cfg["inner.batch_size"], seed=cfg["run.seed"],
                                batches=cfg["inner.batches"], method=cfg["inner.method"], record_every=rec,
                                G_tol=cfg["inner.G_tol"], growth=cfg["inner.growth"],
                                eval_rows=cfg["inner.eval_rows"] or None, index_offset=lo,
                                backend=cfg["run.backend"], progress=bar, progress_offset=offset)
            offset += (hi - lo) * n_steps
            store.write_npz(run.dir / "inner" / f"block_{b:04d}.npz", theta=res.theta, status=res.status.astype("U12"),
                            steps_done=res.steps_done, G_start=res.G_start, G_last=res.G_last,
                            train_loss=res.train_loss, train_G=res.train_G, train_acc=res.train_acc,
                            G_trace=res.G_trace, trace_steps=res.trace_steps, index=np.arange(lo, hi))
            blk = run.manifest["stages"].setdefault("inner", {}).setdefault("blocks", {})
            blk[str(b)] = {"models": hi - lo, "seconds": round(time.perf_counter() - tb, 3),
                           "model_steps": int(res.model_steps), "status": res.counts()}
            run.save_manifest()
    finally:
        bar.close()
    secs = time.perf_counter() - t0
    ms = sum(v["model_steps"] for v in run.manifest["stages"]["inner"]["blocks"].values())
    run.stage_done("inner", secs, n_steps=n_steps, models=len(theta0), blocks=len(blocks),
                   model_steps=ms, model_steps_per_s=round(sum((hi - lo) * n_steps for _, lo, hi in todo) / max(secs, 1e-9), 1))


def _inner_results(run: Run) -> dict[str, np.ndarray]:
    theta0, _, _ = _start_points(run)
    nb = len(_blocks(len(theta0), block_size(run.cfg, len(theta0))))
    parts = [store.read_npz(run.dir / "inner" / f"block_{b:04d}.npz") for b in range(nb)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "trace_steps"} | {"trace_steps": parts[0]["trace_steps"]}


def stage_indicators(run: Run) -> None:
    if all((run.dir / "indicators" / f"seed_{s}.npz").exists() for s in run.seeds):
        return
    t0 = time.perf_counter()
    theta0, steps, seeds = _start_points(run)
    inn = _inner_results(run)
    for s in run.seeds:
        m = seeds == s
        ind = traps.indicators(theta0[m], inn["theta"][m], inn["train_loss"][m], inn["train_G"][m],
                               acc_end=inn["train_acc"][m], status=inn["status"][m], steps=steps[m],
                               G_start=inn["G_start"][m])
        D = traps.pairwise_distances(inn["theta"][m])
        store.write_npz(run.dir / "indicators" / f"seed_{s}.npz", pairwise=D, **ind.to_dict())
    run.stage_done("indicators", time.perf_counter() - t0)


def _load_indicators(run: Run, s: int) -> traps.Indicators:
    z = store.read_npz(run.dir / "indicators" / f"seed_{s}.npz")
    return traps.Indicators(z["steps"], z["loss_end"], z["acc_end"], z["G_end"], z["end_to_end"], z["start_to_end"],
                            z["outer_step"], z["status"], z["invalid"], z.get("G_start"))


def thresholds(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: cfg[f"traps.{k}"] for k in ("dist_ratio", "peak_window", "confirm", "loss_step", "G_step", "adaptive",
                                           "bimodality")}


def stage_traps(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    t0 = time.perf_counter()
    segs, out = [], {}
    for s in run.seeds:
        ind = _load_indicators(run, s)
        b = traps.segment(ind.end_to_end, ind.outer_step, ind.loss_end, ind.G_end, ind.invalid, **thresholds(cfg))
        seg = traps.trapping_times(b, len(ind), invalid=ind.invalid)
        segs.append(seg)
        out[f"boundaries_{s}"] = b
        out[f"boundary_steps_{s}"] = ind.steps[b]
    pooled = traps.pool(segs)
    # the split is an outer step; segments carry window indices
    steps0 = _load_indicators(run, run.seeds[0]).steps
    split_idx = int(np.searchsorted(steps0, cfg["traps.split"]))
    summ = traps.summary(pooled, split=split_idx)
    summ["split_step"] = cfg["traps.split"]
    store.write_npz(run.dir / "traps.npz", lengths=pooled.lengths, censored=pooled.censored, flagged=pooled.flagged,
                    starts=pooled.starts, seed=pooled.seed, **out)
    store.write_json(run.dir / "traps.json", {"thresholds": thresholds(cfg), "summary": summ,
                                             "traps_per_seed": {str(s): int(len(g)) for s, g in zip(run.seeds, segs)}})
    run.stage_done("traps", time.perf_counter() - t0)
    return summ


def stage_stats(run: Run, progress: bool | None) -> dict[str, Any]:
    cfg = run.cfg
    t0 = time.perf_counter()
    z = store.read_npz(run.dir / "traps.npz")
    steps0 = _load_indicators(run, run.seeds[0]).steps
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
            f = stats.fit_power_law(x, n_bootstrap=cfg["stats.n_bootstrap"], seed=cfg["run.seed"], progress=progress)
        except ValueError as exc:
            fits[name] = {"skipped": str(exc)}
            continue
        fits[name] = f.to_dict() | {"verdict": f.verdict()}
    store.write_json(run.dir / "stats.json", fits)
    run.stage_done("stats", time.perf_counter() - t0)
    return fits


def stage_report(run: Run) -> str:
    from .report import write_report

    t0 = time.perf_counter()
    text = write_report(run)
    run.stage_done("report", time.perf_counter() - t0)
    return text


# ------------------------------------------------------------------------------- aging ------
def aging_nets(cfg: dict[str, Any], ds: datamod.Dataset) -> dict[str, MLP]:
    """The networks of the aging analysis, by name ('100-100'), input/output widths from the data."""
    return {"-".join(map(str, h)): MLP([ds.n_features, *h, ds.n_classes], cfg["model.activation"], cfg["model.loss"],
                                       cfg["model.output"]) for h in cfgmod.hidden_widths(cfg)}


def stage_aging(run: Run, ds: datamod.Dataset, progress: bool | None) -> None:
    """One aging run per network, each checkpointed and resumable to identical results."""
    from .aging import default_grids, run_aging

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


def execute_aging(run: Run, progress: bool | None = None) -> str:
    """Run (or resume) the aging analysis; returns the short summary."""
    from .report import write_aging_report

    cfg = run.cfg
    t_all = time.perf_counter()
    ds = stage_data(run)
    log(f"data: {ds!r}")
    stage_aging(run, ds, progress)
    t0 = time.perf_counter()
    summary = write_aging_report(run, aging_nets(cfg, ds))
    run.stage_done("report", time.perf_counter() - t0)
    run.manifest["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    run.manifest["wall_seconds_last_session"] = round(time.perf_counter() - t_all, 2)
    run.save_manifest()
    return summary


def execute(run: Run, progress: bool | None = None) -> str:
    """Run (or resume) every stage of the run's analysis; returns the short summary."""
    cfg = run.cfg
    if cfg["run.threads"]:
        backend.set_num_threads(cfg["run.threads"])
    run.manifest["backend_resolved"] = backend.resolve(cfg["run.backend"])
    run.manifest["analysis"] = cfg.get("analysis", "traps")
    run.save_manifest()
    if cfg.get("analysis", "traps") == "aging":
        return execute_aging(run, progress)
    t_all = time.perf_counter()
    ds = stage_data(run)
    log(f"data: {ds!r}")
    stage_outer(run, ds, progress)
    stage_inner(run, ds, progress)
    stage_indicators(run)
    stage_traps(run)
    stage_stats(run, progress)
    summary = stage_report(run)
    run.manifest["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    run.manifest["wall_seconds_last_session"] = round(time.perf_counter() - t_all, 2)
    run.save_manifest()
    return summary
