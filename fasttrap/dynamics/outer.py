"""The outer path: plain SGD on the loss, one model per seed, recording θ_t for the trap analysis.

Each seed has its own initialisation (``mlp.init(1, seed)``) and its own minibatch stream
(``rng.stream_id(seed, "outer")``), so any seed can be re-run alone and gives the same path.
The loop runs in Python, one compiled ``value_and_grad`` call per step for all seeds at once (a
per-model batch [S, B, n0]); with ``backend="torch"`` the same loop, with the same batches, runs on
the torch twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .. import ops
from ..model import rng
from ..ops.validate import check_float, check_int, check_model
from ..model.data import Dataset
from ..model.mlp import MLP
from ..common.progress import Progress
from . import swap


class DivergenceError(RuntimeError):
    """Outer SGD left the finite numbers (the learning rate is too large for this net and data).

    Attributes:
        step: the first step after which θ was not finite.
        seeds: the seeds that diverged.
    """

    def __init__(self, step: int, seeds: list[int], lr: float):
        self.step, self.seeds = step, seeds
        super().__init__(f"outer SGD diverged: θ of seed(s) {seeds} is no longer finite after step {step} at "
                         f"lr {lr:g}; lower the learning rate (outer.lr)")


@dataclass
class OuterResult:
    """The outer SGD runs.

    Attributes:
        thetas: [S, T, P] θ at the recorded steps (step t = after t updates; t = 0 is the init).
        steps: [T] the recorded steps.
        seeds: [S].
        curve_steps: [C] log-spaced steps at which the curves were evaluated.
        train_loss, train_acc, test_loss, test_acc: [S, C] on the full sets.
        lr, batch_size: the settings.
        moves: what the swap moves did (:class:`fasttrap.dynamics.swap.MoveLog`), or None without moves.
        alignment: [S, Σ hidden widths] the paired-swap relabelling at the end (pass it back as
            ``alignment0`` to continue the run), or None without moves.
        theta_end: [S, P] θ at the last step as the dynamics hold it (not aligned), or None without
            moves (then it equals the last recorded θ when that is the last step).
    """

    thetas: np.ndarray
    steps: np.ndarray
    seeds: np.ndarray
    curve_steps: np.ndarray
    train_loss: np.ndarray
    train_acc: np.ndarray
    test_loss: np.ndarray
    test_acc: np.ndarray
    lr: float
    batch_size: int
    moves: Any = None
    alignment: np.ndarray | None = None
    theta_end: np.ndarray | None = None

    def curves(self) -> dict[str, np.ndarray]:
        return {"step": self.curve_steps, "train_loss": self.train_loss, "train_acc": self.train_acc,
                "test_loss": self.test_loss, "test_acc": self.test_acc}


def log_spaced_steps(steps: int, n: int = 30) -> np.ndarray:
    """About n distinct integer steps in [0, steps], log-spaced, always with 0 and ``steps`` (none for n = 0)."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if steps <= 0:
        return np.array([0], dtype=np.int64)
    pts = np.unique(np.round(np.geomspace(1, steps, max(n - 1, 1))).astype(np.int64))
    return np.unique(np.concatenate([[0], pts, [steps]]))


def _record_steps(record: Any, steps: int, start: int = 0) -> np.ndarray:
    if record is None or (isinstance(record, str) and record == "all"):
        return np.arange(start, steps + 1, dtype=np.int64)
    if isinstance(record, slice):
        return np.arange(start, steps + 1, dtype=np.int64)[record]
    r = np.unique(np.asarray(record, dtype=np.int64))
    if r.size and (r.min() < start or r.max() > steps):
        raise ValueError(f"record: steps must lie in [{start}, {steps}], got {r.min()}..{r.max()}")
    return r


def outer_sgd(mlp: MLP, data: Dataset, seeds: Sequence[int] | int, *, lr: float = 0.1, batch_size: int = 128,
              steps: int = 150, record: Any = "all", curve_points: int = 30, eval_rows: int | None = None,
              dtype: Any = np.float32, backend: str = "auto", progress: bool | None | Progress = True,
              theta0: np.ndarray | None = None, start: int = 0,
              observe: Callable[[int, np.ndarray], None] | None = None, moves: Sequence[Any] | None = None,
              alignment0: np.ndarray | None = None, align: bool = True) -> OuterResult:
    """Train one model per seed with minibatch SGD on the loss, recording θ_t.

    Args:
        mlp: the network.
        data: a :class:`fasttrap.model.data.Dataset` (its training and test sets).
        seeds: the seeds (an int means ``range(seeds)``): one model each, with its own init and batches.
        lr: learning rate.
        batch_size: minibatch size (the last batch of an epoch may be shorter).
        steps: SGD steps per seed.
        record: which θ_t to keep: ``"all"`` (t = start..steps), a slice, or a list of steps (may be empty).
        curve_points: about how many log-spaced steps get full train/test loss and accuracy (0: none).
        eval_rows: evaluate the curves on the first ``eval_rows`` rows of each set (None: all).
        dtype: float32 or float64.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch`` for the gradient.
        progress: a bar on a terminal (None: log lines when not a terminal; False: silent), or an
            existing :class:`fasttrap.common.progress.Progress` to advance to the step reached.
        theta0: optional [S, P] starting points instead of ``mlp.init`` (θ at step ``start``).
        start: the step θ0 is at. Batches depend only on (seed, step), so running 0..a and then
            a..b from θ_a gives exactly the path of one run 0..b (the unit of checkpointing).
        observe: called as ``observe(t, θ_t)`` at every step t = start..steps with θ [S, P]
            (a read-only view, valid only during the call): the hook for streaming observables
            such as :class:`fasttrap.analysis.aging.TwoTimeStream`.
        moves: swap moves (:class:`fasttrap.Swap`) applied between steps, for every seed (see
            :mod:`fasttrap.dynamics.swap`); None or [] gives exactly the run without moves.
        alignment0: the paired-swap relabelling at step ``start`` (``OuterResult.alignment`` of the
            run being continued); None: none yet.
        align: record (and show ``observe``) θ in the original labelling of the hidden units, undoing
            paired swaps, which are symmetries; other moves are real changes and are never undone.

    Returns:
        :class:`OuterResult`.

    Raises:
        DivergenceError: θ of some seed stopped being finite (names the step and the seeds).
    """
    seed_list, lr, batch_size, steps, start, curve_points, dt = _settings(
        mlp, data, seeds, lr, batch_size, steps, start, theta0, observe, curve_points, dtype)
    mv = swap.check_moves(moves, mlp, data.image_shape)
    al = swap.Alignment(mlp, len(seed_list), None if alignment0 is None else np.asarray(alignment0))
    log = swap.MoveLog.empty(len(mv), len(seed_list))

    def minibatch_loss(th: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.asarray(ops.value_and_grad(mlp, th, X, y, backend=backend)[0])
    rec = _record_steps(record, steps, start)
    cs_all = log_spaced_steps(steps, curve_points)
    cs = cs_all[cs_all >= start]
    S, P, N = len(seed_list), mlp.n_params, len(data.y_train)
    theta = _initial_theta(mlp, seed_list, theta0, dt)                          # [S, P]
    Xtr = data.X_train if data.X_train.dtype == dt else data.X_train.astype(dt)
    streams = [rng.stream_id(int(s), "outer") for s in seed_list]
    caches: list[dict] = [{} for _ in seed_list]
    thetas = np.empty((S, len(rec), P), dtype=dt)
    curves = _Curves(mlp, data, S, len(cs), eval_rows, backend)
    ri = 0

    own_bar = not isinstance(progress, Progress)
    bar = Progress(steps, "outer SGD", "step", enabled=progress) if own_bar else progress
    view = theta.view()
    view.flags.writeable = False
    try:
        for t in range(start, steps + 1):
            want = (ri < len(rec) and rec[ri] == t) or observe is not None
            shown = al.align(view) if (mv and align and want) else view   # the original labelling
            if ri < len(rec) and rec[ri] == t:
                thetas[:, ri] = shown
                ri += 1
            if curves.done < len(cs) and cs[curves.done] == t:
                curves.evaluate(theta)
            if observe is not None:
                if shown is not view:
                    shown.flags.writeable = False
                observe(t, shown)
            if t == steps:
                break
            # all seeds share N and B, so their batches have one length: one gather for all of them
            idx = np.stack([rng.batch_indices(streams[i], t, N, batch_size, _cache=caches[i]) for i in range(S)])
            Xb = Xtr[idx]                 # [S, B, n0]
            yb = data.y_train[idx]        # [S, B]
            if mv:
                Xb = swap.apply_moves(mv, mlp, theta, Xb, yb, t, seed_list, data.image_shape, log, al, minibatch_loss)
            _, g = ops.value_and_grad(mlp, theta, Xb, yb, backend=backend)
            with np.errstate(over="ignore", invalid="ignore"):
                theta -= dt.type(lr) * np.asarray(g, dtype=dt)
                finite = np.isfinite(theta.sum())     # NaN and ±inf propagate into the sum
            if not finite:
                bad = ~np.isfinite(theta).all(axis=1)
                if bad.any():
                    raise DivergenceError(t + 1, [int(seed_list[i]) for i in np.flatnonzero(bad)], lr)
            bar.update_to(t + 1)
    finally:
        if own_bar:
            bar.close()
    c = curves.arrays
    return OuterResult(thetas, rec, np.array(seed_list), cs, c["train_loss"], c["train_acc"], c["test_loss"],
                       c["test_acc"], lr, batch_size, moves=log if mv else None, alignment=al.state if mv else None,
                       theta_end=theta.copy() if mv else None)


def _settings(mlp: MLP, data: Any, seeds: Any, lr: Any, batch_size: Any, steps: Any, start: Any, theta0: Any,
              observe: Any, curve_points: Any, dtype: Any) -> tuple[list[int], float, int, int, int, int, np.dtype]:
    """Every argument of :func:`outer_sgd` checked: (seeds, lr, batch_size, steps, start, curve_points, dtype)."""
    check_model(mlp)
    if not isinstance(data, Dataset):
        raise TypeError(f"data: expected a fasttrap.model.data.Dataset, got {type(data).__name__}")
    what = f"the {mlp.noun}"
    if mlp.n_in is not None and data.n_features != mlp.n_in:
        raise ValueError(f"data: has {data.n_features} input features but {what} expects {mlp.n_in}")
    if mlp.n_out is not None and data.n_classes > mlp.n_out:
        raise ValueError(f"data: has {data.n_classes} classes but {what} has {mlp.n_out} outputs")
    seed_list = list(range(seeds)) if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool) else list(seeds)
    if not seed_list:
        raise ValueError("seeds: need at least one seed")
    for s in seed_list:
        check_int(s, "seeds", lo=0)
    lr = check_float(lr, "lr", positive=True)
    batch_size = check_int(batch_size, "batch_size", lo=1, hi=len(data.y_train))
    steps = check_int(steps, "steps", lo=0)
    start = check_int(start, "start", lo=0, hi=steps)
    if start > 0 and theta0 is None:
        raise ValueError("theta0: required when start > 0 (θ at step start)")
    if observe is not None and not callable(observe):
        raise TypeError(f"observe: expected a callable observe(t, theta), got {type(observe).__name__}")
    curve_points = check_int(curve_points, "curve_points", lo=0)
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return seed_list, lr, batch_size, steps, start, curve_points, dt


def _initial_theta(mlp: MLP, seed_list: list[int], theta0: Any, dt: np.dtype) -> np.ndarray:
    """θ at the first step [S, P]: torch.nn.Linear's initialisation per seed, or a copy of theta0."""
    if theta0 is None:
        return np.stack([mlp.init(1, int(s), dt)[0] for s in seed_list])
    theta = np.array(theta0, dtype=dt, copy=True)
    if theta.shape != (len(seed_list), mlp.n_params):
        raise ValueError(f"theta0: expected shape [{len(seed_list)}, {mlp.n_params}], got {list(theta.shape)}")
    return theta


class _Curves:
    """Train/test loss and accuracy [S, C] at the curve points, filled as training reaches them."""

    def __init__(self, mlp: MLP, data: Dataset, S: int, C: int, eval_rows: int | None, backend: str):
        self.mlp, self.backend, self.done = mlp, backend, 0
        self.sets = {"train": (data.X_train[:eval_rows], data.y_train[:eval_rows]),
                     "test": (data.X_test[:eval_rows], data.y_test[:eval_rows])}
        self.arrays = {k: np.full((S, C), np.nan) for k in ("train_loss", "train_acc", "test_loss", "test_acc")}

    def evaluate(self, theta: np.ndarray) -> None:
        """The next curve point at θ [S, P] (left NaN where θ is not finite)."""
        if np.all(np.isfinite(theta)):
            for split, (Xe, ye) in self.sets.items():
                loss, acc, _ = ops.evaluate(self.mlp, theta, Xe, ye, backend=self.backend)
                self.arrays[f"{split}_loss"][:, self.done] = np.asarray(loss, dtype=np.float64)
                self.arrays[f"{split}_acc"][:, self.done] = np.asarray(acc, dtype=np.float64)
        self.done += 1
