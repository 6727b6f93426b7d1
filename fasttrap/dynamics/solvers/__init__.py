"""Inner solvers as values: each is a small frozen object with its own settings and one ``run``.

:func:`fasttrap.dynamics.inner.inner_descent` owns what every solver shares (the budget, the stop
rules, the random stream, the evaluation of the endpoints, the result); a solver owns how it moves
θ. ``inner_descent(model, theta0, data, solver=NewtonMR(alpha0=0.5), steps=40)``.

Adding a solver is one new module here and one line in :data:`SOLVERS`: the main job's
``inner.method`` accepts every registered name, and the fields a solver marks with
:func:`setting` become the run settings ``inner.<group>.<field>`` (``inner.newton_mr.geodesic``).

The protocol (:class:`Solver`):

- ``name``: the registry name, written into results and run settings;
- ``checkpoints``: whether the loop can keep θ at fractions of the budget;
- ``check(K, N)``: the settings checked against K start points and N rows (before any compiled call);
- ``steps_per_epoch(N)``: what one epoch of the budget is;
- ``run(model, theta0, X, y, budget, backend=..., progress=..., progress_offset=...)``: the descent,
  returning a :class:`Outcome`;
- ``from_settings(s, lr=...)``: the solver the main job's flat settings ``s`` describe, with the lr the
  stage chose (ignored by solvers that take none).
"""

from __future__ import annotations

from typing import Any

from .base import STATUS_NAMES, Budget, Outcome, Solver, setting, setting_fields, solver_settings
from .newton_mr import NewtonMR, SGDThenNewtonMR
from .sgd import GD, SGD

# The registry: a new solver is its module and one line here.
SOLVERS: dict[str, type] = {
    "sgd": SGD,
    "gd": GD,
    "newton_mr": NewtonMR,
    "sgd+newton_mr": SGDThenNewtonMR,
}


def run_settings() -> dict[str, dict[str, Any]]:
    """Every solver's run settings: ``{"inner.<group>.<field>": {type, default, help, min}}``.

    A setting two solvers share (``SGDThenNewtonMR`` reuses ``NewtonMR``'s group) is listed once.
    """
    out: dict[str, dict[str, Any]] = {}
    for cls in SOLVERS.values():
        for key, f in setting_fields(cls):
            out.setdefault(key, dict(type=f.metadata["type"], default=f.default, help=f.metadata["help"],
                                     min=f.metadata["min"]))
    return out


def from_settings(s: dict[str, Any], *, lr: Any) -> Solver:
    """The solver the main job's flat settings describe (``inner.method`` and its ``inner.*`` settings).

    ``lr`` is the step size the stage chose (a scalar, or one per start point [K]: ``inner.lr`` by
    regime, or ``inner.lr_rule = "auto"``); solvers that take none ignore it.
    """
    name = s["inner.method"]
    if name not in SOLVERS:
        raise ValueError(f"inner.method: expected one of {list(SOLVERS)}, got {name!r}")
    return SOLVERS[name].from_settings(s, lr=lr)


__all__ = ["Budget", "GD", "NewtonMR", "Outcome", "SGD", "SGDThenNewtonMR", "SOLVERS", "STATUS_NAMES", "Solver",
           "from_settings", "run_settings", "setting", "setting_fields", "solver_settings"]
