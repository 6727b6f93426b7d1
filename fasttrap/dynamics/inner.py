"""Batched inner descent on G = ½‖∇L‖² from K start points, with the whole loop in the core.

From each start point θ0[k], minibatch gradient descent on G (∇G = H∇L) runs for a fixed number of
steps or until the model stops on its own (converged, diverged, non-finite). The loop runs inside
the compiled core with the GIL released; this module runs it in a worker thread and shows a
progress bar (model-steps/s) fed by counters the core updates, so Python is never called per step.

Common random numbers (the default, ``batches="shared"``): all K runs see the same minibatch
sequence. The endpoints of neighbouring outer points then differ only by where they started, not by
the noise they met, which is what the trap analysis compares; it also lets layer 1 of all models run
as one shared-input GEMM. ``batches="independent"`` gives each start point its own stream.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import ops
from ..model import rng
from ..ops import resolve_for
from ..ops.validate import check_dataset, check_float, check_int, check_model, check_theta
from .stepsize import auto_lr
from ..linalg.hessian import lambda_max
from .newton import newton_mr

METHODS = ("sgd", "gd", "newton_mr", "sgd+newton_mr")
from ..model.data import Dataset
from ..model.mlp import MLP
from ..common.progress import Progress

STATUS_NAMES = np.array(["running", "converged", "max_steps", "diverged", "nonfinite", "interrupted",
                         "line_search_failed"])


@dataclass
class InnerResult:
    """Endpoints and records of K inner descents.

    Attributes:
        theta: [K, P] the endpoints θ*.
        status: [K] one of "converged", "max_steps", "diverged", "nonfinite" ("interrupted" only
            if the run was stopped).
        steps_done: [K] updates applied.
        G_trace: [K, T'] minibatch G every ``record_every`` steps (NaN after a model stopped).
        trace_steps: [T'] the steps of G_trace's columns.
        G_start: [K] minibatch G at the first step.
        G_last: [K] minibatch G at the last step evaluated.
        train_loss, train_G, train_acc: [K] on the full training set at θ* (NaN where θ* is not
            finite, or when evaluation was switched off).
        seconds: wall time of the descent (not the evaluation); model_steps: updates in total.
        checkpoint_steps: [J] the steps of the checkpoints (empty without ``checkpoints``).
        checkpoint_theta: [J, K, P] θ after checkpoint_steps[j] updates (a model that stopped
            earlier gives its endpoint; NaN where an interruption cut the run short).
        checkpoint_loss, checkpoint_G, checkpoint_acc: [J, K] on the evaluation rows, as train_*.
    """

    theta: np.ndarray
    status: np.ndarray
    steps_done: np.ndarray
    G_trace: np.ndarray
    trace_steps: np.ndarray
    G_start: np.ndarray
    G_last: np.ndarray
    train_loss: np.ndarray
    train_G: np.ndarray
    train_acc: np.ndarray
    seconds: float
    model_steps: int
    settings: dict = field(default_factory=dict)
    checkpoint_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    checkpoint_theta: np.ndarray | None = None
    checkpoint_loss: np.ndarray | None = None
    checkpoint_G: np.ndarray | None = None
    checkpoint_acc: np.ndarray | None = None

    @property
    def model_steps_per_s(self) -> float:
        return self.model_steps / self.seconds if self.seconds > 0 else float("nan")

    def counts(self) -> dict[str, int]:
        names, n = np.unique(self.status, return_counts=True)
        return {str(a): int(b) for a, b in zip(names, n)}


def _run_in_thread(fn, progress_arr: np.ndarray, bar: Progress, K: int, offset: int = 0) -> Any:
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["out"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["err"] = exc

    th = threading.Thread(target=work, name="fasttrap-inner", daemon=True)
    th.start()
    try:
        while th.is_alive():
            th.join(0.2)
            bar.update_to(offset + int(progress_arr[1]), active=int(progress_arr[3]))
    except KeyboardInterrupt:
        progress_arr[2] = 1          # the core stops at the end of the step
        th.join()
        raise
    bar.update_to(offset + int(progress_arr[1]))
    if "err" in box:
        raise box["err"]
    return box["out"]


def inner_descent(mlp: MLP, theta0: Any, data: Dataset | tuple[Any, Any], *, epochs: float | None = None,
                  steps: int | None = None, lr: Any = 0.01, batch_size: int = 128, seed: int = 0,
                  batches: str = "shared", method: str = "sgd", record_every: int | None = None,
                  G_tol: float = 5e-11, growth: float = 1e8, drop_last: bool = False, evaluate: bool = True,
                  eval_rows: int | None = None, index_offset: int = 0, backend: str = "auto",
                  progress: bool | None | Progress = True, progress_offset: int = 0, polish_steps: int = 20,
                  minres_tol: float = 1e-8, minres_iters: int = 60, alpha0: float = 1.0, lr_c: float = 1.0,
                  lr_rows: int = 2048, checkpoints: Any = ()) -> InnerResult:
    """Run K inner descents on G = ½‖∇L‖² from the rows of θ0.

    Args:
        mlp: the network: a :class:`fasttrap.MLP` (the compiled core) or a :class:`fasttrap.TorchModel`
            (any module, on the torch path: the twin's loop on torch.func ops, on the GPU where torch
            sees one).
        theta0: [K, P] start points (float32 or float64; the run keeps that dtype).
        data: a :class:`Dataset` (its training set) or a tuple (X [N, n0], y [N]); for a TorchModel X may
            also be [N, *input_shape].
        epochs: length in epochs (``steps`` = epochs × ceil(N / batch_size)); give this or ``steps``.
        steps: length in steps (for ``method="gd"`` one step is one full-batch step).
        lr: learning rate, a scalar, one per model [K], or ``"auto"``: lr = lr_c/λ_max² per start
            point, λ_max(H) by 20 Lanczos steps on the first ``lr_rows`` rows
            (:mod:`fasttrap.dynamics.stepsize`: descent on G is linearly stable for lr < 2/λ_max²).
        batch_size: minibatch size; the last batch of an epoch is shorter unless ``drop_last``.
        seed: seed of the batch order (stream ``(seed, "inner", index)``).
        batches: ``"shared"`` (common random numbers, the default) or ``"independent"``.
        method: ``"sgd"`` (minibatch G), ``"gd"`` (full-batch G: one pass for ∇L, one for H∇L),
            ``"newton_mr"`` (Newton-MR on the full-batch loss, :mod:`fasttrap.dynamics.newton`: each
            step is one Newton iteration, float64; attracted to any critical point, which is what a
            trap search wants) or ``"sgd+newton_mr"`` (the SGD descent, then ``polish_steps``
            Newton-MR iterations from each finite endpoint: the basin is SGD's, the endpoint a
            certifiable point).
        record_every: G is recorded every this many steps (default: about 1000 points).
        G_tol: a model has converged when G < G_tol. The default 5e-11 is ‖∇L‖² < 1e-10, the
            tolerance of the critical-point literature.
        growth: a model has diverged when G > growth × G(start). 0 disables the check. The default
            1e8 flags only runaway growth: on MNIST, descents that recovered were seen to pass
            through transient spikes of G of 2·10⁴ × G(start) (catapult-like), which a tighter
            limit would wrongly call divergence.
        drop_last: drop the short last batch of each epoch.
        evaluate: compute loss, G and accuracy on the full training set at θ*.
        eval_rows: evaluate on the first ``eval_rows`` training rows only (None: all).
        index_offset: with independent batches, model k draws stream index ``index_offset + k``.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch`` (the twin: same batches, same rules).
        progress: a progress bar with model-steps/s (None: log lines off a terminal; False: silent),
            or an existing :class:`fasttrap.common.progress.Progress` to advance (from ``progress_offset``).
        progress_offset: where this call's model-steps start on a shared bar.
        polish_steps: Newton-MR iterations of ``"sgd+newton_mr"``.
        minres_tol, minres_iters: MINRES tolerance and step cap of each Newton-MR iteration.
        alpha0: first trial step of Newton-MR's Armijo line search (1: the Newton step).
        lr_c, lr_rows: the constant and the rows of ``lr="auto"``.
        checkpoints: fractions of the budget in (0, 1) (e.g. ``(0.25, 0.5, 0.75)``) at which every
            model's θ is also kept, at no extra descent: the loop copies it out as it passes
            (``InnerResult.checkpoint_*``, evaluated like the endpoints). Each fraction becomes the
            step round(f × steps) (at least 1); SGD and GD only (for ``"sgd+newton_mr"``, of the SGD part).

    Returns:
        :class:`InnerResult`.
    """
    check_model(mlp)
    be = resolve_for(mlp, backend)
    th0 = check_theta(mlp, theta0, "theta0")
    X, y = _training_set(mlp, data, th0.dtype)
    lam = None
    if isinstance(lr, str):
        if lr != "auto":
            raise ValueError(f"lr: expected a number, one per model, or 'auto', got {lr!r}")
        lr_rows = check_int(lr_rows, "lr_rows", lo=1)
        lam = lambda_max(mlp, th0, X[:lr_rows], y[:lr_rows], backend=be)
        lr = auto_lr(lam, check_float(lr_c, "lr_c", positive=True))
    cfg = _settings(th0.shape[0], X.shape[0], epochs=epochs, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                    batches=batches, method=method, record_every=record_every, G_tol=G_tol, growth=growth,
                    drop_last=drop_last, index_offset=index_offset)
    if not isinstance(evaluate, bool):
        raise TypeError(f"evaluate: expected a bool, got {type(evaluate).__name__}")
    snap_steps = checkpoint_steps(checkpoints, cfg["loop"]["steps"])
    if snap_steps.size and method == "newton_mr":
        raise ValueError("checkpoints: not available for method='newton_mr' (each step is a Newton iteration)")
    cfg["loop"]["snap_steps"] = snap_steps
    newton_kw = dict(minres_tol=check_float(minres_tol, "minres_tol", lo=0),
                     minres_iters=check_int(minres_iters, "minres_iters", lo=1),
                     alpha0=check_float(alpha0, "alpha0", positive=True), backend=be)
    polish_steps = check_int(polish_steps, "polish_steps", lo=0)
    if method == "newton_mr":
        t0 = time.perf_counter()
        out = newton_mr(mlp, th0, X, y, steps=cfg["loop"]["steps"], G_tol=cfg["loop"]["G_tol"],
                        growth=cfg["loop"]["growth"], progress=False if isinstance(progress, Progress) else progress,
                        **newton_kw)
        seconds = time.perf_counter() - t0
        cfg["loop"]["record_every"] = 1
    else:
        out, seconds = _descend(mlp, th0, X, y, cfg, be, progress, progress_offset)
        if method == "sgd+newton_mr":
            out, extra = _polish(mlp, out, X, y, cfg, polish_steps, newton_kw)
            seconds += extra
    theta = np.asarray(out["theta"])
    train = _evaluate_endpoints(mlp, theta, X[:eval_rows], y[:eval_rows], be) if evaluate else \
        {k: np.full(len(theta), np.nan) for k in ("loss", "G", "acc")}
    snaps = np.asarray(out["snaps"]) if snap_steps.size else None
    ck = {k: np.full((snap_steps.size, len(theta)), np.nan) for k in ("loss", "G", "acc")}
    if snaps is not None and evaluate:
        for j in range(snap_steps.size):
            e = _evaluate_endpoints(mlp, snaps[j], X[:eval_rows], y[:eval_rows], be)
            for k in ck:
                ck[k][j] = e[k]
    n_rec = out["G_trace"].shape[1]
    args = {k: v for k, v in cfg["loop"].items() if k != "snap_steps"}
    return InnerResult(theta=theta, status=STATUS_NAMES[np.asarray(out["status"], dtype=np.int64)],
                       steps_done=np.asarray(out["steps_done"]),
                       G_trace=np.asarray(out["G_trace"]), trace_steps=np.arange(n_rec) * args["record_every"],
                       G_start=np.asarray(out["G_first"]), G_last=np.asarray(out["G_last"]),
                       train_loss=train["loss"], train_G=train["G"], train_acc=train["acc"], seconds=seconds,
                       model_steps=int(np.asarray(out["steps_done"]).sum()),
                       settings=dict(args, lr=cfg["lr"], method=method, batches=batches, seed=cfg["seed"], backend=be,
                                     streams=None, index_offset=cfg["index_offset"], polish_steps=polish_steps,
                                     lambda_max=lam,
                                     **{k: v for k, v in newton_kw.items() if k != "backend"},
                                     **{k: out[k] for k in ("hvps", "grad_passes", "polish_steps_done",
                                                            "polish_G_start") if k in out}),
                       checkpoint_steps=snap_steps, checkpoint_theta=snaps, checkpoint_loss=ck["loss"],
                       checkpoint_G=ck["G"], checkpoint_acc=ck["acc"])


def checkpoint_steps(checkpoints: Any, steps: int) -> np.ndarray:
    """The steps [J] of budget fractions ``checkpoints`` (each in (0, 1)) of a ``steps``-step descent.

    Each fraction f becomes round(f × steps), at least 1; fractions that land on the same step, or on
    the last step (the endpoint itself), are kept once or dropped.
    """
    if isinstance(checkpoints, (str, bytes)) or not hasattr(checkpoints, "__iter__"):
        raise TypeError(f"checkpoints: expected a sequence of fractions in (0, 1), got {checkpoints!r}")
    fr = []
    for f in checkpoints:
        if isinstance(f, bool) or not isinstance(f, (int, float, np.integer, np.floating)) or not 0 < float(f) < 1:
            raise ValueError(f"checkpoints: each must be a fraction in (0, 1), got {f!r}")
        fr.append(float(f))
    st = sorted({max(1, int(round(f * steps))) for f in fr})
    return np.array([s for s in st if s < steps], dtype=np.int64)


def _polish(mlp: MLP, out: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray, cfg: dict[str, Any], steps: int,
            newton_kw: dict[str, Any]) -> tuple[dict[str, np.ndarray], float]:
    """Newton-MR from every finite endpoint of a descent; (the merged result, seconds).

    Endpoints that diverged or left the finite numbers keep their status. The others take the
    status Newton-MR ends with; their SGD record (G_trace, G_first) is kept, the polish's own
    iterations and its start G are added as ``polish_steps_done`` and ``polish_G_start``.
    """
    theta = np.asarray(out["theta"])
    st = np.asarray(out["status"]).copy()
    ok = np.flatnonzero(np.isfinite(theta).all(1) & np.isin(st, [1, 2]))     # converged, max_steps
    res = dict(out)
    res["polish_steps_done"] = np.zeros(len(theta), np.int64)
    res["polish_G_start"] = np.full(len(theta), np.nan)
    if ok.size == 0:
        return res, 0.0
    t0 = time.perf_counter()
    nw = newton_mr(mlp, theta[ok], X, y, steps=steps, G_tol=cfg["loop"]["G_tol"], growth=cfg["loop"]["growth"],
                   **newton_kw)
    th = theta.astype(np.float64)          # a copy: the polished rows are float64
    th[ok] = nw["theta"]
    res["theta"] = th
    st[ok] = nw["status"]
    res["status"] = st
    res["polish_steps_done"][ok] = nw["steps_done"]
    res["polish_G_start"][ok] = nw["G_first"]
    g_last = np.asarray(out["G_last"], dtype=np.float64).copy()
    g_last[ok] = nw["G_last"]
    res["G_last"] = g_last
    for k in ("hvps", "grad_passes"):
        res[k] = np.zeros(len(theta), np.int64)
        res[k][ok] = nw[k]
    return res, time.perf_counter() - t0


def _training_set(mlp: MLP, data: Any, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """X [N, n0] (in θ's dtype, finite) and y [N] of a Dataset's training set or of a tuple (X, y)."""
    if isinstance(data, Dataset):
        X, y = data.X_train, data.y_train
    elif isinstance(data, tuple) and len(data) == 2:
        X, y = data
    else:
        raise TypeError(f"data: expected a fasttrap.model.data.Dataset or a tuple (X, y), got {type(data).__name__}")
    return check_dataset(mlp, X, y, dtype, name="data X")


def _settings(K: int, N: int, *, epochs: Any, steps: Any, lr: Any, batch_size: Any, seed: Any, batches: Any,
              method: Any, record_every: Any, G_tol: Any, growth: Any, drop_last: Any, index_offset: Any
              ) -> dict[str, Any]:
    """Every setting of :func:`inner_descent` checked, and the arguments of the descent loop."""
    if batches not in ("shared", "independent"):
        raise ValueError(f"batches: expected 'shared' or 'independent', got {batches!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
    batch_size = check_int(batch_size, "batch_size", lo=1)
    if method in ("sgd", "sgd+newton_mr") and batch_size > N:
        raise ValueError(f"batch_size: {batch_size} is larger than the data set ({N} rows)")
    if method in ("sgd", "sgd+newton_mr") and drop_last and N // batch_size < 1:
        raise ValueError("batch_size: drop_last leaves no batch")
    spe = 1 if method in ("gd", "newton_mr") else rng.steps_per_epoch(N, batch_size, drop_last)
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs and steps")
    if steps is None:
        n_steps = int(round(check_float(epochs, "epochs", lo=0) * spe))
    else:
        n_steps = check_int(steps, "steps", lo=0)
    seed = check_int(seed, "seed", lo=0)
    index_offset = check_int(index_offset, "index_offset", lo=0)
    lr_arr = np.asarray(lr, dtype=np.float64)
    if lr_arr.ndim == 0:
        lr_arr = np.full(K, float(lr_arr))
    if lr_arr.shape != (K,):
        raise ValueError(f"lr: expected a scalar or shape [{K}], got {list(lr_arr.shape)}")
    if not np.all(np.isfinite(lr_arr)) or np.any(lr_arr <= 0):
        raise ValueError("lr: learning rates must be finite and > 0")
    G_tol = check_float(G_tol, "G_tol", lo=0)
    growth = check_float(growth, "growth", lo=0)
    if 0 < growth <= 1:
        raise ValueError(f"growth: must be > 1 (or 0 to disable), got {growth}")
    record_every = check_int(max(1, n_steps // 1000) if record_every is None else record_every, "record_every", lo=1)
    if batches == "shared":
        streams = np.full(K, rng.stream_id(seed, "inner", 0), dtype=np.uint64)
    else:
        streams = np.array([rng.stream_id(seed, "inner", index_offset + k) for k in range(K)], dtype=np.uint64)
    loop = dict(batch_size=batch_size, steps=n_steps, shared=batches == "shared", streams=streams,
                drop_last=bool(drop_last), full_batch=method == "gd", eval_block=1024, G_tol=G_tol,
                growth=growth, record_every=record_every)
    return {"loop": loop, "lr": lr_arr, "seed": seed, "index_offset": index_offset, "method": method}


def _descend(mlp: MLP, th0: np.ndarray, X: np.ndarray, y: np.ndarray, cfg: dict[str, Any], be: str,
             progress: bool | None | Progress, progress_offset: int) -> tuple[dict[str, np.ndarray], float]:
    """The descent loop on backend ``be`` in a worker thread, feeding a progress bar; (result, seconds)."""
    K = th0.shape[0]
    prog = np.zeros(4, dtype=np.int64)
    own_bar = not isinstance(progress, Progress)
    bar = (Progress(K * cfg["loop"]["steps"], f"inner descent ({K} models, {cfg['method']})", "model-step",
                    enabled=progress) if own_bar else progress)
    off = 0 if own_bar else int(progress_offset)
    lr_d = cfg["lr"].astype(th0.dtype)
    t0 = time.perf_counter()
    try:
        out = _run_in_thread(lambda: ops.descent_loop(mlp, th0, X, y, lr_d, progress=prog, backend=be, **cfg["loop"]),
                             prog, bar, K, off)
    finally:
        if own_bar:
            bar.close()
    return out, time.perf_counter() - t0


def _evaluate_endpoints(mlp: MLP, theta: np.ndarray, X: np.ndarray, y: np.ndarray, be: str) -> dict[str, np.ndarray]:
    """Loss, G = ½‖∇L‖² and accuracy [K] on (X, y) at the finite endpoints (NaN elsewhere)."""
    train = {k: np.full(len(theta), np.nan) for k in ("loss", "G", "acc")}
    ok = np.flatnonzero(np.isfinite(theta).all(axis=1))
    if ok.size:
        loss, acc, g = ops.evaluate(mlp, theta[ok], X, y, True, backend=be)
        g = np.asarray(g, dtype=np.float64)
        train["loss"][ok] = np.asarray(loss, dtype=np.float64)
        train["acc"][ok] = np.asarray(acc, dtype=np.float64)
        train["G"][ok] = 0.5 * (g * g).sum(1)
    return train
