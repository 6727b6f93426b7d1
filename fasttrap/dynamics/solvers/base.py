"""The solver protocol, the budget every solver is given, and what a run returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

STATUS_NAMES = np.array(["running", "converged", "max_steps", "diverged", "nonfinite", "interrupted",
                         "line_search_failed"])


@dataclass(frozen=True)
class Budget:
    """What every solver is told: how long to run, when to stop, what to record.

    Attributes:
        steps: updates at most (a solver's own unit: a minibatch step, a full-batch step, a Newton
            iteration).
        G_tol: converged when G = ½‖∇L‖² < G_tol.
        growth: diverged when G > growth × G(start) (0: never).
        record_every: G is recorded every this many steps.
        seed: seed of the random streams (``(seed, "inner", index)``).
        index_offset: model k draws stream index ``index_offset + k`` where streams are per model.
        snap_steps: [J] steps at which θ is also kept (empty: none).
    """

    steps: int
    G_tol: float
    growth: float
    record_every: int
    seed: int
    index_offset: int
    snap_steps: np.ndarray


@dataclass
class Outcome:
    """What a solver's ``run`` returns.

    Attributes:
        out: the loop's arrays: ``theta`` [K, P], ``status`` [K] (codes of :data:`STATUS_NAMES`),
            ``steps_done`` [K], ``G_trace`` [K, T'], ``G_first`` [K], ``G_last`` [K], and ``snaps``
            [J, K, P] where the budget asked for checkpoints.
        seconds: wall time of the descent.
        record_every: the steps between G_trace's columns (a solver may record every step).
        settings: what the solver ran with and what it counted (lr, λ_max, products, ...).
    """

    out: dict[str, np.ndarray]
    seconds: float
    record_every: int
    settings: dict[str, Any]


class Solver(Protocol):
    name: ClassVar[str]
    checkpoints: ClassVar[bool]

    def check(self, K: int, N: int) -> None: ...

    def steps_per_epoch(self, N: int) -> int: ...

    def run(self, model: Any, theta0: np.ndarray, X: np.ndarray, y: np.ndarray, budget: Budget, *,
            backend: str, progress: Any, progress_offset: int) -> Outcome: ...

    @classmethod
    def from_settings(cls, s: dict[str, Any], *, lr: Any) -> Solver: ...


def setting(default: bool | int | float | str, help: str, *, group: str, min: float | None = None) -> Any:
    """A dataclass field that is also the run setting ``inner.<group>.<field name>`` (type from the default)."""
    kind = next(t for t in (bool, int, float, str) if isinstance(default, t))      # bool first: it is an int
    return dataclasses.field(default=default, metadata={"help": help, "group": group, "type": kind.__name__,
                                                        "min": min})


def setting_fields(cls: type) -> list[tuple[str, dataclasses.Field]]:
    """``(run-setting key, field)`` of each :func:`setting` field of solver class ``cls``."""
    return [(f"inner.{f.metadata['group']}.{f.name}", f) for f in dataclasses.fields(cls) if "group" in f.metadata]


def solver_settings(cls: type, s: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``cls`` that the flat run settings ``s`` give (its :func:`setting` fields)."""
    return {f.name: s[key] for key, f in setting_fields(cls)}
