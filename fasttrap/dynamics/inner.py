"""Batched inner descents from K start points: what every solver shares.

From each start point θ0[k] a solver (:mod:`fasttrap.dynamics.solvers`: minibatch or full-batch
descent on G = ½‖∇L‖², Newton-MR, ...) runs for a fixed budget or until the model stops on its own
(converged, diverged, non-finite). This module owns the budget, the stop rules, the checkpoints,
the evaluation of the endpoints and the :class:`InnerResult`; the solver owns how θ moves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import ops
from ..common.progress import Progress
from ..model.data import Dataset
from ..ops import resolve_for
from ..ops.validate import check_bool, check_dataset, check_float, check_int, check_model, check_theta
from .solvers import SGD, SOLVERS, STATUS_NAMES, Budget, Solver


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


def inner_descent(model: Any, theta0: Any, data: Dataset | tuple[Any, Any], *, solver: Solver | None = None,
                  epochs: float | None = None, steps: int | None = None, seed: int = 0, record_every: int | None = None,
                  G_tol: float = 5e-11, growth: float = 1e8, evaluate: bool = True, eval_rows: int | None = None,
                  index_offset: int = 0, backend: str = "auto", progress: bool | None | Progress = True,
                  progress_offset: int = 0, checkpoints: Any = ()) -> InnerResult:
    """Run K inner descents on G = ½‖∇L‖² (or toward any critical point of L) from the rows of θ0.

    Args:
        model: the network: a :class:`fasttrap.MLP` (the compiled core) or a :class:`fasttrap.TorchModel`
            (any module, on the torch path: the twin's loop on torch.func ops, on the GPU where torch
            sees one).
        theta0: [K, P] start points (float32 or float64; the run keeps that dtype; Newton-MR's
            iterates are float64).
        data: a :class:`Dataset` (its training set) or a tuple (X [N, n0], y [N]); for a TorchModel X may
            also be [N, *input_shape].
        solver: how θ moves, a value of :mod:`fasttrap.dynamics.solvers` with its own settings:
            ``SGD(lr=0.01, batch_size=128, batches="shared")`` (minibatch G, the default),
            ``GD(lr=...)`` (full-batch G), ``NewtonMR(minres_iters=60, geodesic=False)`` (Newton-MR on
            the full-batch loss: attracted to any critical point, which is what a trap search wants) or
            ``SGDThenNewtonMR(sgd=SGD(...), polish_steps=20)`` (the SGD descent, then Newton-MR from
            each finite endpoint: the basin is SGD's, the endpoint a certifiable point).
        epochs: length in epochs (``steps`` = epochs × the solver's steps per epoch:
            ceil(N / batch_size) for SGD, 1 for GD and Newton-MR); give this or ``steps``.
        steps: length in the solver's steps (a minibatch step, a full-batch step, a Newton iteration).
        seed: seed of the batch order (stream ``(seed, "inner", index)``).
        record_every: G is recorded every this many steps (default: about 1000 points).
        G_tol: a model has converged when G < G_tol. The default 5e-11 is ‖∇L‖² < 1e-10, the
            tolerance of the critical-point literature.
        growth: a model has diverged when G > growth × G(start). 0 disables the check. The default
            1e8 flags only runaway growth: on MNIST, descents that recovered were seen to pass
            through transient spikes of G of 2·10⁴ × G(start) (catapult-like), which a tighter
            limit would wrongly call divergence.
        evaluate: compute loss, G and accuracy on the full training set at θ*.
        eval_rows: evaluate on the first ``eval_rows`` training rows only (None: all).
        index_offset: with independent batches, model k draws stream index ``index_offset + k``.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch`` (the twin: same batches, same rules).
        progress: a progress bar with model-steps/s (None: log lines off a terminal; False: silent),
            or an existing :class:`fasttrap.common.progress.Progress` to advance (from ``progress_offset``).
        progress_offset: where this call's model-steps start on a shared bar.
        checkpoints: fractions of the budget in (0, 1) (e.g. ``(0.25, 0.5, 0.75)``) at which every
            model's θ is also kept, at no extra descent: the loop copies it out as it passes
            (``InnerResult.checkpoint_*``, evaluated like the endpoints). Each fraction becomes the
            step round(f × steps) (at least 1); for solvers whose ``checkpoints`` is true (SGD, GD, and
            the SGD part of SGDThenNewtonMR).

    Returns:
        :class:`InnerResult`.
    """
    solver = SGD() if solver is None else solver
    if not all(hasattr(solver, a) for a in ("name", "checkpoints", "check", "steps_per_epoch", "run")):
        raise TypeError(f"solver: expected a solver value ({', '.join(c.__name__ for c in SOLVERS.values())} of "
                        f"fasttrap.dynamics.solvers), got {type(solver).__name__}")
    check_model(model)
    be = resolve_for(model, backend)
    th0 = check_theta(model, theta0, "theta0")
    X, y = _training_set(model, data, th0.dtype)
    K, N = th0.shape[0], X.shape[0]
    solver.check(K, N)
    budget = _budget(solver, N, epochs=epochs, steps=steps, seed=seed, record_every=record_every, G_tol=G_tol,
                     growth=growth, index_offset=index_offset)
    check_bool(evaluate, "evaluate")
    snap_steps = checkpoint_steps(checkpoints, budget.steps)
    if snap_steps.size and not solver.checkpoints:
        raise ValueError(f"checkpoints: the {solver.name} solver keeps no checkpoints (its loop does not "
                         "copy θ out as it passes); give checkpoints=()")
    budget = dataclasses.replace(budget, snap_steps=snap_steps)
    res = solver.run(model, th0, X, y, budget, backend=be, progress=progress, progress_offset=progress_offset)
    out = res.out
    theta = np.asarray(out["theta"])
    train = _evaluate_endpoints(model, theta, X[:eval_rows], y[:eval_rows], be) if evaluate else \
        {k: np.full(len(theta), np.nan) for k in ("loss", "G", "acc")}
    snaps = np.asarray(out["snaps"]) if snap_steps.size else None
    ck = {k: np.full((snap_steps.size, len(theta)), np.nan) for k in ("loss", "G", "acc")}
    if snaps is not None and evaluate:
        for j in range(snap_steps.size):
            e = _evaluate_endpoints(model, snaps[j], X[:eval_rows], y[:eval_rows], be)
            for k in ck:
                ck[k][j] = e[k]
    n_rec = out["G_trace"].shape[1]
    settings = dict(steps=budget.steps, G_tol=budget.G_tol, growth=budget.growth, record_every=res.record_every,
                    seed=budget.seed, index_offset=budget.index_offset, method=solver.name, solver=solver,
                    backend=be, **res.settings)
    return InnerResult(theta=theta, status=STATUS_NAMES[np.asarray(out["status"], dtype=np.int64)],
                       steps_done=np.asarray(out["steps_done"]),
                       G_trace=np.asarray(out["G_trace"]), trace_steps=np.arange(n_rec) * res.record_every,
                       G_start=np.asarray(out["G_first"]), G_last=np.asarray(out["G_last"]),
                       train_loss=train["loss"], train_G=train["G"], train_acc=train["acc"], seconds=res.seconds,
                       model_steps=int(np.asarray(out["steps_done"]).sum()), settings=settings,
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


def _training_set(mlp: Any, data: Any, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """X [N, n0] (in θ's dtype, finite) and y [N] of a Dataset's training set or of a tuple (X, y)."""
    if isinstance(data, Dataset):
        X, y = data.X_train, data.y_train
    elif isinstance(data, tuple) and len(data) == 2:
        X, y = data
    else:
        raise TypeError(f"data: expected a fasttrap.model.data.Dataset or a tuple (X, y), got {type(data).__name__}")
    return check_dataset(mlp, X, y, dtype, name="data X")


def _budget(solver: Solver, N: int, *, epochs: Any, steps: Any, seed: Any, record_every: Any, G_tol: Any,
            growth: Any, index_offset: Any) -> Budget:
    """The settings :func:`inner_descent` gives every solver, checked."""
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs and steps")
    if steps is None:
        n_steps = int(round(check_float(epochs, "epochs", lo=0) * solver.steps_per_epoch(N)))
    else:
        n_steps = check_int(steps, "steps", lo=0)
    G_tol = check_float(G_tol, "G_tol", lo=0)
    growth = check_float(growth, "growth", lo=0)
    if 0 < growth <= 1:
        raise ValueError(f"growth: must be > 1 (or 0 to disable), got {growth}")
    record_every = check_int(max(1, n_steps // 1000) if record_every is None else record_every, "record_every", lo=1)
    return Budget(steps=n_steps, G_tol=G_tol, growth=growth, record_every=record_every,
                  seed=check_int(seed, "seed", lo=0), index_offset=check_int(index_offset, "index_offset", lo=0),
                  snap_steps=np.zeros(0, np.int64))


def _evaluate_endpoints(mlp: Any, theta: np.ndarray, X: np.ndarray, y: np.ndarray, be: str) -> dict[str, np.ndarray]:
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
