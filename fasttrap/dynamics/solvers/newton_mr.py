"""Newton-MR on the full-batch loss (:class:`NewtonMR`), alone or after an SGD descent (:class:`SGDThenNewtonMR`).

Each step is one Newton-MR iteration (:func:`fasttrap.dynamics.newton.newton_mr`): a damped
minimum-residual step in the Krylov space of H and ∇L, in float64. It is attracted to any critical
point, minimum or saddle, which is what a trap search wants; the polished variant keeps SGD's basin
and ends at a point the certificate can name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ...common.progress import Progress
from ...ops.validate import check_bool, check_float, check_int
from ..newton import newton_mr
from .base import Budget, Outcome, setting, solver_settings
from .sgd import SGD


@dataclass(frozen=True, eq=False)
class NewtonMR:
    """Newton-MR iterations on the full batch, in float64.

    Attributes:
        minres_iters: Lanczos steps per iteration (the Krylov space of the step).
        alpha0: scale of every trial step (1: the damped Newton step).
        geodesic: add the Transtrum-Sethna geodesic acceleration to every trial step (with a plain-step
            fallback; docs/recorded/closed-form/ measures what it buys on linear nets).
        beta: a refused trial multiplies the damping by 1/beta.
        rho: least ratio of actual to predicted decrease of ‖g‖² for a trial to be kept.
        max_backtracks: trials per iteration before the model stops as ``line_search_failed``.
    """

    minres_iters: int = setting(60, "Newton-MR: Lanczos steps per iteration (the Krylov space of the step)",
                                group="newton_mr", min=1)
    alpha0: float = setting(1.0, "Newton-MR: scale of every trial step (1: the damped Newton step)",
                            group="newton_mr", min=0)
    geodesic: bool = setting(False, "Newton-MR: add the geodesic acceleration (Transtrum & Sethna) to every trial "
                             "step, with a plain-step fallback", group="newton_mr")
    beta: float = 0.5
    rho: float = 1e-4
    max_backtracks: int = 30

    name: ClassVar[str] = "newton_mr"
    checkpoints: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_int(self.minres_iters, "minres_iters", lo=1)
        check_float(self.alpha0, "alpha0", positive=True)
        check_bool(self.geodesic, "geodesic")
        b = check_float(self.beta, "beta", positive=True)
        if b >= 1:
            raise ValueError(f"beta: must be in (0, 1), got {b}")
        check_float(self.rho, "rho", positive=True)
        check_int(self.max_backtracks, "max_backtracks", lo=1)

    def check(self, K: int, N: int) -> None:
        pass

    def steps_per_epoch(self, N: int) -> int:
        return 1

    def newton_kw(self) -> dict[str, Any]:
        return dict(minres_iters=self.minres_iters, alpha0=self.alpha0, geodesic=self.geodesic, beta=self.beta,
                    rho=self.rho, max_backtracks=self.max_backtracks)

    def run(self, model: Any, theta0: np.ndarray, X: np.ndarray, y: np.ndarray, budget: Budget, *,
            backend: str, progress: bool | None | Progress, progress_offset: int = 0) -> Outcome:
        t0 = time.perf_counter()
        out = newton_mr(model, theta0, X, y, steps=budget.steps, G_tol=budget.G_tol, growth=budget.growth,
                        backend=backend, progress=False if isinstance(progress, Progress) else progress,
                        **self.newton_kw())
        seconds = time.perf_counter() - t0
        if isinstance(progress, Progress):       # a shared bar counts model-steps: the iterations that ran
            progress.update_to(int(progress_offset) + int(np.asarray(out["steps_done"]).sum()))
        return Outcome(out=out, seconds=seconds, record_every=1,
                       settings=dict(self.newton_kw(), hvps=out["hvps"], grad_passes=out["grad_passes"]))

    @classmethod
    def from_settings(cls, s: dict[str, Any], *, lr: Any = None) -> NewtonMR:
        return cls(**solver_settings(cls, s))              # takes no lr


@dataclass(frozen=True, eq=False)
class SGDThenNewtonMR:
    """The :class:`SGD` descent, then ``polish_steps`` Newton-MR iterations from each finite endpoint.

    The basin is SGD's, the endpoint a certifiable point. Endpoints that diverged or left the finite
    numbers keep their status; the others take the status Newton-MR ends with. The budget (steps,
    checkpoints) is the SGD part's.

    Attributes:
        sgd: the first descent.
        newton: the polish.
        polish_steps: Newton-MR iterations at most.
    """

    sgd: SGD = field(default_factory=SGD)
    newton: NewtonMR = field(default_factory=NewtonMR)
    polish_steps: int = setting(20, "Newton-MR iterations after the SGD descent of inner.method = 'sgd+newton_mr'",
                                group="newton_mr", min=0)

    name: ClassVar[str] = "sgd+newton_mr"
    checkpoints: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not isinstance(self.sgd, SGD):
            raise TypeError(f"sgd: expected a fasttrap.dynamics.solvers.SGD (or GD), got {type(self.sgd).__name__}")
        if not isinstance(self.newton, NewtonMR):
            raise TypeError(f"newton: expected a fasttrap.dynamics.solvers.NewtonMR, got {type(self.newton).__name__}")
        check_int(self.polish_steps, "polish_steps", lo=0)

    def check(self, K: int, N: int) -> None:
        self.sgd.check(K, N)

    def steps_per_epoch(self, N: int) -> int:
        return self.sgd.steps_per_epoch(N)

    def run(self, model: Any, theta0: np.ndarray, X: np.ndarray, y: np.ndarray, budget: Budget, *,
            backend: str, progress: bool | None | Progress, progress_offset: int = 0) -> Outcome:
        first = self.sgd.run(model, theta0, X, y, budget, backend=backend, progress=progress,
                             progress_offset=progress_offset)
        out = first.out
        theta = np.asarray(out["theta"])
        st = np.asarray(out["status"]).copy()
        ok = np.flatnonzero(np.isfinite(theta).all(1) & np.isin(st, [1, 2]))     # converged, max_steps
        res = dict(out)
        extra = {"polish_steps_done": np.zeros(len(theta), np.int64), "polish_G_start": np.full(len(theta), np.nan),
                 "hvps": np.zeros(len(theta), np.int64), "grad_passes": np.zeros(len(theta), np.int64)}
        seconds = first.seconds
        if ok.size:
            polish = Budget(steps=self.polish_steps, G_tol=budget.G_tol, growth=budget.growth, record_every=1,
                            seed=budget.seed, index_offset=budget.index_offset, snap_steps=np.zeros(0, np.int64))
            nw = self.newton.run(model, theta[ok], X, y, polish, backend=backend, progress=False)
            th = theta.astype(np.float64)          # a copy: the polished rows are float64
            th[ok] = nw.out["theta"]
            res["theta"] = th
            st[ok] = nw.out["status"]
            res["status"] = st
            g_last = np.asarray(out["G_last"], dtype=np.float64).copy()
            g_last[ok] = nw.out["G_last"]
            res["G_last"] = g_last
            extra["polish_steps_done"][ok] = nw.out["steps_done"]
            extra["polish_G_start"][ok] = nw.out["G_first"]
            for k in ("hvps", "grad_passes"):
                extra[k][ok] = nw.out[k]
            seconds += nw.seconds
        return Outcome(out=res, seconds=seconds, record_every=first.record_every,
                       settings=dict(first.settings, **self.newton.newton_kw(), polish_steps=self.polish_steps,
                                     **extra))

    @classmethod
    def from_settings(cls, s: dict[str, Any], *, lr: Any) -> SGDThenNewtonMR:
        return cls(sgd=SGD.from_settings(s, lr=lr), newton=NewtonMR.from_settings(s),
                   **solver_settings(cls, s))
