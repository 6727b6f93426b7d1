"""Swap moves during SGD: the swap Monte Carlo of glasses, tried on a network.

In simulations of glass-formers, swap Monte Carlo exchanges particles of different sizes during
relaxation (Grigera & Parisi 2001; Ninarello, Berthier & Coslovich 2017). Here a :class:`Swap` is a
move applied between two SGD steps, for every seed:

* **data swaps**, on the minibatch of that step only (never on the stored data, so nothing
  accumulates): ``pixels`` exchanges the values of two random pixels (every channel) within an
  image; ``channels`` exchanges two channels at every pixel of an image. ``images`` images of the
  batch (0: all) get ``pairs`` exchanges each.
* **weight swaps** in layer l (1-based, W_l [n_l, n_{l−1}], b_l [n_l]): ``rows`` exchanges two hidden
  units' incoming weights (rows of W_l with their biases); ``columns`` exchanges two columns of W_l;
  ``paired`` exchanges rows i, j of W_l and b_l *and* columns i, j of W_{l+1}, an exact symmetry of the
  network (the negative control: the loss does not change, and under plain SGD the later path is
  the permuted image of the unswapped one); ``kick`` draws a ``rows`` swap and instead displaces
  W_l, b_l by a random direction of the same norm (the control for "any perturbation of that size").
  ``pairs`` exchanges per move.
* **acceptance**: always (``temperature=None``), or Metropolis on the step's minibatch loss at
  temperature T: accept with probability min(1, exp(−ΔL/T)) (T = 0: only moves that do not raise
  the loss). Each proposal then costs one loss evaluation.
* **frequency**: every ``every`` steps, or with probability ``prob`` per step.

Randomness comes from the counter-based streams (:mod:`fasttrap.rng`, stage ``"swap"``): one
generator per (seed, step), so a run cut at any step and resumed draws exactly the same moves.

Paired swaps are symmetries, so a trajectory observable (a weight distance, aging's Δ) must compare
weights up to that relabelling: :class:`Alignment` tracks, per seed and layer, the permutation the
paired moves have applied, and :meth:`Alignment.align` maps θ back to the original labelling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..model import rng as rngmod
from ..model.mlp import MLP

DATA_KINDS = ("pixels", "channels")
WEIGHT_KINDS = ("rows", "columns", "paired", "kick")
KINDS = DATA_KINDS + WEIGHT_KINDS


@dataclass(frozen=True)
class Swap:
    """One kind of move and its schedule (see the module docstring).

    Args:
        kind: ``pixels``, ``channels``, ``rows``, ``columns``, ``paired`` or ``kick``.
        layer: the layer l (1-based) of a weight move; required for them, unused for data moves.
        every: fire every this-many steps (steps t with t % every == 0), unless ``prob`` is given.
        prob: fire with this probability per step instead (0 < prob ≤ 1).
        pairs: exchanges per move (per image for data moves).
        images: images of the minibatch a data move touches (0: all of them).
        temperature: None (accept every move), or T ≥ 0 for Metropolis on the minibatch loss.
    """

    kind: str
    layer: int | None = None
    every: int = 1
    prob: float | None = None
    pairs: int = 1
    images: int = 1
    temperature: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Swap.kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        for name, lo in (("every", 1), ("pairs", 1), ("images", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"Swap.{name}: expected an int >= {lo}, got {v!r}")
        if self.prob is not None and not (isinstance(self.prob, (int, float)) and 0 < self.prob <= 1):
            raise ValueError(f"Swap.prob: expected a probability in (0, 1], got {self.prob!r}")
        if self.temperature is not None and not (isinstance(self.temperature, (int, float))
                                                 and np.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"Swap.temperature: expected None (always accept) or a temperature >= 0, "
                             f"got {self.temperature!r}")
        if self.kind in WEIGHT_KINDS and self.layer is None:
            raise ValueError(f"Swap.layer: a {self.kind!r} move needs the layer it acts on (1-based)")

    @property
    def is_data(self) -> bool:
        return self.kind in DATA_KINDS

    def label(self) -> str:
        """A short name: ``rows@1 x4 /10 T=0.01``."""
        s = self.kind + (f"@{self.layer}" if not self.is_data else "")
        s += f" x{self.pairs}" if self.pairs != 1 else ""
        s += f" p={self.prob:g}" if self.prob is not None else (f" /{self.every}" if self.every != 1 else "")
        return s + (f" T={self.temperature:g}" if self.temperature is not None else "")


def check_moves(moves: Any, mlp: MLP, image_shape: tuple[int, int, int] | None) -> list[Swap]:
    """The moves as a list, checked against the network and the data (clear errors, nothing run).

    Raises:
        TypeError: ``moves`` is not a sequence of :class:`Swap`.
        ValueError: a layer that does not exist (or has no next layer for ``paired``, or fewer than
            two units / columns to exchange), channel swaps on one-channel data, pixel swaps on data
            with one pixel.
    """
    if moves is None:
        return []
    if isinstance(moves, Swap):
        moves = [moves]
    if not isinstance(moves, (list, tuple)) or not all(isinstance(m, Swap) for m in moves):
        raise TypeError("moves: expected a list of fasttrap.Swap")
    L = len(mlp.widths) - 1
    C, H, W = image_shape if image_shape is not None else (1, mlp.n_in, 1)
    for i, m in enumerate(moves):
        where = f"moves[{i}] ({m.kind})"
        if m.is_data:
            if m.kind == "channels" and C < 2:
                raise ValueError(f"{where}: channel swaps need data with at least 2 channels; this data has {C} "
                                 f"(image shape {C}×{H}×{W}); use 'pixels', or colour data such as CIFAR")
            if m.kind == "pixels" and H * W < 2:
                raise ValueError(f"{where}: pixel swaps need at least 2 pixels per image")
            continue
        if not isinstance(m.layer, (int, np.integer)) or isinstance(m.layer, bool) or not 1 <= m.layer <= L:
            raise ValueError(f"{where}: layer {m.layer!r} does not exist; this network has layers 1..{L} "
                             f"(widths {list(mlp.widths)})")
        if m.kind == "paired" and m.layer >= L:
            raise ValueError(f"{where}: a paired swap of layer {m.layer} needs layer {m.layer + 1} to carry the "
                             f"matching columns; use a hidden layer, 1..{L - 1}")
        n = mlp.widths[m.layer - 1] if m.kind == "columns" else mlp.widths[m.layer]
        if n < 2:
            raise ValueError(f"{where}: layer {m.layer} has {n} {'column' if m.kind == 'columns' else 'unit'}; "
                             "nothing to exchange")
    return list(moves)


def fires(m: Swap, t: int, g: np.random.Generator) -> bool:
    """Does move ``m`` fire at step t (``g``: the (seed, step) generator, drawn from only for ``prob``)?"""
    if m.prob is not None:
        return bool(g.random() < m.prob)
    return t % m.every == 0


def generator(seed: int, step: int) -> np.random.Generator:
    """The generator of the moves of (seed, step): counter-based, independent of how the run was cut."""
    return np.random.Generator(np.random.PCG64(rngmod.stream_id(int(seed), "swap", int(step))))


def _pair(g: np.random.Generator, n: int) -> tuple[int, int]:
    i, j = g.choice(n, size=2, replace=False)
    return int(i), int(j)


def apply_data(m: Swap, xb: np.ndarray, image_shape: tuple[int, int, int], g: np.random.Generator) -> np.ndarray:
    """Move ``m`` on one seed's minibatch xb [B, n0]; returns a modified copy (xb is not touched)."""
    C, H, W = image_shape
    B = xb.shape[0]
    out = xb.copy()
    img = out.reshape(B, C, H * W)
    idx = np.arange(B) if m.images == 0 or m.images >= B else g.choice(B, size=m.images, replace=False)
    for b in idx:
        for _ in range(m.pairs):
            if m.kind == "pixels":
                p, q = _pair(g, H * W)
                img[b, :, [p, q]] = img[b, :, [q, p]]
            else:
                c1, c2 = _pair(g, C)
                img[b, [c1, c2], :] = img[b, [c2, c1], :]
    return out


def _views(mlp: MLP, theta: np.ndarray, l: int) -> tuple[np.ndarray, np.ndarray]:
    """Views W_l [n_l, n_{l-1}], b_l [n_l] into one parameter row θ [P]."""
    ow, ob, oe = mlp.layer_offsets()[l - 1]
    return theta[ow:ob].reshape(mlp.widths[l], mlp.widths[l - 1]), theta[ob:oe]


def apply_weight(m: Swap, mlp: MLP, theta: np.ndarray, g: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Move ``m`` on one parameter row θ [P]; returns (the new row, the exchanged index pairs)."""
    out = theta.copy()
    l = int(m.layer)  # type: ignore[arg-type]
    Wl, bl = _views(mlp, out, l)
    pairs = []
    for _ in range(m.pairs):
        n = Wl.shape[1] if m.kind == "columns" else Wl.shape[0]
        i, j = _pair(g, n)
        pairs.append((i, j))
        if m.kind == "columns":
            Wl[:, [i, j]] = Wl[:, [j, i]]
        elif m.kind in ("rows", "paired", "kick"):
            Wl[[i, j]] = Wl[[j, i]]
            bl[[i, j]] = bl[[j, i]]
            if m.kind == "paired":
                Wn, _ = _views(mlp, out, l + 1)
                Wn[:, [i, j]] = Wn[:, [j, i]]
    if m.kind == "kick":
        # the same norm as the swap just drawn, in a random direction of layer l's weights and biases
        ow, _, oe = mlp.layer_offsets()[l - 1]
        norm = float(np.linalg.norm((out[ow:oe] - theta[ow:oe]).astype(np.float64)))
        d = g.standard_normal(oe - ow)
        out[ow:oe] = theta[ow:oe] + (norm / max(float(np.linalg.norm(d)), 1e-300) * d).astype(theta.dtype)
    return out, pairs


@dataclass
class MoveLog:
    """What the moves did, per move kind (index into the moves list) and seed.

    Attributes:
        proposed, accepted: [M, S] counts.
        delta: per move, a list of (step, seed index, ΔL, accepted) for Metropolis proposals (ΔL is
            only computed where a temperature is set).
    """

    proposed: np.ndarray
    accepted: np.ndarray
    delta: list[list[tuple[int, int, float, bool]]] = field(default_factory=list)

    @classmethod
    def empty(cls, M: int, S: int) -> "MoveLog":
        return cls(np.zeros((M, S), np.int64), np.zeros((M, S), np.int64), [[] for _ in range(M)])

    def acceptance(self) -> np.ndarray:
        """[M] accepted / proposed over all seeds (NaN for a move never proposed)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.accepted.sum(1) / self.proposed.sum(1)

    def to_arrays(self, prefix: str = "move_") -> dict[str, np.ndarray]:
        out = {f"{prefix}proposed": self.proposed, f"{prefix}accepted": self.accepted}
        for k, rows in enumerate(self.delta):
            out[f"{prefix}delta_{k}"] = np.array(rows, dtype=np.float64).reshape(-1, 4)
        return out


class Alignment:
    """Per seed and hidden layer, where each original unit now sits after the paired swaps.

    ``pos[s][l][a]`` is the current index of the unit that was index a at the start; aligning θ takes
    W_l ← W_l[pos], b_l ← b_l[pos], W_{l+1} ← W_{l+1}[:, pos], which undoes every paired exchange so
    far. Only ``paired`` moves are symmetries; the other moves are real changes and are not undone.
    """

    def __init__(self, mlp: MLP, S: int, state: np.ndarray | None = None):
        self.mlp = mlp
        self.L = len(mlp.widths) - 1
        sizes = [mlp.widths[l] for l in range(1, self.L)]
        n = sum(sizes)
        if state is None:
            state = np.concatenate([np.arange(k) for k in sizes] or [np.zeros(0, np.int64)])
            state = np.tile(state, (S, 1)).astype(np.int64)
        if state.shape != (S, n):
            raise ValueError(f"alignment: expected an array [{S}, {n}], got {list(state.shape)}")
        self.state = np.array(state, dtype=np.int64)          # [S, Σ hidden widths], layer after layer
        self._off = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    def pos(self, s: int, l: int) -> np.ndarray:
        return self.state[s, self._off[l - 1]:self._off[l]]

    @property
    def identity(self) -> bool:
        return all(np.array_equal(self.pos(s, l), np.arange(self.mlp.widths[l]))
                   for s in range(self.state.shape[0]) for l in range(1, self.L))

    def swapped(self, s: int, l: int, i: int, j: int) -> None:
        """Current units i and j of layer l (seed index s) were exchanged by a paired move."""
        p = self.pos(s, l)
        a, b = p == i, p == j
        p[a], p[b] = j, i

    def align(self, theta: np.ndarray) -> np.ndarray:
        """θ [S, P] in the original labelling of the hidden units (a copy; θ if nothing was swapped)."""
        if self.identity:
            return theta
        out = theta.copy()
        for s in range(theta.shape[0]):
            for l in range(1, self.L):
                p = self.pos(s, l)
                if np.array_equal(p, np.arange(p.size)):
                    continue
                # in place on the copy, layer after layer: W_{l+1} gets its columns from layer l's
                # relabelling and its rows from its own
                Wo, bo = _views(self.mlp, out[s], l)
                Wo[:] = Wo[p]
                bo[:] = bo[p]
                Wno, _ = _views(self.mlp, out[s], l + 1)
                Wno[:] = Wno[:, p]
        return out


def apply_moves(moves: Sequence[Swap], mlp: MLP, theta: np.ndarray, Xb: np.ndarray, yb: np.ndarray, t: int,
                seeds: Sequence[int], image_shape: tuple[int, int, int], log: MoveLog, alignment: Alignment,
                loss: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Every move that fires at step t, for every seed; θ [S, P] is updated in place.

    Args:
        Xb, yb: the step's minibatch [S, B, n0], [S, B]; returns the (possibly data-swapped) copy of Xb.
        loss: (θ [S, P], X [S, B, n0], y [S, B]) → L [S], the minibatch loss (for Metropolis).

    Returns:
        Xb for the gradient of this step (Xb itself when no data move fired).
    """
    S = theta.shape[0]
    gens = [generator(s, t) for s in seeds]
    for k, m in enumerate(moves):
        on = np.array([fires(m, t, gens[i]) for i in range(S)])
        if not on.any():
            continue
        if m.is_data:
            prop = Xb.copy()
            for i in np.flatnonzero(on):
                prop[i] = apply_data(m, Xb[i], image_shape, gens[i])
            new_theta, pairs = theta, None
        else:
            new_theta = theta.copy()
            pairs = {}
            for i in np.flatnonzero(on):
                new_theta[i], pairs[i] = apply_weight(m, mlp, theta[i], gens[i])
            prop = Xb
        ok = on.copy()
        if m.temperature is not None:
            dL = np.asarray(loss(new_theta, prop, yb), np.float64) - np.asarray(loss(theta, Xb, yb), np.float64)
            for i in np.flatnonzero(on):
                u = gens[i].random()
                T = float(m.temperature)
                acc = bool(dL[i] <= 0 or (T > 0 and u < np.exp(-dL[i] / T)))
                ok[i] = acc
                log.delta[k].append((t, i, float(dL[i]), acc))
        log.proposed[k] += on
        log.accepted[k] += ok
        if not ok.any():
            continue
        if m.is_data:
            Xb = np.where(ok[:, None, None], prop, Xb)
        else:
            theta[ok] = new_theta[ok]
            if m.kind == "paired":
                for i in np.flatnonzero(ok):
                    for a, b in pairs[i]:
                        alignment.swapped(i, int(m.layer), a, b)  # type: ignore[arg-type]
    return Xb
