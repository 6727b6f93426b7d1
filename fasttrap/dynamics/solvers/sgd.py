"""Descent on G = ½‖∇L‖² by minibatch (:class:`SGD`) or full-batch (:class:`GD`) gradient steps.

∇G = H∇L: one pass for ∇L, one for the Hessian-vector product, per step. The whole loop runs in the
compiled core with the GIL released; :func:`run_loop` runs it in a worker thread and feeds a
progress bar (model-steps/s) from counters the core updates, so Python is never called per step.

Common random numbers (the default, ``batches="shared"``): all K runs see the same minibatch
sequence, so the endpoints of neighbouring outer points differ only by where they started, not by
the noise they met, which is what the trap analysis compares; it also lets layer 1 of all models run
as one shared-input GEMM. ``batches="independent"`` gives each start point its own stream.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ... import ops
from ...common.progress import Progress
from ...linalg.hessian import lambda_max
from ...model import rng
from ...ops.validate import check_bool, check_float, check_int
from ..stepsize import auto_lr
from .base import Budget, Outcome


def _check_lr(lr: Any) -> None:
    if isinstance(lr, str):
        if lr != "auto":
            raise ValueError(f"lr: expected a number, one per model, or 'auto', got {lr!r}")
        return
    a = np.asarray(lr, dtype=np.float64)
    if a.ndim > 1:
        raise ValueError(f"lr: expected a scalar or one per model [K], got shape {list(a.shape)}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError("lr: learning rates must be finite and > 0")


def _lr_for(lr: Any, K: int) -> np.ndarray:
    a = np.asarray(lr, dtype=np.float64)
    a = np.full(K, float(a)) if a.ndim == 0 else a
    if a.shape != (K,):
        raise ValueError(f"lr: expected a scalar or shape [{K}], got {list(a.shape)}")
    return a


@dataclass(frozen=True, eq=False)
class SGD:
    """Minibatch gradient descent on G.

    Attributes:
        lr: learning rate: a scalar, one per model [K], or ``"auto"``: lr = lr_c/λ_max² per start
            point, λ_max(H) by 20 Lanczos steps on the first ``lr_rows`` rows
            (:mod:`fasttrap.dynamics.stepsize`: descent on G is linearly stable for lr < 2/λ_max²).
        batch_size: minibatch size; the last batch of an epoch is shorter unless ``drop_last``.
        batches: ``"shared"`` (common random numbers) or ``"independent"`` (one stream per model).
        drop_last: drop the short last batch of each epoch.
        lr_c, lr_rows: the constant and the rows of ``lr="auto"``.
    """

    lr: Any = 0.01
    batch_size: int = 128
    batches: str = "shared"
    drop_last: bool = False
    lr_c: float = 1.0
    lr_rows: int = 2048

    name: ClassVar[str] = "sgd"
    checkpoints: ClassVar[bool] = True
    full_batch: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_lr(self.lr)
        if self.batches not in ("shared", "independent"):
            raise ValueError(f"batches: expected 'shared' or 'independent', got {self.batches!r}")
        check_int(self.batch_size, "batch_size", lo=1)
        check_bool(self.drop_last, "drop_last")
        check_float(self.lr_c, "lr_c", positive=True)
        check_int(self.lr_rows, "lr_rows", lo=1)

    def check(self, K: int, N: int) -> None:
        if not isinstance(self.lr, str):
            _lr_for(self.lr, K)
        if self.full_batch:
            return
        if self.batch_size > N:
            raise ValueError(f"batch_size: {self.batch_size} is larger than the data set ({N} rows)")
        if self.drop_last and N // self.batch_size < 1:
            raise ValueError("batch_size: drop_last leaves no batch")

    def steps_per_epoch(self, N: int) -> int:
        return 1 if self.full_batch else rng.steps_per_epoch(N, self.batch_size, self.drop_last)

    def run(self, model: Any, theta0: np.ndarray, X: np.ndarray, y: np.ndarray, budget: Budget, *,
            backend: str, progress: bool | None | Progress, progress_offset: int = 0) -> Outcome:
        K = theta0.shape[0]
        lam = None
        if isinstance(self.lr, str):
            lam = lambda_max(model, theta0, X[:self.lr_rows], y[:self.lr_rows], backend=backend)
            lr = auto_lr(lam, self.lr_c)
        else:
            lr = _lr_for(self.lr, K)
        if self.batches == "shared":
            streams = np.full(K, rng.stream_id(budget.seed, "inner", 0), dtype=np.uint64)
        else:
            streams = np.array([rng.stream_id(budget.seed, "inner", budget.index_offset + k) for k in range(K)],
                               dtype=np.uint64)
        loop = dict(batch_size=X.shape[0] if self.full_batch else self.batch_size, steps=budget.steps,
                    shared=self.batches == "shared", streams=streams, drop_last=self.drop_last,
                    full_batch=self.full_batch, eval_block=1024, G_tol=budget.G_tol, growth=budget.growth,
                    record_every=budget.record_every, snap_steps=budget.snap_steps)
        out, seconds = run_loop(model, theta0, X, y, lr, loop, backend, progress, progress_offset, self.name)
        settings = dict(lr=lr, lambda_max=lam, batches=self.batches, batch_size=loop["batch_size"],
                        drop_last=self.drop_last, shared=loop["shared"], full_batch=self.full_batch)
        return Outcome(out=out, seconds=seconds, record_every=budget.record_every, settings=settings)

    @classmethod
    def from_settings(cls, s: dict[str, Any], *, lr: Any) -> SGD:
        """From the main job's ``inner.*`` settings and the lr the stage chose (a scalar or one per model)."""
        return cls(lr=lr, batch_size=s["inner.batch_size"], batches=s["inner.batches"])


@dataclass(frozen=True, eq=False)
class GD(SGD):
    """Full-batch gradient descent on G: one pass for ∇L, one for H∇L over all N rows per step.

    Attributes as :class:`SGD`; ``batch_size``, ``batches`` and ``drop_last`` play no part.
    """

    name: ClassVar[str] = "gd"
    full_batch: ClassVar[bool] = True


def run_loop(model: Any, th0: np.ndarray, X: np.ndarray, y: np.ndarray, lr: np.ndarray, loop: dict[str, Any],
             backend: str, progress: bool | None | Progress, progress_offset: int, what: str
             ) -> tuple[dict[str, np.ndarray], float]:
    """The compiled descent loop on ``backend`` in a worker thread, feeding a progress bar; (result, seconds)."""
    K = th0.shape[0]
    prog = np.zeros(4, dtype=np.int64)
    own_bar = not isinstance(progress, Progress)
    bar = (Progress(K * loop["steps"], f"inner descent ({K} models, {what})", "model-step", enabled=progress)
           if own_bar else progress)
    off = 0 if own_bar else int(progress_offset)
    lr_d = lr.astype(th0.dtype)
    t0 = time.perf_counter()
    try:
        out = _run_in_thread(lambda: ops.descent_loop(model, th0, X, y, lr_d, progress=prog, backend=backend, **loop),
                             prog, bar, off)
    finally:
        if own_bar:
            bar.close()
    return out, time.perf_counter() - t0


def _run_in_thread(fn: Any, progress_arr: np.ndarray, bar: Progress, offset: int = 0) -> Any:
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
