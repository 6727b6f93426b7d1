"""Solvers are values (fasttrap.dynamics.solvers): the protocol, the registry, and a new solver in one class."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest

import fasttrap
from fasttrap.dynamics import solvers
from fasttrap.dynamics.newton import newton_mr
from fasttrap.dynamics.solvers import Budget, Outcome, setting
from fasttrap.run import config


@dataclass(frozen=True)
class Shrink:
    """A dummy solver: θ ← factor·θ per step. What a newcomer writes to add a solver."""

    factor: float = setting(0.5, "Shrink: θ is multiplied by this every step", group="shrink", min=0)

    name: ClassVar[str] = "shrink"
    checkpoints: ClassVar[bool] = False

    def check(self, K: int, N: int) -> None:
        pass

    def steps_per_epoch(self, N: int) -> int:
        return 1

    def run(self, model: Any, theta0: np.ndarray, X: np.ndarray, y: np.ndarray, budget: Budget, *, backend: str,
            progress: Any, progress_offset: int = 0) -> Outcome:
        K = len(theta0)
        th = theta0 * self.factor ** budget.steps
        G = np.full(K, np.nan)
        out = dict(theta=th, status=np.full(K, 2, np.int8), steps_done=np.full(K, budget.steps), G_first=G,
                   G_last=G, G_trace=np.full((K, 1), np.nan))
        return Outcome(out=out, seconds=0.0, record_every=budget.record_every, settings=dict(factor=self.factor))

    @classmethod
    def from_settings(cls, s: dict[str, Any], *, lr: Any = None) -> Shrink:
        return cls(**solvers.solver_settings(cls, s))


def test_a_new_solver_is_one_class_and_one_registry_line(monkeypatch):
    monkeypatch.setitem(solvers.SOLVERS, "shrink", Shrink)          # the one registry line
    mlp = fasttrap.MLP((4, 3, 2))
    th0 = mlp.init(3, 0)
    X, y = np.random.default_rng(0).standard_normal((10, 4)), np.arange(10) % 2
    r = fasttrap.inner_descent(mlp, th0, (X, y), solver=Shrink(0.5), steps=3, progress=False)
    np.testing.assert_allclose(r.theta, th0 * 0.125)
    assert list(r.status) == ["max_steps"] * 3 and r.settings["method"] == "shrink" and r.settings["factor"] == 0.5
    assert np.all(np.isfinite(r.train_loss))           # the shared evaluation ran on the new solver's endpoints
    # its settings are run settings inner.shrink.*, and the main job's settings build it by name
    assert "inner.shrink.factor" in solvers.run_settings()
    made = solvers.from_settings({"inner.method": "shrink", "inner.shrink.factor": 0.25}, lr=None)
    assert isinstance(made, Shrink) and made.factor == 0.25
    with pytest.raises(ValueError, match="checkpoints"):
        fasttrap.inner_descent(mlp, th0, (X, y), solver=Shrink(), steps=4, checkpoints=(0.5,), progress=False)


def test_every_registered_solver_is_a_main_job_choice_with_its_settings():
    assert config.SCHEMA["inner.method"].choices == tuple(solvers.SOLVERS)
    for key, spec in solvers.run_settings().items():
        assert key in config.SCHEMA and config.SCHEMA[key].default == spec["default"]
        assert key in config.NEUTRAL_LATER           # older runs (sgd/gd only) resume unchanged
    for name, cls in solvers.SOLVERS.items():
        assert cls.name == name
        for attr in ("check", "steps_per_epoch", "run", "from_settings"):
            assert callable(getattr(cls, attr)), (name, attr)
        assert dataclasses.is_dataclass(cls)


def test_the_newton_solver_is_the_newton_function(rng):
    """inner_descent(solver=NewtonMR(...)) runs exactly newton_mr with those settings (bytes)."""
    mlp = fasttrap.MLP((5, 4, 3), activation="tanh")
    X, y = rng.standard_normal((40, 5)), rng.integers(0, 3, 40)
    th0 = mlp.init(3, 2).astype(np.float64)
    s = fasttrap.NewtonMR(minres_iters=12, alpha0=0.7, geodesic=True)
    r = fasttrap.inner_descent(mlp, th0, (X, y), solver=s, steps=6, progress=False, evaluate=False)
    d = newton_mr(mlp, th0, X, y, steps=6, G_tol=5e-11, growth=1e8, minres_iters=12, alpha0=0.7, geodesic=True)
    np.testing.assert_array_equal(r.theta, d["theta"])
    np.testing.assert_array_equal(r.G_trace, d["G_trace"])
    assert r.settings["geodesic"] is True and list(r.settings["hvps"]) == list(d["hvps"])


def test_main_job_settings_build_each_solver():
    cfg = config.resolve("quick", overrides=["inner.method=sgd+newton_mr", "inner.newton_mr.polish_steps=7",
                                             "inner.newton_mr.geodesic=true"])
    s = solvers.from_settings(cfg, lr=0.05)
    assert isinstance(s, fasttrap.SGDThenNewtonMR) and s.polish_steps == 7 and s.newton.geodesic
    assert s.sgd.lr == 0.05 and s.sgd.batch_size == cfg["inner.batch_size"] and s.sgd.batches == cfg["inner.batches"]
    with pytest.raises(config.ConfigError, match="checkpoints"):
        config.resolve("quick", overrides=["inner.method=newton_mr"])
    with pytest.raises(config.ConfigError, match="alpha0"):
        config.resolve("quick", overrides=["inner.method=newton_mr", "inner.checkpoints=[]",
                                           "inner.newton_mr.alpha0=0"])
    with pytest.raises(config.ConfigError, match="inner.method"):
        config.resolve("quick", overrides=["inner.method=adam"])
