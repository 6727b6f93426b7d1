"""Trap identity at the budget the protocol uses: ledges of the endpoint series against their rerun noise.

At a finite inner budget no endpoint is a critical point, and every endpoint of one trap drifts as
the budget grows; what identifies a trap is that consecutive outer points land on the *same ledge*
of the endpoint series. The reference study read trapping times off the peaks of the end-to-end
weight distance, confirmed by ledges of the endpoint loss and of G. This module makes that reading a
rule with a refusal:

* **signals.** For consecutive valid endpoints t, t+1 of a window: the end-to-end distance
  ‖θ*_{t+1} − θ*_t‖, the endpoint-loss step |ℓ_{t+1} − ℓ_t| and the G step |log₁₀ G_{t+1} − log₁₀ G_t|;
* **their noise,** measured at the *same budget*: the same differences between an endpoint and the
  rerun of its inner descent from the same start point with another batch order (never a budget
  change, whose drift every endpoint of a trap shares). The noise unit of a signal is the
  ``quantile`` (0.9) of those differences; a signal's steps are read in that unit, z. A rerun that
  landed in another trap (its distance *and* its loss far beyond the others', :func:`screen_reruns`)
  measures a jump, not noise, and is left out;
* **the joint step** z_t = min(z_distance, z_loss): a trap change needs the weights *and* the loss to
  move, so the evidence of a step is the smaller of the two;
* **separation** (:func:`separate`, on the joint step): within-trap and between-trap steps separate
  when the joint steps leave an *empty interval* (a, b) with b ≥ ``threshold`` (3 noise units: a
  change stands clear of the noise) and b/a ≥ ``min_gap`` (1.5); the lowest such interval is taken
  and the steps above it are the trap changes. A drift whose steps straddle the threshold fills every
  interval and is refused; so is a window where more than ``max_share`` of the steps change;
* **drift inside a trap:** every trap's total drift of the endpoint loss (in noise units) is
  reported beside its length: a long trap of the late phase drifts slowly along its ledge. A window
  with no change at all whose loss drifts by more than ``max_spread`` noise units is refused: a slow
  drift whose every step stays below the threshold is not one trap;
* **agreement:** a step where one primary signal moves as much as it does at the changes while the
  other does not is *disputed* (a jump of the weights at a constant loss, or the reverse); more than
  ``max_disputed`` of them refuses. The report lists every step a signal marks, with the z of each
  signal (G beside the primary two);
* **returns** (A → B → A): two non-adjacent segments are visits of one trap when their closest
  endpoints are within ``threshold`` distance-noise units and their median losses within
  ``threshold`` loss-noise units (needs the pairwise distances of the window);
* **budget stability** (:func:`budget_table`): the same rule on the checkpoints (the endpoints at
  fractions of the budget, with their reruns' checkpoints as noise) says whether each trap change is
  already there at each fraction.

:func:`fasttrap.traps_from_endpoints` runs all of it on endpoints computed any way at all; the main
job calls that same function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .traps import Segments, trapping_times

PRIMARY = ("distance", "loss")
SIGNALS = ("distance", "loss", "G")
DEFAULTS = {"threshold": 3.0, "min_gap": 1.5, "max_share": 0.5, "max_disputed": 0.1, "max_spread": 10.0,
            "quantile": 0.9}


@dataclass
class Signal:
    """One endpoint signal of a window, in units of its rerun noise.

    Attributes:
        name: 'distance', 'loss' or 'G'.
        z: [T−1] the step between points t and t+1 in noise units (NaN where either is invalid).
        noise: the noise unit (the quantile of the rerun differences), in the signal's own unit.
        separable: whether the steps leave an empty interval (see :func:`separate`).
        gap: [a, b] the empty interval in noise units ([nan, nan] when there is none).
        changes: [T−1] bool, the steps above the interval (all False when not separable).
        why: the reason when not separable ('' otherwise).
    """

    name: str
    z: np.ndarray
    noise: float
    separable: bool
    gap: list[float]
    changes: np.ndarray
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"noise": self.noise, "separable": self.separable, "gap": self.gap, "why": self.why,
                "n_changes": int(self.changes.sum())}


@dataclass
class LedgeTraps:
    """Traps of one window by the ledge rule.

    Attributes:
        boundaries: [M] window indices where a new segment begins (trap changes).
        boundary_steps: [M] their outer steps.
        segments: the visits as :class:`Segments` (lengths are trapping times; first and last
            censored, visits touching invalid endpoints flagged).
        visit_trap: [V] the trap of each visit (0, 1, … by first appearance; −1 for invalid).
        n_distinct, n_visits, n_returns: distinct traps, valid visits, visits to a trap seen before.
        separable: the verdict: the trapping times are clean.
        why: the reasons when not separable (empty when clean).
        signals: the :class:`Signal` of each signal used.
        agreement: one row per candidate change (a step any primary signal marks): its window
            index, outer step, z of every signal, which signals mark it, and whether it is disputed.
        budget: the budget-stability table (:func:`budget_table`), or None without checkpoints.
        settings: the settings the rule ran with.
        series: the series the rule read (:func:`traps_from_series`; ``series_to_arrays`` stores it).
    """

    boundaries: np.ndarray
    boundary_steps: np.ndarray
    segments: Segments
    visit_trap: np.ndarray
    n_distinct: int
    n_visits: int
    n_returns: int
    separable: bool
    why: list[str]
    signals: dict[str, Signal]
    agreement: list[dict[str, Any]]
    budget: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] | None = None
    spread: dict[str, Any] | None = None
    reruns_elsewhere: int = 0
    drift: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if not self.separable:
            return "refused: " + "; ".join(self.why)
        if not self.boundaries.size:
            return "clean: no trap change in the window (one trap spans it; no complete trapping time)"
        return (f"clean: {self.boundaries.size} trap changes, {self.n_distinct} distinct traps, "
                f"{self.n_returns} returns")

    def complete_lengths(self) -> np.ndarray:
        """The complete trapping times (neither censored nor flagged)."""
        s = self.segments
        return s.lengths[~s.censored & ~s.flagged]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no arrays longer than the number of changes)."""
        return {"separable": self.separable, "verdict": self.verdict, "why": self.why,
                "boundaries": self.boundaries.tolist(), "boundary_steps": self.boundary_steps.tolist(),
                "lengths": self.segments.lengths.tolist(), "censored": self.segments.censored.tolist(),
                "flagged": self.segments.flagged.tolist(), "visit_trap": self.visit_trap.tolist(),
                "distinct": self.n_distinct, "visits": self.n_visits, "returns": self.n_returns,
                "signals": {k: v.to_dict() for k, v in self.signals.items()}, "agreement": self.agreement,
                "budget": self.budget, "settings": self.settings, "spread": self.spread,
                "reruns_elsewhere": self.reruns_elsewhere, "drift": self.drift}


def noise_unit(differences: Any, quantile: float = 0.9, name: str = "differences") -> float:
    """The noise unit of a signal: the ``quantile`` of its rerun differences (finite ones).

    Raises:
        ValueError: no finite difference, or a quantile outside (0, 1).
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile: must be in (0, 1), got {quantile}")
    d = np.abs(np.asarray(differences, dtype=np.float64).ravel())
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError(f"{name}: need at least one finite rerun difference to measure the noise")
    q = float(np.quantile(d, quantile))
    # identical reruns (a deterministic descent) have no noise: one ulp-scale floor keeps z finite
    return q if q > 0 else float(max(np.max(d), 1e-300)) if np.max(d) > 0 else 1e-300


def screen_reruns(noise: dict[str, Any], threshold: float = 3.0) -> tuple[dict[str, np.ndarray], int]:
    """The rerun differences that measure the noise of one trap, and how many reruns landed elsewhere.

    A start point near a trap change can descend into either trap, depending on the batch order; its
    rerun then differs by a jump, not by noise. A rerun whose distance *and* loss difference both
    exceed ``threshold`` × a robust noise unit (the q90 a half-normal with the same median would
    have: median × 1.645/0.674) landed in another trap and is left out of every signal's noise.
    The arrays of ``noise`` must be aligned (one entry per rerun) for the screen to apply.
    """
    d = np.abs(np.asarray(noise["distance"], dtype=np.float64).ravel())
    l = np.abs(np.asarray(noise["loss"], dtype=np.float64).ravel())
    if d.shape != l.shape or d.size < 3:
        return dict(noise), 0
    ok = np.isfinite(d) & np.isfinite(l)
    if ok.sum() < 3:
        return dict(noise), 0
    scale = 1.645 / 0.674
    ud, ul = np.median(d[ok]) * scale, np.median(l[ok]) * scale
    away = ok & (d > threshold * ud) & (l > threshold * ul)
    if not away.any():
        return dict(noise), 0
    out = {k: (np.asarray(v, dtype=np.float64).ravel()[~away] if np.size(v) == d.size else np.asarray(v))
           for k, v in noise.items()}
    return out, int(away.sum())


def separate(z: Any, threshold: float = 3.0, min_gap: float = 1.5, max_share: float = 0.5
             ) -> tuple[bool, list[float], np.ndarray, str]:
    """Do a signal's steps z [T−1] (noise units; NaN ignored) separate within-trap from between-trap?

    Among the sorted finite values, the lowest empty interval (a, b) between neighbours with
    b ≥ ``threshold`` and b/a ≥ ``min_gap`` is found (a = 0 when b is the smallest value; the lowest,
    so that jumps of several sizes all count as changes). The signal separates when there is one and
    at most ``max_share`` of the steps lie at or above b; those steps are its trap changes. When no step reaches the threshold the signal separates trivially, with no change.

    Returns:
        ``(separable, [a, b], changes [T−1] bool, why)``.
    """
    z = np.asarray(z, dtype=np.float64)
    ok = np.isfinite(z)
    none = np.zeros(z.shape, bool)
    v = np.sort(z[ok])
    if v.size == 0:
        return False, [float("nan")] * 2, none, "no pair of consecutive valid endpoints"
    if v[-1] < threshold:
        return True, [float(v[-1]), float("inf")], none, ""
    lo = np.concatenate([[0.0], v[:-1]])
    cand = np.flatnonzero(v >= threshold)
    with np.errstate(divide="ignore", over="ignore"):
        ratio = np.where(lo[cand] > 0, v[cand] / np.maximum(lo[cand], 1e-300), np.inf)
    wide = np.flatnonzero(ratio >= min_gap)
    if not wide.size:
        return False, [float("nan")] * 2, none, (
            f"no empty interval between within-trap and between-trap steps (the widest above {threshold:g} noise "
            f"units spans a ratio {float(np.max(ratio)):.2f} < {min_gap:g}: a continuous drift)")
    i = cand[wide[0]]                  # the lowest such interval: jumps of several sizes all count
    a, b = float(lo[i]), float(v[i])
    changes = ok & (np.nan_to_num(z, nan=-np.inf) >= b)
    share = changes.sum() / v.size
    if share > max_share:
        return False, [a, b], none, f"{share:.0%} of the steps are changes (> {max_share:.0%}): every step moves"
    return True, [a, b], changes, ""


def _steps(x: np.ndarray, valid: np.ndarray, log: bool = False) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log10(np.where(x > 0, x, np.nan))
    d = np.abs(np.diff(x))
    d[~(valid[1:] & valid[:-1])] = np.nan
    return d


def ledges(steps: Any, consecutive: Any, loss: Any, noise: dict[str, Any], *, G: Any = None, invalid: Any = None,
           pairwise: Any = None, threshold: float = 3.0, min_gap: float = 1.5, max_share: float = 0.5,
           max_disputed: float = 0.1, max_spread: float = 10.0, quantile: float = 0.9) -> LedgeTraps:
    """The ledge rule on one window's series (the array core of :func:`fasttrap.traps_from_endpoints`).

    Args:
        steps: [T] outer step of each point.
        consecutive: [T−1] ‖θ*_{t+1} − θ*_t‖.
        loss: [T] endpoint loss; G: [T] endpoint G (optional: a third, reported signal).
        noise: rerun differences per signal: ``{"distance": [R], "loss": [R], "G": [R]}`` (G's in
            log₁₀), each |main − rerun| at one start point; "G" optional.
        invalid: [T] endpoints to leave out (diverged, non-finite …).
        pairwise: [T, T] distances of the endpoints, for returns (None: no return is looked for).
        threshold, min_gap, max_share: of :func:`separate`; max_disputed: the share of changes seen
            by one primary signal only that still allows a clean verdict; quantile: the noise unit.

    Returns:
        :class:`LedgeTraps`.
    """
    st = np.asarray(steps).reshape(-1)
    T = st.size
    if T < 1:
        raise ValueError("steps: need at least one point")
    cons = np.asarray(consecutive, dtype=np.float64).reshape(-1)
    if cons.shape != (T - 1,):
        raise ValueError(f"consecutive: expected shape [{T - 1}], got {list(cons.shape)}")
    ls = np.asarray(loss, dtype=np.float64).reshape(-1)
    if ls.shape != (T,):
        raise ValueError(f"loss: expected shape [{T}], got {list(ls.shape)}")
    bad = np.zeros(T, bool) if invalid is None else np.asarray(invalid, bool).reshape(-1)
    if bad.shape != (T,):
        raise ValueError(f"invalid: expected shape [{T}], got {list(bad.shape)}")
    valid = ~bad & np.isfinite(ls)
    for k in ("distance", "loss"):
        if k not in noise:
            raise ValueError(f"noise: needs the rerun differences of '{k}'")
    raw = {"distance": np.where(valid[1:] & valid[:-1], cons, np.nan), "loss": _steps(ls, valid)}
    if G is not None:
        Gv = np.asarray(G, dtype=np.float64).reshape(-1)
        if Gv.shape != (T,):
            raise ValueError(f"G: expected shape [{T}], got {list(Gv.shape)}")
        if noise.get("G") is not None and np.isfinite(np.asarray(noise["G"], float)).any():
            raw["G"] = _steps(Gv, valid, log=True)
    kw = dict(threshold=threshold, min_gap=min_gap, max_share=max_share)
    noise, elsewhere = screen_reruns(noise, threshold)
    sig: dict[str, Signal] = {}
    for k, r in raw.items():
        u = noise_unit(noise[k], quantile, name=f"noise['{k}']")
        with np.errstate(over="ignore"):
            z = r / u
        sep, gap, ch, why = separate(z, **kw)
        sig[k] = Signal(k, z, u, sep, gap, ch, why)
    # The joint step: a trap change needs the distance *and* the loss to move, so the evidence of a
    # step is the smaller of its two z; the separation test runs on it.
    with np.errstate(invalid="ignore"):
        joint = np.fmin(sig["distance"].z, sig["loss"].z)
        joint[~(np.isfinite(sig["distance"].z) & np.isfinite(sig["loss"].z))] = np.nan
    j_sep, j_gap, both, j_why = separate(joint, **kw)
    sig["joint"] = Signal("joint", joint, 1.0, j_sep, j_gap, both, j_why)
    why: list[str] = [] if j_sep else [j_why]
    # A step is *disputed* when one primary signal moves there as much as it does at the changes (at
    # least its smallest z among them; with no change, its own separating interval's upper end) while
    # the other does not.
    disputed = np.zeros(T - 1, bool)
    for k in PRIMARY:
        own = sig[k]
        zk = np.nan_to_num(own.z, nan=-np.inf)
        top = float(np.min(zk[both])) if both.any() else (own.gap[1] if own.separable and own.changes.any() else np.inf)
        disputed |= ~both & (zk >= max(threshold, top))
    marked = np.zeros(T - 1, bool)
    for k in PRIMARY:
        with np.errstate(invalid="ignore"):
            marked |= np.nan_to_num(sig[k].z, nan=-np.inf) >= threshold
    agreement = []
    for t in np.flatnonzero(marked | both):
        agreement.append({"index": int(t + 1), "step": _num(st[t + 1]),
                          **{f"z_{k}": _f(s.z[t]) for k, s in sig.items()},
                          "marked_by": [k for k in sig if k != "joint" and np.nan_to_num(sig[k].z[t], nan=-1) >= threshold],
                          "change": bool(both[t]), "disputed": bool(disputed[t])})
    n_ch = int(both.sum())
    if not why and disputed.sum() and disputed.sum() > max_disputed * (n_ch + disputed.sum()):
        why.append(f"the distance and the loss disagree: {int(disputed.sum())} step(s) where one of them moves as much "
                   f"as at the {n_ch} change(s) and the other does not (> {max_disputed:.0%} allowed)")
    b = np.flatnonzero(both) + 1 if not why else np.zeros(0, np.int64)
    drift = []
    if not why:
        # how far each trap's endpoints drift in all (loss range, in loss-noise units): reported; with no
        # change at all, a window that drifts by more than max_spread is refused (a slow drift whose
        # every step stays below the threshold is not one trap)
        edges = np.r_[0, b, T]
        for a_, e_ in zip(edges[:-1], edges[1:]):
            ok = np.flatnonzero(valid[a_:e_]) + a_
            rng_ = float((np.nanmax(ls[ok]) - np.nanmin(ls[ok])) / sig["loss"].noise) if ok.size > 1 else 0.0
            drift.append({"from": _num(st[a_]), "to": _num(st[e_ - 1]), "loss_drift": rng_})
        if not b.size and drift and drift[0]["loss_drift"] > max_spread:
            why.append(f"no trap change, but the endpoint loss drifts by {drift[0]['loss_drift']:.1f} noise units "
                       f"over the window (> max_spread {max_spread:g}): a slow drift, not one trap")
    if not why and not b.size:
        # one trap spans the window: say how far its endpoints spread, so a slow drift shows
        ok = np.flatnonzero(valid)
        spread = {"loss_range": _f((np.nanmax(ls[ok]) - np.nanmin(ls[ok])) / sig["loss"].noise) if ok.size else None}
        if pairwise is not None and ok.size:
            spread["max_distance"] = _f(np.max(np.asarray(pairwise)[np.ix_(ok, ok)]) / sig["distance"].noise)
    else:
        spread = None
    seg = trapping_times(b, T, invalid=bad)
    trap = _visit_traps(seg, ls, pairwise, sig, threshold, valid)
    vt = trap[~seg.flagged] if trap.size else trap
    seen: set[int] = set()
    returns = 0
    for x in vt:
        returns += int(int(x) in seen)
        seen.add(int(x))
    settings = dict(threshold=threshold, min_gap=min_gap, max_share=max_share, max_disputed=max_disputed,
                    max_spread=max_spread, quantile=quantile)
    return LedgeTraps(boundaries=b, boundary_steps=st[b], segments=seg, visit_trap=trap, n_distinct=len(seen),
                      n_visits=int((~seg.flagged).sum()), n_returns=returns, separable=not why, why=why, signals=sig,
                      agreement=agreement, settings=settings, spread=spread, reruns_elsewhere=elsewhere,
                      drift=drift)


def _visit_traps(seg: Segments, loss: np.ndarray, pairwise: Any, sig: dict[str, Signal], threshold: float,
                 valid: np.ndarray) -> np.ndarray:
    """The trap of each visit: non-adjacent visits whose closest valid endpoints lie within ``threshold``
    distance-noise units and whose median losses lie within ``threshold`` loss-noise units are one trap."""
    V = seg.lengths.size
    parent = list(range(V))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    members = [np.arange(a, a + n)[valid[a:a + n]] for a, n in zip(seg.starts, seg.lengths)]
    if pairwise is not None:
        D = np.asarray(pairwise, dtype=np.float64)
        med = [float(np.median(loss[m])) if m.size else np.nan for m in members]
        for i in range(V):
            for j in range(i + 2, V):
                if seg.flagged[i] or seg.flagged[j] or not members[i].size or not members[j].size:
                    continue
                close = np.min(D[np.ix_(members[i], members[j])]) <= threshold * sig["distance"].noise
                level = abs(med[i] - med[j]) <= threshold * sig["loss"].noise
                if close and level:
                    parent[find(j)] = find(i)
    out = np.full(V, -1, np.int64)
    names: dict[int, int] = {}
    for i in range(V):
        if not seg.flagged[i]:
            out[i] = names.setdefault(find(i), len(names))
    return out


def budget_table(final: LedgeTraps, at_fraction: dict[float, LedgeTraps]) -> dict[str, Any]:
    """Whether each trap change of the final budget is already there at each checkpoint fraction.

    Returns:
        ``{"fractions": [...], "rows": [{"step", "present": {f: bool}}], "per_fraction": {f: {"separable",
        "changes", "shared", "extra", "missing"}}, "stable_from": the smallest fraction from which every
        later fraction finds exactly the final changes (None if none does)}``.
    """
    fin = set(final.boundary_steps.tolist())
    fr = sorted(at_fraction)
    per: dict[str, Any] = {}
    same: dict[float, bool] = {}
    for f in fr:
        lt = at_fraction[f]
        got = set(lt.boundary_steps.tolist())
        per[f"{f:g}"] = {"separable": lt.separable, "why": lt.why, "changes": len(got), "shared": len(got & fin),
                         "extra": sorted(got - fin), "missing": sorted(fin - got)}
        same[f] = lt.separable and got == fin
    rows = [{"step": int(s), "present": {f"{f:g}": bool(s in set(at_fraction[f].boundary_steps.tolist()))
                                          for f in fr}} for s in sorted(fin)]
    stable = None
    for i, f in enumerate(fr):
        if all(same[g] for g in fr[i:]):
            stable = f
            break
    return {"fractions": [float(f) for f in fr], "rows": rows, "per_fraction": per,
            "stable_from": None if stable is None else float(stable)}


def _f(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _num(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _rows(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a [n, P] array of endpoints, got shape {list(a.shape)}")
    return a


def _vec(x: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected shape [{n}], got {list(np.shape(x))}")
    return a


def _noise(main_loss: np.ndarray, main_G: np.ndarray | None, at: np.ndarray, r_dist: np.ndarray, r_loss: np.ndarray,
           r_G: np.ndarray | None) -> dict[str, np.ndarray]:
    out = {"distance": r_dist, "loss": np.abs(main_loss[at] - r_loss)}
    if main_G is not None and r_G is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            out["G"] = np.abs(np.log10(main_G[at]) - np.log10(r_G))
    return out


def traps_from_endpoints(steps: Any, theta_end: Any, loss_end: Any, *, rerun_steps: Any, rerun_theta_end: Any,
                         rerun_loss_end: Any, G_end: Any = None, rerun_G_end: Any = None, checkpoints: Any = None,
                         invalid: Any = None, **settings: Any) -> LedgeTraps:
    """Traps and trapping times of one window from its inner endpoints, computed any way you like.

    Args:
        steps: [T] outer steps of the window's points, increasing.
        theta_end: [T, P] the inner endpoints θ*_t.
        loss_end: [T] their loss (on the full training set, or any fixed rows); G_end: [T] their G.
        rerun_steps: [R] outer steps (among ``steps``) whose inner descent was rerun at the same
            budget with another batch order; rerun_theta_end [R, P], rerun_loss_end [R],
            rerun_G_end [R]: the reruns' endpoints, loss and G.
        checkpoints: optional list of the same endpoints at fractions of the budget, each a dict
            ``{"fraction": f, "theta": [T, P] (or "consecutive": [T−1]), "loss": [T], "G": [T],
            "rerun_theta": [R, P] (or "rerun_distance": [R], each rerun checkpoint's distance to the
            main one), "rerun_loss": [R], "rerun_G": [R]}``; the result then carries the
            budget-stability table.
        invalid: [T] endpoints to leave out.
        **settings: ``threshold``, ``min_gap``, ``max_share``, ``max_disputed``, ``quantile`` of
            :func:`ledges` (defaults in :data:`DEFAULTS`).

    Returns:
        :class:`LedgeTraps`: boundaries (as outer steps too), segment lengths, which are censored,
        the returns, the verdict and its evidence.

    Example:
        >>> r = fasttrap.traps_from_endpoints(steps, th, loss, rerun_steps=steps[::4],
        ...                                   rerun_theta_end=th_r, rerun_loss_end=loss_r)
        >>> r.verdict, r.boundary_steps, r.complete_lengths()
    """
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"traps_from_endpoints: unknown setting(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    st = np.asarray(steps).reshape(-1)
    T = st.size
    if T < 1 or np.any(np.diff(st) <= 0):
        raise ValueError("steps: expected at least one outer step, strictly increasing")
    th = _rows(theta_end, "theta_end")
    if th.shape[0] != T:
        raise ValueError(f"theta_end: expected {T} rows (one per step), got {th.shape[0]}")
    loss = _vec(loss_end, T, "loss_end")
    G = None if G_end is None else _vec(G_end, T, "G_end")
    rs = np.asarray(rerun_steps).reshape(-1)
    at = np.searchsorted(st, rs)
    if rs.size == 0 or np.any(at >= T) or np.any(st[np.minimum(at, T - 1)] != rs):
        raise ValueError("rerun_steps: expected one or more of the window's outer steps")
    R = rs.size
    rth = _rows(rerun_theta_end, "rerun_theta_end")
    if rth.shape != (R, th.shape[1]):
        raise ValueError(f"rerun_theta_end: expected shape [{R}, {th.shape[1]}], got {list(rth.shape)}")
    rloss = _vec(rerun_loss_end, R, "rerun_loss_end")
    rG = None if rerun_G_end is None else _vec(rerun_G_end, R, "rerun_G_end")
    bad = np.zeros(T, bool) if invalid is None else _vec(invalid, T, "invalid").astype(bool)
    bad |= ~np.isfinite(th).all(1) | ~np.isfinite(loss)
    ok_r = np.isfinite(rth).all(1) & np.isfinite(rloss) & ~bad[at]
    r_dist = np.linalg.norm(th[at] - rth, axis=1)
    noise = _noise(loss, G, at, r_dist, rloss, rG)
    noise = {k: v[ok_r] for k, v in noise.items()}
    cons = np.linalg.norm(th[1:] - th[:-1], axis=1) if T > 1 else np.zeros(0)
    series: dict[str, Any] = {"steps": st, "consecutive": cons, "loss": loss, "G": G, "invalid": bad,
                              "pairwise": _pairwise(th), "noise": noise, "checkpoints": []}
    for c in checkpoints or []:
        f = float(c["fraction"])
        if not 0 < f < 1:
            raise ValueError(f"checkpoints: fraction must be in (0, 1), got {f}")
        if "theta" in c:
            ct = _rows(c["theta"], "checkpoints theta")
            c_cons = np.linalg.norm(ct[1:] - ct[:-1], axis=1)
        else:
            c_cons = _vec(c["consecutive"], T - 1, "checkpoints consecutive")
        if "rerun_theta" in c:
            if "theta" not in c:
                raise ValueError("checkpoints: rerun_theta needs theta (or give rerun_distance)")
            c_rd = np.linalg.norm(ct[at] - _rows(c["rerun_theta"], "checkpoints rerun_theta"), axis=1)
        else:
            c_rd = _vec(c["rerun_distance"], R, "checkpoints rerun_distance")
        cl = _vec(c["loss"], T, "checkpoints loss")
        cG = None if c.get("G") is None else _vec(c["G"], T, "checkpoints G")
        crG = None if c.get("rerun_G") is None else _vec(c["rerun_G"], R, "checkpoints rerun_G")
        cn = _noise(cl, cG, at, c_rd, _vec(c["rerun_loss"], R, "checkpoints rerun_loss"), crG)
        okc = ok_r & np.isfinite(c_rd)
        series["checkpoints"].append({"fraction": f, "consecutive": c_cons, "loss": cl, "G": cG,
                                      "invalid": bad | ~np.isfinite(cl), "noise": {k: v[okc] for k, v in cn.items()}})
    return traps_from_series(series, **settings)


def traps_from_series(series: dict[str, Any], **settings: Any) -> LedgeTraps:
    """The ledge rule on a window's stored series (what :func:`traps_from_endpoints` computes from θ and a
    run directory keeps in ``ledges.npz``): ``steps``, ``consecutive``, ``loss``, ``G``, ``invalid``,
    ``pairwise``, ``noise`` (per signal) and ``checkpoints`` (a list of the same per fraction)."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"traps_from_series: unknown setting(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    kw = DEFAULTS | settings
    final = ledges(series["steps"], series["consecutive"], series["loss"], series["noise"], G=series.get("G"),
                   invalid=series.get("invalid"), pairwise=series.get("pairwise"), **kw)
    if series.get("checkpoints"):
        got = {float(c["fraction"]): ledges(series["steps"], c["consecutive"], c["loss"], c["noise"], G=c.get("G"),
                                            invalid=c.get("invalid"), **kw) for c in series["checkpoints"]}
        final.budget = budget_table(final, got)
    final.series = series
    return final


def series_to_arrays(series: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """A series as flat arrays for an npz file (:func:`series_from_arrays` reads them back)."""
    out = {f"{prefix}{k}": np.asarray(series[k]) for k in ("steps", "consecutive", "loss", "invalid", "pairwise")}
    if series.get("G") is not None:
        out[f"{prefix}G"] = np.asarray(series["G"])
    for k, v in series["noise"].items():
        out[f"{prefix}noise_{k}"] = np.asarray(v)
    for j, c in enumerate(series.get("checkpoints") or []):
        q = f"{prefix}ckpt{j}_"
        out[q + "fraction"] = np.asarray(c["fraction"])
        for k in ("consecutive", "loss", "invalid"):
            out[q + k] = np.asarray(c[k])
        if c.get("G") is not None:
            out[q + "G"] = np.asarray(c["G"])
        for k, v in c["noise"].items():
            out[q + f"noise_{k}"] = np.asarray(v)
    return out


def series_from_arrays(z: Any, prefix: str = "") -> dict[str, Any]:
    """The series :func:`series_to_arrays` stored (from a dict or an open npz file)."""
    keys = [k for k in z.keys() if k.startswith(prefix)]

    def noise(q: str) -> dict[str, np.ndarray]:
        return {k[len(q) + 6:]: np.asarray(z[k]) for k in keys if k.startswith(q + "noise_")}

    ser = {k: np.asarray(z[prefix + k]) for k in ("steps", "consecutive", "loss", "invalid", "pairwise")}
    ser["G"] = np.asarray(z[prefix + "G"]) if prefix + "G" in keys else None
    ser["noise"] = noise(prefix)
    ser["checkpoints"] = []
    j = 0
    while f"{prefix}ckpt{j}_fraction" in keys:
        q = f"{prefix}ckpt{j}_"
        ser["checkpoints"].append({"fraction": float(z[q + "fraction"]),
                                   **{k: np.asarray(z[q + k]) for k in ("consecutive", "loss", "invalid")},
                                   "G": np.asarray(z[q + "G"]) if q + "G" in keys else None, "noise": noise(q)})
        j += 1
    return ser


def _pairwise(th: np.ndarray) -> np.ndarray:
    sq = (th * th).sum(1)
    D2 = sq[:, None] + sq[None, :] - 2.0 * th @ th.T
    D = np.sqrt(np.maximum(D2, 0.0))
    np.fill_diagonal(D, 0.0)
    return D
