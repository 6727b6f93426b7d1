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

from . import _loader, backend as _backend, kernels, rng
from ._validate import check_float, check_float_array, check_int, check_labels, check_mlp, check_theta
from .data import Dataset
from .mlp import MLP
from .progress import Progress

STATUS_NAMES = np.array(["running", "converged", "max_steps", "diverged", "nonfinite", "interrupted"])


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
                  progress: bool | None | Progress = True, progress_offset: int = 0) -> InnerResult:
    """Run K inner descents on G = ½‖∇L‖² from the rows of θ0.

    Args:
        mlp: the network.
        theta0: [K, P] start points (float32 or float64; the run keeps that dtype).
        data: a :class:`Dataset` (its training set) or a tuple (X [N, n0], y [N]).
        epochs: length in epochs (``steps`` = epochs × ceil(N / batch_size)); give this or ``steps``.
        steps: length in steps (for ``method="gd"`` one step is one full-batch step).
        lr: learning rate, a scalar or one per model [K].
        batch_size: minibatch size; the last batch of an epoch is shorter unless ``drop_last``.
        seed: seed of the batch order (stream ``(seed, "inner", index)``).
        batches: ``"shared"`` (common random numbers, the default) or ``"independent"``.
        method: ``"sgd"`` (minibatch G) or ``"gd"`` (full-batch G: one pass for ∇L, one for H∇L).
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
            or an existing :class:`fasttrap.progress.Progress` to advance (from ``progress_offset``).
        progress_offset: where this call's model-steps start on a shared bar.

    Returns:
        :class:`InnerResult`.
    """
    check_mlp(mlp)
    th0 = check_theta(mlp, theta0, "theta0")
    K, dt = th0.shape[0], th0.dtype
    if isinstance(data, Dataset):
        X, y = data.X_train, data.y_train
    elif isinstance(data, tuple) and len(data) == 2:
        X, y = data
    else:
        raise TypeError(f"data: expected a fasttrap.data.Dataset or a tuple (X, y), got {type(data).__name__}")
    X = check_float_array(X, "data X", dt)
    if X.ndim != 2 or X.shape[1] != mlp.n_in or X.shape[0] < 1:
        raise ValueError(f"data: X must have shape [N, {mlp.n_in}] with N >= 1, got {list(X.shape)}")
    if not np.isfinite(X.sum()) and not np.isfinite(X).all():
        raise ValueError("data: X contains NaN or infinite values")
    y = check_labels(mlp, y, (X.shape[0],), "data y")
    N = X.shape[0]
    if batches not in ("shared", "independent"):
        raise ValueError(f"batches: expected 'shared' or 'independent', got {batches!r}")
    if method not in ("sgd", "gd"):
        raise ValueError(f"method: expected 'sgd' or 'gd', got {method!r}")
    batch_size = check_int(batch_size, "batch_size", lo=1)
    if method == "sgd" and batch_size > N:
        raise ValueError(f"batch_size: {batch_size} is larger than the data set ({N} rows)")
    if method == "sgd" and drop_last and N // batch_size < 1:
        raise ValueError("batch_size: drop_last leaves no batch")
    spe = 1 if method == "gd" else rng.steps_per_epoch(N, batch_size, drop_last)
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs and steps")
    if steps is None:
        epochs = check_float(epochs, "epochs", lo=0)
        n_steps = int(round(epochs * spe))
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
    if record_every is None:
        record_every = max(1, n_steps // 1000)
    record_every = check_int(record_every, "record_every", lo=1)
    if not isinstance(evaluate, bool):
        raise TypeError(f"evaluate: expected a bool, got {type(evaluate).__name__}")

    be = _backend.resolve(backend)
    if batches == "shared":
        streams = np.full(K, rng.stream_id(seed, "inner", 0), dtype=np.uint64)
    else:
        streams = np.array([rng.stream_id(seed, "inner", index_offset + k) for k in range(K)], dtype=np.uint64)
    lr_d = lr_arr.astype(dt)
    args = dict(batch_size=batch_size, steps=n_steps, shared=batches == "shared", streams=streams,
                drop_last=bool(drop_last), full_batch=method == "gd", eval_block=1024, G_tol=G_tol,
                growth=growth, record_every=record_every)
    prog = np.zeros(4, dtype=np.int64)
    total = K * n_steps
    own_bar = not isinstance(progress, Progress)
    bar = Progress(total, f"inner descent ({K} models, {method})", "model-step", enabled=progress) if own_bar else progress
    off = 0 if own_bar else int(progress_offset)
    t0 = time.perf_counter()
    try:
        if be == "torch":
            from . import reference

            out = reference.inner_descent(mlp, th0, X, y, lr_d, **args)
        elif be == "cuda":
            from . import cuda as _cuda

            out = _run_in_thread(lambda: _cuda.inner_descent(mlp, th0, X, y, lr_d, progress=prog, **args), prog, bar, K, off)
        else:
            core = _loader.core
            out = _run_in_thread(lambda: core.inner_descent(*mlp.codes, th0, X, y, lr_d, progress=prog,
                                                            threads=_backend.get_num_threads(),
                                                            chunk=_backend.get_chunk(), **args), prog, bar, K, off)
    finally:
        if own_bar:
            bar.close()
    seconds = time.perf_counter() - t0
    status = STATUS_NAMES[np.asarray(out["status"], dtype=np.int64)]
    theta = np.asarray(out["theta"])
    n_rec = out["G_trace"].shape[1]
    train = {k: np.full(K, np.nan) for k in ("loss", "G", "acc")}
    if evaluate:
        ok = np.flatnonzero(np.isfinite(theta).all(axis=1))
        if ok.size:
            Xe, ye = X[:eval_rows], y[:eval_rows]
            loss, acc, g = kernels.evaluate(mlp, theta[ok], Xe, ye, True, backend=be if be != "torch" else "torch")
            g = np.asarray(g, dtype=np.float64)
            train["loss"][ok] = np.asarray(loss, dtype=np.float64)
            train["acc"][ok] = np.asarray(acc, dtype=np.float64)
            train["G"][ok] = 0.5 * (g * g).sum(1)
    return InnerResult(theta=theta, status=status, steps_done=np.asarray(out["steps_done"]),
                       G_trace=np.asarray(out["G_trace"]), trace_steps=np.arange(n_rec) * record_every,
                       G_start=np.asarray(out["G_first"]), G_last=np.asarray(out["G_last"]),
                       train_loss=train["loss"], train_G=train["G"], train_acc=train["acc"], seconds=seconds,
                       model_steps=int(np.asarray(out["steps_done"]).sum()),
                       settings=dict(args, lr=lr_arr, method=method, batches=batches, seed=seed, backend=be,
                                     streams=None, index_offset=index_offset))
