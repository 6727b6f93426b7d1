"""Aging: two-time observables of the weights along the outer SGD path, computed while it streams.

For a waiting time t_w and a lag t, with the N parameters w_i of a model (every weight and bias),

    Δ(t_w, t_w+t)   = (1/N) Σ_i (w_i(t_w+t) − w_i(t_w))²          the mean-square displacement
    Δ₄(t_w, t_w+t)  = (1/N) Σ_i (w_i(t_w+t) − w_i(t_w))⁴          its fourth-moment companion
    α₂(t_w, t_w+t)  = Δ₄ / (3 Δ²) − 1                             the non-Gaussian parameter

α₂ treats the N displacements x_i as samples of one distribution: for a Gaussian ⟨x⁴⟩ = 3⟨x²⟩², so
α₂ = 0; a Laplace distribution gives 1 and a uniform one −0.4. Two wrong versions circulate and
are worth naming: Δ₄/Δ² − 1 (no factor 3: a Gaussian then reads 2), and the d-dimensional
formula d⟨r⁴⟩/((d+2)⟨r²⟩²) − 1 applied with r² = Σ_i x_i² of the whole weight vector, which
describes one particle in N dimensions, not N displacements. The moments are raw (about 0, not
about the mean displacement), as in the glass literature; a drift therefore counts as motion.

A system ages when Δ at a fixed lag falls as t_w grows: the older it is, the slower it moves.
:func:`timescales` reads that off as the lag τ(t_w) at which Δ reaches a fixed level;
τ ∝ t_w is simple aging, τ flat in t_w is no (or interrupted) aging.

Only the snapshots at the t_w are stored, never the path: :class:`TwoTimeStream` is called at
every outer step (the ``observe`` hook of :func:`fasttrap.dynamics.outer.outer_sgd`) and does work only at
the t_w and at the t_w + t. :func:`two_time` computes the same from stored θ, for checking.
:func:`run_aging` drives one network: outer SGD, the two-time observables, the training curves
and the gradient noise D(t) (:mod:`fasttrap.analysis.diffusion`), with atomic checkpoints that resume to
identical results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import ops
from ..common import store
from ..ops.validate import check_int, check_model
from ..model.data import Dataset
from .diffusion import gradient_noise
from ..model.mlp import MLP
from ..dynamics.outer import log_spaced_steps, outer_sgd
from ..common.progress import Progress


# ----------------------------------------------------------------------------------- grids ---
def time_grid(lo: int, hi: int, n: int) -> np.ndarray:
    """About ``n`` distinct integers in [lo, hi], log-spaced, always with lo and hi."""
    lo = check_int(lo, "lo", lo=1)
    hi = check_int(hi, "hi", lo=lo)
    n = check_int(n, "n", lo=1)
    if n == 1 or hi == lo:
        return np.array([lo], dtype=np.int64)
    return np.unique(np.round(np.geomspace(lo, hi, n)).astype(np.int64))


def default_grids(steps: int, n_tw: int = 6, n_lags: int = 40, tw_min: int = 10,
                  tw_max: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Waiting times log-spaced in [tw_min, tw_max] (default steps // 2) and lags in [1, steps − tw_min].

    Pairs with t_w + t > steps are not measured (NaN); with tw_max = steps // 2 every t_w has
    lags up to at least steps / 2.
    """
    steps = check_int(steps, "steps", lo=2)
    tw_min = check_int(tw_min, "tw_min", lo=1, hi=steps - 1)
    tw_max = steps // 2 if tw_max is None else check_int(tw_max, "tw_max", lo=tw_min, hi=steps - 1)
    tw_max = max(tw_max, tw_min)
    return time_grid(tw_min, tw_max, n_tw), time_grid(1, steps - tw_min, n_lags)


def _check_grids(t_w: Any, lags: Any) -> tuple[np.ndarray, np.ndarray]:
    tw = np.asarray(t_w)
    lg = np.asarray(lags)
    for name, a in (("t_w", tw), ("lags", lg)):
        if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name}: expected a non-empty 1-D array of integers, got {a.dtype} of shape {list(a.shape)}")
        if np.any(np.diff(a) <= 0):
            raise ValueError(f"{name}: must be strictly increasing")
    if tw[0] < 0:
        raise ValueError(f"t_w: waiting times must be >= 0, got {tw[0]}")
    if lg[0] < 0:
        raise ValueError(f"lags: must be >= 0, got {lg[0]}")
    return tw.astype(np.int64), lg.astype(np.int64)


# --------------------------------------------------------------------------------- moments ---
def displacement_moments(theta_b: np.ndarray, theta_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1/N) Σ_i x_i² and (1/N) Σ_i x_i⁴ of x = θ_b − θ_a, per model, in float64.

    Args:
        theta_b: [S, N] the later point.
        theta_a: [S, N] the earlier point.

    Returns:
        ``(Δ [S], Δ₄ [S])``.
    """
    x = np.asarray(theta_b, dtype=np.float64) - np.asarray(theta_a, dtype=np.float64)
    x2 = x * x
    return x2.mean(axis=1), np.einsum("sn,sn->s", x2, x2) / x.shape[1]


def seed_mean(a: Any) -> np.ndarray:
    """Mean over the leading (seed) axis, ignoring NaN; NaN where every seed is NaN (no warning)."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape[0] == 1:
        return a[0].copy()
    ok = np.isfinite(a).any(axis=0)
    out = np.full(a.shape[1:], np.nan)
    out[ok] = np.nanmean(a[:, ok], axis=0)
    return out


def non_gaussian(msd: Any, m4: Any) -> np.ndarray:
    """α₂ = Δ₄ / (3 Δ²) − 1 (0 for Gaussian displacements); NaN where Δ = 0 or is missing."""
    msd = np.asarray(msd, dtype=np.float64)
    m4 = np.asarray(m4, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = m4 / (3.0 * msd * msd) - 1.0
    return np.where(msd > 0, a, np.nan)


@dataclass
class TwoTime:
    """Two-time observables on a grid.

    Attributes:
        t_w: [W] waiting times.
        lags: [T] lags t.
        msd: [S, W, T] Δ(t_w, t_w + t); NaN where t_w + t lies beyond the run.
        m4: [S, W, T] Δ₄.
    """

    t_w: np.ndarray
    lags: np.ndarray
    msd: np.ndarray
    m4: np.ndarray

    @property
    def non_gaussian(self) -> np.ndarray:
        """[S, W, T] α₂."""
        return non_gaussian(self.msd, self.m4)


class TwoTimeStream:
    """Δ and Δ₄ on a (t_w, lag) grid from a stream of θ_t, storing only the snapshots at the t_w.

    Call it at every step t (in increasing order; a repeated t is ignored, so checkpointed
    segments may share their boundary step). Work is done only at the steps in :attr:`times`.

    Args:
        t_w: [W] increasing waiting times.
        lags: [T] increasing lags (0 allowed: Δ = 0 there).
    """

    def __init__(self, t_w: Any, lags: Any):
        self.t_w, self.lags = _check_grids(t_w, lags)
        self._due: dict[int, list[tuple[int, int]]] = {}
        for w, tw in enumerate(self.t_w):
            for j, lag in enumerate(self.lags):
                self._due.setdefault(int(tw + lag), []).append((w, j))
        self.times = np.unique(np.concatenate([self.t_w, np.fromiter(self._due, dtype=np.int64)]))
        self.snap: np.ndarray | None = None        # [S, W, N] float64, filled at each t_w
        self.msd: np.ndarray | None = None         # [S, W, T]
        self.m4: np.ndarray | None = None
        self.t_last = -1

    def _alloc(self, S: int, N: int) -> None:
        W, T = len(self.t_w), len(self.lags)
        self.snap = np.full((S, W, N), np.nan)
        self.msd = np.full((S, W, T), np.nan)
        self.m4 = np.full((S, W, T), np.nan)

    def __call__(self, t: int, theta: np.ndarray) -> None:
        """Observe θ_t [S, N]."""
        t = int(t)
        if t <= self.t_last:
            return
        if self.snap is None:
            self._alloc(*theta.shape)
        assert self.snap is not None and self.msd is not None and self.m4 is not None
        if theta.shape != (self.snap.shape[0], self.snap.shape[2]):
            raise ValueError(f"theta: expected shape {[self.snap.shape[0], self.snap.shape[2]]}, got {list(theta.shape)}")
        w_at = np.flatnonzero(self.t_w == t)
        if w_at.size:
            self.snap[:, w_at[0]] = theta
        for w, j in self._due.get(t, ()):
            self.msd[:, w, j], self.m4[:, w, j] = displacement_moments(theta, self.snap[:, w])
        self.t_last = t

    def result(self) -> TwoTime:
        if self.msd is None:
            raise RuntimeError("TwoTimeStream: nothing observed yet")
        return TwoTime(self.t_w.copy(), self.lags.copy(), self.msd.copy(), self.m4.copy())

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue (for a checkpoint)."""
        if self.snap is None:
            return {"tt_t_last": np.array(self.t_last)}
        return {"tt_t_last": np.array(self.t_last), "tt_snap": self.snap, "tt_msd": self.msd, "tt_m4": self.m4}

    def load_state(self, st: dict[str, np.ndarray]) -> None:
        self.t_last = int(st["tt_t_last"])
        if "tt_snap" in st:
            self.snap, self.msd, self.m4 = (np.array(st[k], dtype=np.float64) for k in ("tt_snap", "tt_msd", "tt_m4"))


def two_time(thetas: Any, steps: Any, t_w: Any, lags: Any) -> TwoTime:
    """Δ and Δ₄ directly from stored θ: the reference for :class:`TwoTimeStream`.

    Args:
        thetas: [S, T_rec, N] θ at the recorded steps.
        steps: [T_rec] the recorded steps.
        t_w: [W] waiting times (each must be recorded).
        lags: [T] lags; pairs whose t_w + t was not recorded are NaN.

    Returns:
        :class:`TwoTime`.
    """
    th = np.asarray(thetas)
    st = np.asarray(steps, dtype=np.int64)
    tw, lg = _check_grids(t_w, lags)
    if th.ndim != 3 or st.shape != (th.shape[1],):
        raise ValueError(f"thetas, steps: expected [S, T, N] and [T], got {list(th.shape)} and {list(st.shape)}")
    where = {int(s): i for i, s in enumerate(st)}
    missing = [int(x) for x in tw if int(x) not in where]
    if missing:
        raise ValueError(f"t_w: waiting times {missing} are not among the recorded steps")
    S = th.shape[0]
    msd = np.full((S, len(tw), len(lg)), np.nan)
    m4 = np.full_like(msd, np.nan)
    for w, a in enumerate(tw):
        for j, lag in enumerate(lg):
            b = where.get(int(a + lag))
            if b is not None:
                msd[:, w, j], m4[:, w, j] = displacement_moments(th[:, b], th[:, where[int(a)]])
    return TwoTime(tw, lg, msd, m4)


def timescales(tt: TwoTime, level: float | None = None) -> dict[str, Any]:
    """τ(t_w): the lag at which the seed-mean Δ(t_w, t_w + τ) first reaches ``level``.

    Δ is interpolated linearly in (log t, log Δ) between grid lags. The default level is the
    geometric mean of all measured seed-mean Δ (so most t_w reach it). The aging exponent μ is the
    least-squares slope of log τ against log t_w over the t_w that reach the level: μ ≈ 1 is simple
    aging (τ ∝ t_w), μ ≈ 0 none; a τ that grows and then stops is interrupted aging, which
    ``mu_early`` against ``mu_late`` (slopes over the first and second half of the t_w) shows.

    Returns:
        ``{"level", "t_w", "tau", "tau_beyond", "mu", "mu_early", "mu_late"}``: τ is NaN where
        undefined, and ``tau_beyond`` marks the t_w whose Δ stays below the level at every lag
        measured (τ longer than the run allows; the slopes leave them out, so they understate the
        slowing there).
    """
    m = seed_mean(tt.msd)
    pos = np.isfinite(m) & (m > 0)
    if level is None:
        level = float(np.exp(np.mean(np.log(m[pos])))) if pos.any() else float("nan")
    tau = np.full(len(tt.t_w), np.nan)
    beyond = np.zeros(len(tt.t_w), dtype=bool)
    for w in range(len(tt.t_w)):
        ok = pos[w] & (tt.lags > 0)
        x, y = np.log(tt.lags[ok].astype(float)), np.log(m[w, ok])
        if x.size == 0 or not np.isfinite(level):
            continue
        above = np.flatnonzero(y >= np.log(level))
        if above.size == 0:
            beyond[w] = True        # Δ stays below the level at every lag measured: τ is beyond the grid
            continue
        i = int(above[0])
        if i == 0:
            continue            # already above the level at the first lag: τ is below the grid
        f = (np.log(level) - y[i - 1]) / (y[i] - y[i - 1])
        tau[w] = float(np.exp(x[i - 1] + f * (x[i] - x[i - 1])))

    def slope(sel: np.ndarray) -> float:
        ok = sel & np.isfinite(tau)
        if ok.sum() < 2:
            return float("nan")
        return float(np.polyfit(np.log(tt.t_w[ok].astype(float)), np.log(tau[ok]), 1)[0])

    W = len(tt.t_w)
    idx = np.arange(W)
    return {"level": level, "t_w": tt.t_w, "tau": tau, "tau_beyond": beyond, "mu": slope(idx >= 0),
            "mu_early": slope(idx < (W + 1) // 2), "mu_late": slope(idx >= W // 2)}


def timescales_per_seed(tt: TwoTime, level: float) -> dict[str, np.ndarray]:
    """μ, μ_early and μ_late of each seed on its own, at a common ``level`` (the seed-to-seed spread
    of :func:`timescales`). Returns arrays [S]."""
    out: dict[str, list[float]] = {"mu": [], "mu_early": [], "mu_late": []}
    for s in range(tt.msd.shape[0]):
        ts = timescales(TwoTime(tt.t_w, tt.lags, tt.msd[s:s + 1], tt.m4[s:s + 1]), level)
        for k in out:
            out[k].append(ts[k])
    return {k: np.asarray(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------- driver ---
@dataclass
class AgingResult:
    """One network's aging run (all seeds).

    Attributes:
        widths: the layer widths.
        seeds: [S].
        two_time: Δ, Δ₄ on the (t_w, lag) grid.
        curve_steps: [C] log-spaced steps of the curves and of D.
        train_loss, train_acc, test_loss, test_acc: [S, C].
        noise_D, noise_mean_sq, noise_grad_sq: [S, C] gradient noise D(t) and its two terms.
        theta_final: [S, P] θ at the last step.
        settings: lr, batch_size, steps, noise_rows, eval_rows.
    """

    widths: list[int]
    seeds: np.ndarray
    two_time: TwoTime
    curve_steps: np.ndarray
    train_loss: np.ndarray
    train_acc: np.ndarray
    test_loss: np.ndarray
    test_acc: np.ndarray
    noise_D: np.ndarray
    noise_mean_sq: np.ndarray
    noise_grad_sq: np.ndarray
    theta_final: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    def curves(self) -> dict[str, np.ndarray]:
        return {"step": self.curve_steps, "train_loss": self.train_loss, "train_acc": self.train_acc,
                "test_loss": self.test_loss, "test_acc": self.test_acc}

    def to_arrays(self) -> dict[str, np.ndarray]:
        tt = self.two_time
        return {"widths": np.asarray(self.widths), "seeds": self.seeds, "t_w": tt.t_w, "lags": tt.lags,
                "msd": tt.msd, "m4": tt.m4, "curve_steps": self.curve_steps, "train_loss": self.train_loss,
                "train_acc": self.train_acc, "test_loss": self.test_loss, "test_acc": self.test_acc,
                "noise_D": self.noise_D, "noise_mean_sq": self.noise_mean_sq, "noise_grad_sq": self.noise_grad_sq,
                "theta_final": self.theta_final}

    @classmethod
    def from_arrays(cls, z: dict[str, np.ndarray], settings: dict[str, Any] | None = None) -> "AgingResult":
        return cls([int(w) for w in z["widths"]], z["seeds"], TwoTime(z["t_w"], z["lags"], z["msd"], z["m4"]),
                   z["curve_steps"], z["train_loss"], z["train_acc"], z["test_loss"], z["test_acc"], z["noise_D"],
                   z["noise_mean_sq"], z["noise_grad_sq"], z["theta_final"], dict(settings or {}))


class _Observer:
    """Everything measured along the path: the two-time grid, and at the curve steps the full
    train/test loss and accuracy and the gradient noise."""

    _CURVES = ("train_loss", "train_acc", "test_loss", "test_acc", "noise_D", "noise_mean_sq", "noise_grad_sq")

    def __init__(self, mlp: MLP, data: Dataset, S: int, t_w: np.ndarray, lags: np.ndarray, curve_steps: np.ndarray,
                 noise_rows: int | None, eval_rows: int | None, backend: str, dtype: np.dtype):
        self.mlp, self.backend = mlp, backend
        self.tt = TwoTimeStream(t_w, lags)
        self.curve_steps = curve_steps
        self._ci = {int(s): i for i, s in enumerate(curve_steps)}
        self.c = {k: np.full((S, len(curve_steps)), np.nan) for k in self._CURVES}
        cast = (lambda a: a if a.dtype == dtype else a.astype(dtype))
        self.tr = (cast(data.X_train[:eval_rows]), data.y_train[:eval_rows])
        self.te = (cast(data.X_test[:eval_rows]), data.y_test[:eval_rows])
        self.nz = (cast(data.X_train[:noise_rows]), data.y_train[:noise_rows])

    def __call__(self, t: int, theta: np.ndarray) -> None:
        if t <= self.tt.t_last:
            return
        i = self._ci.get(int(t))
        if i is not None:
            ok = np.all(np.isfinite(theta), axis=1)
            if ok.any():
                th = theta[ok]
                for split, (X, y) in (("train", self.tr), ("test", self.te)):
                    loss, acc, _ = ops.evaluate(self.mlp, th, X, y, backend=self.backend)
                    self.c[f"{split}_loss"][ok, i] = loss
                    self.c[f"{split}_acc"][ok, i] = acc
                nz = gradient_noise(self.mlp, th, *self.nz, backend=self.backend)
                self.c["noise_D"][ok, i] = nz.D
                self.c["noise_mean_sq"][ok, i] = nz.mean_sq
                self.c["noise_grad_sq"][ok, i] = nz.grad_sq
        self.tt(t, theta)

    def state(self) -> dict[str, np.ndarray]:
        return self.tt.state() | {f"c_{k}": v for k, v in self.c.items()}

    def load_state(self, st: dict[str, np.ndarray]) -> None:
        self.tt.load_state(st)
        for k in self._CURVES:
            self.c[k] = np.array(st[f"c_{k}"], dtype=np.float64)


def run_aging(mlp: MLP, data: Dataset, seeds: Sequence[int] | int, *, lr: float = 0.1, batch_size: int = 100,
              steps: int = 10_000, t_w: Any = None, lags: Any = None, curve_points: int = 30,
              noise_rows: int | None = None, eval_rows: int | None = None, dtype: Any = np.float32,
              backend: str = "auto", progress: bool | None | Progress = True, checkpoint: str | Path | None = None,
              checkpoint_every: int = 0, moves: Sequence[Any] | None = None) -> AgingResult:
    """Train one network with SGD and measure its aging and diffusion on the way.

    The outer path is :func:`fasttrap.dynamics.outer.outer_sgd` (same seeds give the same path as the trap
    analysis). Along it: Δ, Δ₄ on the (t_w, lag) grid (snapshots only at the t_w), and at
    ``curve_points`` log-spaced steps the full train/test loss and accuracy and the gradient noise
    D(t) over the training set.

    Args:
        mlp: the network.
        data: the data set.
        seeds: seeds (an int means ``range(seeds)``), trained together.
        lr: SGD learning rate.
        batch_size: SGD minibatch size.
        steps: SGD steps.
        t_w: [W] waiting times (default :func:`default_grids`).
        lags: [T] lags (default :func:`default_grids`).
        curve_points: about how many log-spaced steps get the curves and D.
        noise_rows: training rows over which D is computed (None: all).
        eval_rows: rows of each set for the loss/accuracy curves (None: all).
        dtype: float32 or float64 for training.
        backend: ``auto``, ``cpu``, ``cuda`` or ``torch``.
        progress: as in :func:`fasttrap.dynamics.outer.outer_sgd`.
        checkpoint: a file to checkpoint to (atomically) and to resume from if it exists. A
            resumed run gives bit-identical results.
        checkpoint_every: steps between checkpoints (0: about 20 per run).
        moves: swap moves (:class:`fasttrap.Swap`) inside the SGD (:func:`fasttrap.dynamics.outer.outer_sgd`).
            Δ is measured on the permutation-aligned weights, so paired swaps, which are symmetries,
            do not show up as motion; the other moves are real motion and do.

    Returns:
        :class:`AgingResult`.
    """
    check_model(mlp)
    steps = check_int(steps, "steps", lo=2)
    if t_w is None or lags is None:
        dtw, dlg = default_grids(steps)
        t_w = dtw if t_w is None else t_w
        lags = dlg if lags is None else lags
    t_w, lags = _check_grids(t_w, lags)
    if t_w[-1] > steps:
        raise ValueError(f"t_w: the largest waiting time {t_w[-1]} is beyond steps={steps}")
    seed_list = list(range(seeds)) if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool) else list(seeds)
    if not seed_list:
        raise ValueError("seeds: need at least one seed")
    noise_rows = None if noise_rows is None else check_int(noise_rows, "noise_rows", lo=1)
    eval_rows = None if eval_rows is None else check_int(eval_rows, "eval_rows", lo=1)
    every = check_int(checkpoint_every, "checkpoint_every", lo=0) or max(1, -(-steps // 20))
    dt = np.dtype(dtype)
    cs = log_spaced_steps(steps, curve_points)
    obs = _Observer(mlp, data, len(seed_list), t_w, lags, cs, noise_rows, eval_rows, backend, dt)
    ident = {"widths": np.asarray(mlp.widths), "seeds": np.asarray(seed_list), "t_w": t_w, "lags": lags,
             "curve_steps": cs, "hyper": np.array([lr, batch_size, steps, noise_rows or 0, eval_rows or 0], dtype=np.float64),
             "moves": np.asarray([repr(m) for m in (moves or [])], dtype=str)}

    t0, theta, align = 0, None, None
    ck = Path(checkpoint) if checkpoint is not None else None
    if ck is not None and ck.exists():
        st = store.read_npz(ck)
        for k, v in ident.items():
            if k == "moves" and k not in st and v.size == 0:      # written before moves existed, and none now
                continue
            if k not in st or not np.array_equal(st[k], v):
                raise ValueError(f"checkpoint: {ck} was written by a run with other settings ({k} differs); "
                                 "remove it or use the settings it was made with")
        t0, theta = int(st["t"]), st["theta"].astype(dt)
        align = st.get("alignment")
        obs.load_state(st)

    own_bar = not isinstance(progress, Progress)
    name = mlp.label
    bar = Progress(steps, f"aging {name}", "step", enabled=progress) if own_bar else progress
    bar.update_to(t0)
    try:
        while True:
            t1 = min(steps, t0 + every)
            res = outer_sgd(mlp, data, seed_list, lr=lr, batch_size=batch_size, steps=t1, record=[t1], curve_points=0,
                            dtype=dt, backend=backend, progress=bar, theta0=theta, start=t0, observe=obs,
                            moves=moves, alignment0=align)
            # continue from θ as the dynamics hold it (and the paired-swap relabelling), not the aligned copy
            theta, t0 = (res.theta_end if res.theta_end is not None else res.thetas[:, 0]), t1
            align, shown = res.alignment, res.thetas[:, 0]
            if ck is not None:
                extra = {"alignment": align} if align is not None else {}
                store.write_npz(ck, t=np.array(t0), theta=theta, **ident, **extra, **obs.state())
            if t0 >= steps:
                break
    finally:
        if own_bar:
            bar.close()
    c = obs.c
    return AgingResult(list(mlp.widths), np.asarray(seed_list), obs.tt.result(), cs, c["train_loss"], c["train_acc"],
                       c["test_loss"], c["test_acc"], c["noise_D"], c["noise_mean_sq"], c["noise_grad_sq"], shown,
                       {"lr": lr, "batch_size": batch_size, "steps": steps, "noise_rows": noise_rows,
                        "eval_rows": eval_rows})


def aging_verdict(ts: dict[str, Any], threshold: float = 0.2) -> str:
    """A one-line reading of :func:`fasttrap.analysis.aging.timescales` (the rule is stated in the report).

    τ growing at least like t_w^threshold over a half of the waiting times counts as aging there;
    aging in the first half whose second-half slope falls below the threshold or below half its early
    slope (the complement of "aging throughout") is read as interrupted.
    """
    e, l = ts["mu_early"], ts["mu_late"]
    if not (np.isfinite(e) and np.isfinite(l)):
        return "undetermined (too few waiting times reach the reference level)"
    if e > threshold and l > threshold and l >= 0.5 * e:
        return "aging throughout: the older the network, the slower it moves, up to the last waiting time"
    if e > threshold and l < max(threshold, 0.5 * e):
        return "interrupted aging: slows with age at first, then its motion stops depending on t_w"
    if e <= threshold and l > threshold:
        return "aging sets in late: little t_w dependence early, slowing with age later"
    return "no aging: the motion does not slow with t_w"
