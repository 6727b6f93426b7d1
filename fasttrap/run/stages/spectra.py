"""The stages of the spectra analysis: data → training on real and on random labels → ESDs → report.

The question (the WeightWatcher authors' draft on "funneled" landscapes): does the empirical spectral
density of the data-dependent Jacobian separate a network trained on real labels from one trained on
random labels, and by how much? The design:

* **Paired conditions.** For each seed, the same initial weights and the same batch order train the
  net twice on the first ``spectra.train_rows`` training images: once with their real labels, once
  with random labels drawn once (uniform over the classes, from ``run.seed``), fixed for every seed
  (the draft's "fixed random labels").
* **The same training loss.** Both are trained until the training loss on that subset is at most
  ``spectra.target_loss``: the checkpoint *end*. *mid* is the first evaluation below
  √(initial loss × target), *init* is step 0. The loss is evaluated every ``spectra.check_every``
  steps; a seed that does not reach the target in ``spectra.max_steps`` keeps its last point as
  *end* and is flagged.
* **The same inputs.** At every checkpoint: the Jacobian ESD (:func:`fasttrap.jacobian_esd`) on the
  first ``spectra.esd_rows`` training inputs and on as many test inputs; the Hessian's top
  ``spectra.hessian_k`` eigenvalues (Lanczos) and its SLQ density on the training subset with the
  labels the net was trained on.

Tasks: one training task per label kind (``spectra/train_<label>.npz``) and one ESD task per label
kind and seed (``spectra/esd_<label>_seed<s>.npz`` with its metrics in a ``.json`` beside it). Each
writes its file atomically and is skipped on resume; any executor gives the same bytes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...analysis.esd import esd_metrics
from ...common import store
from ...common.progress import Progress
from ...dynamics.outer import outer_sgd
from ...linalg.spectra import hessian_density, hessian_eigs, jacobian_esd
from ...model import data as datamod
from ...model import rng as rngmod
from ...ops import evaluate
from ..executor import Task, run_analysis, run_tasks
from ..report.spectra import CHECKPOINTS, INPUTS, LABELS, n_spikes, write_spectra_report  # noqa: F401
from ..rundir import Run, log
from .data import mlp_of


def random_labels(cfg: dict[str, Any], ds: datamod.Dataset) -> np.ndarray:
    """The fixed random labels of the training subset: uniform over the classes, from ``run.seed``."""
    g = np.random.default_rng(rngmod.stream_id(int(cfg["run.seed"]), "labels"))
    return g.integers(0, ds.n_classes, size=cfg["spectra.train_rows"]).astype(np.int64)


def study_data(cfg: dict[str, Any], ds: datamod.Dataset, label: str) -> datamod.Dataset:
    """The training subset with ``label`` labels ('real' or 'random'), and the first esd_rows test images."""
    n = cfg["spectra.train_rows"]
    if n > len(ds.y_train):
        from ..rundir import RunError

        raise RunError(f"spectra.train_rows ({n}) exceeds the {len(ds.y_train)} training images of {ds.name}")
    y = ds.y_train[:n] if label == "real" else random_labels(cfg, ds)
    m = cfg["spectra.esd_rows"]
    return datamod.Dataset(ds.X_train[:n], y, ds.X_test[:m], ds.y_test[:m], ds.name, ds.normalize, ds.n_classes,
                           dict(ds.info, labels=label))


def train_label(run: Run, ds: datamod.Dataset, label: str, bar: Any = None, offset: int = 0) -> dict[str, Any]:
    """One task: train every seed on ``label`` labels to the target loss, keeping θ at init, mid and end."""
    cfg = run.cfg
    mlp = mlp_of(cfg)
    d = study_data(cfg, ds, label)
    seeds = run.seeds
    S, every, max_steps = len(seeds), cfg["spectra.check_every"], cfg["spectra.max_steps"]
    target = cfg["spectra.target_loss"]
    t0 = time.perf_counter()
    own = not isinstance(bar, Progress)
    prog = Progress(max_steps, f"training ({label} labels)", "step", enabled=bar) if own else bar
    # [S, P] the initial weights, as outer_sgd draws them: the same for both label kinds (the pairing)
    theta = np.stack([mlp.init(1, int(s), np.float32)[0] for s in seeds])
    L, A, _ = evaluate(mlp, theta, d.X_train, d.y_train, backend=cfg["run.backend"])
    mid_level = np.sqrt(np.maximum(L.astype(np.float64), target) * target)
    ck = np.zeros((S, len(CHECKPOINTS), mlp.n_params), dtype=np.float32)
    ck_step = np.full((S, len(CHECKPOINTS)), -1, dtype=np.int64)
    ck[:, 0], ck_step[:, 0] = theta, 0
    steps, losses, accs = [0], [L.astype(np.float64)], [A.astype(np.float64)]
    t = 0
    try:
        while t < max_steps and (ck_step[:, 2] < 0).any():
            nxt = min(t + every, max_steps)
            res = outer_sgd(mlp, d, seeds, lr=cfg["outer.lr"], batch_size=cfg["outer.batch_size"], steps=nxt,
                            start=t, theta0=theta, record=[nxt], curve_points=0, backend=cfg["run.backend"],
                            progress=False)
            theta, t = res.thetas[:, 0].copy(), nxt
            L, A, _ = evaluate(mlp, theta, d.X_train, d.y_train, backend=cfg["run.backend"])
            steps.append(t), losses.append(L.astype(np.float64)), accs.append(A.astype(np.float64))
            for c, level in ((1, mid_level), (2, np.full(S, target))):
                hit = (ck_step[:, c] < 0) & (L <= level)
                ck[hit, c], ck_step[hit, c] = theta[hit], t
            prog.update_to(offset + t, loss=f"{float(L.max()):.3g}")
    finally:
        if own:
            prog.close()
    reached = ck_step[:, 2] >= 0
    for c in (1, 2):                   # a seed that missed a level keeps its last point there, flagged
        miss = ck_step[:, c] < 0
        ck[miss, c], ck_step[miss, c] = theta[miss], t
    test_loss, test_acc, _ = evaluate(mlp, ck.reshape(-1, mlp.n_params), d.X_test, d.y_test, backend=cfg["run.backend"])
    ck_train = [evaluate(mlp, ck[:, c], d.X_train, d.y_train, backend=cfg["run.backend"])[:2] for c in range(3)]
    store.write_npz(run.dir / "spectra" / f"train_{label}.npz", theta=ck, step=ck_step, reached=reached,
                    curve_steps=np.asarray(steps), curve_loss=np.stack(losses, axis=1), curve_acc=np.stack(accs, axis=1),
                    train_loss=np.stack([c[0] for c in ck_train], axis=1).astype(np.float64),
                    train_acc=np.stack([c[1] for c in ck_train], axis=1).astype(np.float64),
                    test_loss=np.asarray(test_loss, np.float64).reshape(S, 3),
                    test_acc=np.asarray(test_acc, np.float64).reshape(S, 3), labels=d.y_train)
    if not reached.all():
        log(f"spectra: {int((~reached).sum())} seed(s) on {label} labels did not reach training loss {target} "
            f"in {max_steps} steps")
    return {"seconds": round(time.perf_counter() - t0, 3), "steps": int(t)}


def esd_seed(run: Run, ds: datamod.Dataset, label: str, i: int, bar: Any = None, offset: int = 0) -> dict[str, Any]:
    """One task: every spectrum of seed index ``i`` on ``label`` labels at the three checkpoints."""
    cfg = run.cfg
    mlp = mlp_of(cfg)
    d = study_data(cfg, ds, label)
    tr = store.read_npz(run.dir / "spectra" / f"train_{label}.npz")
    be, m = cfg["run.backend"], cfg["spectra.esd_rows"]
    Xtr, ytr = np.asarray(d.X_train, np.float64), d.y_train
    inputs = {"train": Xtr[:m], "test": np.asarray(d.X_test, np.float64)}
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    metrics: dict[str, Any] = {"label": label, "seed": run.seeds[i], "checkpoints": {}}
    spikes = n_spikes(cfg, ds)
    for c, name in enumerate(CHECKPOINTS):
        th = tr["theta"][i, c][None].astype(np.float64)
        row: dict[str, Any] = {"step": int(tr["step"][i, c])}
        for inp, X in inputs.items():
            ev = jacobian_esd(mlp, th, X, backend=be)[0]
            out[f"jac_{inp}_{name}"] = ev
            dim = min(X.shape[0], mlp.n_out * mlp.n_in)
            row[f"jacobian_{inp}"] = esd_metrics(ev, n_spikes=spikes, dim=dim).to_dict()
        top = hessian_eigs(mlp, th, Xtr, ytr, k=cfg["spectra.hessian_k"], backend=be)
        dens = hessian_density(mlp, th, Xtr, ytr, probes=cfg["spectra.hessian_probes"],
                               steps=min(cfg["spectra.hessian_steps"], mlp.n_params), seed=run.seeds[i], backend=be)
        out[f"hess_top_{name}"], out[f"hess_res_{name}"] = top.values[0], top.residuals[0]
        out[f"hess_nodes_{name}"], out[f"hess_weights_{name}"] = dens.nodes[0], dens.weights[0]
        lam_min = float(np.min(dens.nodes[0][dens.weights[0] > 0])) if (dens.weights[0] > 0).any() else float("nan")
        row["hessian"] = {"lambda_max": float(top.values[0, 0]), "top": [float(v) for v in top.values[0]],
                          "residual_max": float(np.nanmax(top.residuals[0])), "trace": float(dens.trace[0]),
                          "lambda_min_slq": lam_min}
        metrics["checkpoints"][name] = row
        if isinstance(bar, Progress):
            bar.update_to(offset + c + 1)
    stem = run.dir / "spectra" / f"esd_{label}_seed{run.seeds[i]}"
    store.write_json(stem.with_suffix(".json"), metrics)
    store.write_npz(stem.with_suffix(".npz"), **out)           # written last: its presence marks the task done
    return {"seconds": round(time.perf_counter() - t0, 3)}


def stage_train(run: Run, ds: datamod.Dataset, progress: bool | None, executor: Any) -> None:
    todo = [Task(f"spectra-train-{lab}", train_label, (lab,), run.dir / "spectra" / f"train_{lab}.npz", 0)
            for lab in LABELS]
    todo = [t for t in todo if not t.output.exists()]
    if not todo:
        return
    shown = progress if executor.name == "local" else Progress(len(todo), "training runs", "label kind", enabled=progress)
    for t, entry in executor.run(run, ds, todo, shown):
        run.stage_done(f"spectra_train_{t.args[0]}", entry["seconds"], steps=entry["steps"])


def stage_esd(run: Run, ds: datamod.Dataset, progress: bool | None, executor: Any) -> None:
    todo = [Task(f"spectra-esd-{lab}-{s}", esd_seed, (lab, i), run.dir / "spectra" / f"esd_{lab}_seed{s}.npz",
                 len(CHECKPOINTS)) for lab in LABELS for i, s in enumerate(run.seeds)]
    todo = [t for t in todo if not t.output.exists()]
    if not todo:
        return
    t0 = time.perf_counter()
    run_tasks(executor, run, ds, todo, "spectra", "checkpoint", progress)
    run.stage_done("spectra_esd", time.perf_counter() - t0, tasks=len(todo))


def execute(run: Run, progress: bool | None = None) -> str:
    """Run (or resume) the spectra analysis; returns the short summary."""
    return run_analysis(run, progress, [stage_train, stage_esd], write_spectra_report)
