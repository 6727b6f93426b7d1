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
    def from_settings(cls, s: dict[str, Any]) -> Solver: ...


def setting(default: Any, help: str, *, group: str, key: str | None = None, type: str | None = None,
            min: float | None = None) -> Any:
    """A dataclass field that is also a run setting ``inner.<group>.<key or field name>``.

    ``type`` is the setting's type in :mod:`fasttrap.run.config` (``int``, ``float``, ``bool``, ``str``),
    taken from the default where not given.
    """
    t = type or {bool: "bool", int: "int", float: "float", str: "str"}[builtins_type(default)]
    return dataclasses.field(default=default, metadata={"help": help, "group": group, "key": key, "type": t,
                                                        "min": min})


def builtins_type(v: Any) -> type:
    return bool if isinstance(v, bool) else int if isinstance(v, int) else float if isinstance(v, float) else str


def solver_settings(cls: type, s: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``cls`` that the flat run settings ``s`` give (its :func:`setting` fields)."""
    kw = {}
    for f in dataclasses.fields(cls):
        m = f.metadata
        if "group" in m:
            kw[f.name] = s[f"inner.{m['group']}.{m['key'] or f.name}"]
    return kw
