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
  the permuted image of the unswapped one); ``kick`` draws a ``rows`` swap and instead displaces the
  same rows of [W_l | b_l] by a random direction of the same norm (the control for "any
  perturbation of that size there").
  ``pairs`` exchanges per move.
* **acceptance**: always (``temperature=None``), or Metropolis on the step's minibatch loss at
  temperature T: accept with probability min(1, exp(−ΔL/T)) (T = 0: only moves that do not raise
  the loss). Each proposal then costs one loss evaluation.
* **frequency**: every ``every`` steps, or with probability ``prob`` per step.

Randomness comes from the counter-based streams (:mod:`fasttrap.model.rng`, stage ``"swap"``), hashed per
(seed, step, draw) and vectorised over seeds (:class:`Draws`), so a run cut at any step and resumed
draws exactly the same moves, and the moves cost little next to a step (``benchmarks/bench_swap.py``).

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
        measure_every: without a temperature, still measure ΔL (two minibatch losses) at the steps t
            with t % measure_every == 0 where the move fires, for the record; it never changes
            what the move does (0: never).
    """

    kind: str
    layer: int | None = None
    every: int = 1
    prob: float | None = None
    pairs: int = 1
    images: int = 1
    temperature: float | None = None
    measure_every: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Swap.kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        for name, lo in (("every", 1), ("pairs", 1), ("images", 0), ("measure_every", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"Swap.{name}: expected an int >= {lo}, got {v!r}")
        if self.prob is not None and (isinstance(self.prob, bool) or not (isinstance(self.prob, (int, float))
                                                                          and 0 < self.prob <= 1)):
            raise ValueError(f"Swap.prob: expected a probability in (0, 1], got {self.prob!r}")
        if self.temperature is not None and (isinstance(self.temperature, bool) or not (
                isinstance(self.temperature, (int, float)) and np.isfinite(self.temperature) and self.temperature >= 0)):
            raise ValueError(f"Swap.temperature: expected None (always accept) or a temperature >= 0, "
                             f"got {self.temperature!r}")
        if self.kind in WEIGHT_KINDS and self.layer is None:
            raise ValueError(f"Swap.layer: a {self.kind!r} move needs the layer it acts on (1-based)")

    @property
    def is_data(self) -> bool:
        return self.kind in DATA_KINDS

    def label(self) -> str:
        """A short name: ``rows@1 x4 /10 T=0.01``, ``pixels[all img] x8``."""
        s = self.kind + (f"@{self.layer}" if not self.is_data else "")
        s += (f"[{'all' if self.images == 0 else self.images} img]" if self.is_data and self.images != 1 else "")
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
    C, H, W = image_shape if image_shape is not None else (1, mlp.n_in or 1, 1)
    for i, m in enumerate(moves):
        where = f"moves[{i}] ({m.kind})"
        if m.is_data:
            if m.kind == "channels" and C < 2:
                raise ValueError(f"{where}: channel swaps need data with at least 2 channels; this data has {C} "
                                 f"(image shape {C}×{H}×{W}); use 'pixels', or colour data such as CIFAR")
            if m.kind == "pixels" and H * W < 2:
                raise ValueError(f"{where}: pixel swaps need at least 2 pixels per image")
            continue
        if getattr(mlp, "layer_offsets", None) is None:           # the layered layout of an MLP
            raise ValueError(f"{where}: weight swaps act on the layers of a fasttrap.MLP; a TorchModel takes the "
                             "data moves (pixels, channels) only")
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


class Draws:
    """The random numbers of one step's moves for every seed: counter-based and vectorised over seeds.

    Seed s at step t has the key k = :func:`fasttrap.model.rng.stream_ids` (s, "swap", t); its n-th number
    is splitmix64(k ⊕ splitmix64(n)), the finaliser that also drives the batch order. Every call draws
    the same count for every seed, whether or not its move fires there, so a seed's numbers depend
    only on (seed, step, moves): a seed run alone, or a run cut at any step and resumed, draws
    exactly the same moves. Integers in [0, n) are taken modulo n (bias below n / 2^64).
    """

    def __init__(self, seeds: Sequence[int], step: int):
        self.key = rngmod.stream_ids(np.asarray(list(seeds), dtype=np.int64), "swap", int(step))
        self.n = 0

    def bits(self, *shape: int) -> np.ndarray:
        """uint64 [S, *shape]."""
        k = int(np.prod(shape)) if shape else 1
        ctr = rngmod.mix64_array(np.arange(self.n, self.n + k, dtype=np.uint64))
        self.n += k
        return rngmod.mix64_array(self.key[:, None] ^ ctr[None, :]).reshape(len(self.key), *shape)

    def uniform(self, *shape: int) -> np.ndarray:
        """float64 in [0, 1), [S, *shape]."""
        return (self.bits(*shape) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def integers(self, high: int, *shape: int) -> np.ndarray:
        """int64 in [0, high), [S, *shape]."""
        return (self.bits(*shape) % np.uint64(high)).astype(np.int64)

    def pairs(self, high: int, *shape: int) -> tuple[np.ndarray, np.ndarray]:
        """Two distinct indices in [0, high), each pair uniform over the ordered pairs: ([S, *shape], same)."""
        i = self.integers(high, *shape)
        j = (i + 1 + self.integers(high - 1, *shape)) % high
        return i, j

    def skip(self, k: int) -> None:
        """Advance every seed's counter by k numbers without computing them."""
        self.n += int(k)

    def normal(self, *shape: int) -> np.ndarray:
        """Standard normals [S, *shape] (Box–Muller)."""
        u1, u2 = self.uniform(*shape), self.uniform(*shape)
        return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def fires(m: Swap, t: int, d: Draws) -> np.ndarray:
    """[S] bool: does move ``m`` fire at step t for each seed (``prob`` draws one uniform per seed)."""
    if m.prob is not None:
        return d.uniform(1)[:, 0] < m.prob
    return np.full(len(d.key), t % m.every == 0)


def apply_data(m: Swap, Xb: np.ndarray, image_shape: tuple[int, int, int], d: Draws, sel: np.ndarray) -> None:
    """Data move ``m`` on the minibatch Xb [S, B, n0], in place, for the seeds where ``sel`` [S] is True.

    ``images`` images of each selected seed's batch (0: all) get ``pairs`` exchanges each: of two pixels
    (every channel) for ``pixels``, of two channels (every pixel) for ``channels``.
    """
    C, H, W = image_shape
    S, B = Xb.shape[:2]
    v = Xb.reshape(S, B, C, H * W)
    n_img = B if m.images == 0 or m.images >= B else m.images
    if n_img == B:                                   # every image: no choice to make, the same draws used
        d.skip(B)
        order = np.broadcast_to(np.arange(B), (S, B))
    else:
        order = np.argsort(d.uniform(B), axis=1, kind="stable")[:, :n_img]    # [S, n_img] distinct images
    i, j = d.pairs(H * W if m.kind == "pixels" else C, n_img, m.pairs)          # [S, n_img, pairs]
    s_idx = np.flatnonzero(sel)
    if s_idx.size == 0:
        return
    ss, bb = s_idx[:, None], order[s_idx]
    for k in range(m.pairs):
        a, b = i[s_idx, :, k], j[s_idx, :, k]
        if m.kind == "pixels":
            tmp = v[ss, bb, :, a].copy()              # [s, n_img, C]
            v[ss, bb, :, a] = v[ss, bb, :, b]
            v[ss, bb, :, b] = tmp
        else:
            tmp = v[ss, bb, a, :].copy()              # [s, n_img, HW]
            v[ss, bb, a, :] = v[ss, bb, b, :]
            v[ss, bb, b, :] = tmp


def _views(mlp: MLP, theta: np.ndarray, l: int) -> tuple[np.ndarray, np.ndarray]:
    """Views W_l [n_l, n_{l-1}], b_l [n_l] into one parameter row θ [P]."""
    ow, ob, oe = mlp.layer_offsets()[l - 1]
    return theta[ow:ob].reshape(mlp.widths[l], mlp.widths[l - 1]), theta[ob:oe]


def _block(mlp: MLP, theta: np.ndarray, l: int) -> tuple[np.ndarray, np.ndarray]:
    """Views W_l [S, n_l, n_{l-1}] and b_l [S, n_l] into θ [S, P]."""
    ow, ob, oe = mlp.layer_offsets()[l - 1]
    S = theta.shape[0]
    return theta[:, ow:ob].reshape(S, mlp.widths[l], mlp.widths[l - 1]), theta[:, ob:oe]


def _exchange(A: np.ndarray, s: np.ndarray, i: np.ndarray, j: np.ndarray, axis: int) -> None:
    """Exchange index i and j (per seed s) of A [S, n, m] along axis 1 (rows) or 2 (columns), in place."""
    if axis == 1:
        tmp = A[s, i].copy()
        A[s, i] = A[s, j]
        A[s, j] = tmp
    else:
        tmp = A[s, :, i].copy()
        A[s, :, i] = A[s, :, j]
        A[s, :, j] = tmp


def apply_weight(m: Swap, mlp: MLP, theta: np.ndarray, d: Draws, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weight move ``m`` on θ [S, P], in place, for the seeds where ``sel`` [S] is True.

    Returns:
        The exchanged index pairs (i, j), each [S, pairs] (drawn for every seed, applied where selected).
    """
    l = int(m.layer)  # type: ignore[arg-type]
    n = mlp.widths[l - 1] if m.kind == "columns" else mlp.widths[l]
    i, j = d.pairs(n, m.pairs)
    s_idx = np.flatnonzero(sel)
    W, b = _block(mlp, theta, l)
    if m.kind == "kick":
        keys = d.bits(1)[:, 0]                        # one key per seed for its direction's normals
        shape = (2 * m.pairs, mlp.widths[l - 1] + 1)
        G = {int(s): np.random.Generator(np.random.SFC64(int(keys[s]))).standard_normal(shape) for s in s_idx}
        if m.pairs == 1 and s_idx.size:               # the common case, vectorised over seeds
            a, c = i[s_idx, 0], j[s_idx, 0]
            Ra = np.concatenate([W[s_idx, a], b[s_idx, a][:, None]], axis=1).astype(np.float64)
            Rc = np.concatenate([W[s_idx, c], b[s_idx, c][:, None]], axis=1).astype(np.float64)
            norm = np.sqrt(2.0) * np.linalg.norm(Ra - Rc, axis=1)                       # the swap's norm
            D = np.stack([G[int(s)] for s in s_idx])                                    # [s, 2, n+1]
            D *= (norm / np.maximum(np.linalg.norm(D.reshape(len(s_idx), -1), axis=1), 1e-300))[:, None, None]
            Ra += D[:, 0]
            Rc += D[:, 1]
            W[s_idx, a], b[s_idx, a] = Ra[:, :-1], Ra[:, -1]
            W[s_idx, c], b[s_idx, c] = Rc[:, :-1], Rc[:, -1]
            return i, j
        for s in s_idx:
            _kick(W[s], b[s], i[s], j[s], G[int(s)])
        return i, j
    for k in range(m.pairs):
        a, c = i[s_idx, k], j[s_idx, k]
        if m.kind == "columns":
            _exchange(W, s_idx, a, c, axis=2)
            continue
        _exchange(W, s_idx, a, c, axis=1)
        _exchange(b[:, :, None], s_idx, a, c, axis=1)
        if m.kind == "paired":
            Wn, _ = _block(mlp, theta, l + 1)
            _exchange(Wn, s_idx, a, c, axis=2)
    return i, j


def _kick(W: np.ndarray, b: np.ndarray, i: np.ndarray, j: np.ndarray, g: np.ndarray) -> None:
    """One seed's kick: the rows swap (i, j) would move the rows U = i ∪ j of [W_l | b_l] by some norm;
    move those rows instead by that norm along the random direction g (the first |U| rows of it)."""
    U = np.unique(np.concatenate([i, j]))
    R = np.concatenate([W[U], b[U, None]], axis=1).astype(np.float64)           # [|U|, n_{l-1} + 1]
    loc = {int(u): r for r, u in enumerate(U)}
    P = R.copy()
    for a, c in zip(i, j):
        P[[loc[int(a)], loc[int(c)]]] = P[[loc[int(c)], loc[int(a)]]]
    norm = float(np.linalg.norm(P - R))
    D = g[: U.size]
    R += norm / max(float(np.linalg.norm(D)), 1e-300) * D
    W[U] = R[:, :-1].astype(W.dtype)
    b[U] = R[:, -1].astype(b.dtype)


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
        self._ref = np.concatenate([np.arange(k) for k in sizes] or [np.zeros(0, np.int64)])
        self.dirty = not np.array_equal(self.state, np.broadcast_to(self._ref, self.state.shape))

    def pos(self, s: int, l: int) -> np.ndarray:
        return self.state[s, self._off[l - 1]:self._off[l]]

    @property
    def identity(self) -> bool:
        """No relabelling at all (every seed, every layer)."""
        return np.array_equal(self.state, np.broadcast_to(self._ref, self.state.shape))

    def swapped(self, s: int, l: int, i: int, j: int) -> None:
        """Current units i and j of layer l (seed index s) were exchanged by a paired move."""
        p = self.pos(s, l)
        a, b = p == i, p == j
        p[a], p[b] = j, i
        self.dirty = True

    def record(self, sel: np.ndarray, l: int, i: np.ndarray, j: np.ndarray) -> None:
        """Paired exchanges (i[s, k], j[s, k]) in layer l, in order k, for the seeds where ``sel``."""
        for s in np.flatnonzero(sel):
            for a, b in zip(i[s], j[s]):
                self.swapped(int(s), l, int(a), int(b))

    def align(self, theta: np.ndarray) -> np.ndarray:
        """θ [S, P] in the original labelling of the hidden units (a copy; θ if nothing was swapped)."""
        if not self.dirty:
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
    """Every move that fires at step t, for every seed; θ [S, P] and Xb are updated in place.

    Args:
        Xb, yb: the step's minibatch [S, B, n0], [S, B] (Xb is the step's own copy of the rows, never
            the stored data set); data moves change it in place.
        loss: (θ [S, P], X [S, B, n0], y [S, B]) → L [S], the minibatch loss (for Metropolis).

    Returns:
        Xb for the gradient of this step.
    """
    d = Draws(seeds, t)
    for k, m in enumerate(moves):
        on = fires(m, t, d)
        measure = m.temperature is not None or (m.measure_every > 0 and t % m.measure_every == 0 and on.any())
        if not measure:
            # accepted by construction: change θ or the batch in place, no copies
            if m.is_data:
                apply_data(m, Xb, image_shape, d, on)
            else:
                i, j = apply_weight(m, mlp, theta, d, on)
                if m.kind == "paired":
                    alignment.record(on, int(m.layer), i, j)  # type: ignore[arg-type]
            log.proposed[k] += on
            log.accepted[k] += on
            continue
        if m.is_data:
            prop_X, prop_th = Xb.copy(), theta
            apply_data(m, prop_X, image_shape, d, on)
        else:
            prop_X, prop_th = Xb, theta.copy()
            i, j = apply_weight(m, mlp, prop_th, d, on)
        dL = np.asarray(loss(prop_th, prop_X, yb), np.float64) - np.asarray(loss(theta, Xb, yb), np.float64)
        if m.temperature is None:            # measured for the record only: every move is accepted
            ok = on.copy()
        else:
            u = d.uniform(1)[:, 0]
            T = float(m.temperature)
            with np.errstate(over="ignore", divide="ignore"):
                ok = on & ((dL <= 0) | ((T > 0) & (u < np.exp(-dL / max(T, 1e-300)))))
        for s in np.flatnonzero(on):
            log.delta[k].append((t, int(s), float(dL[s]), bool(ok[s])))
        log.proposed[k] += on
        log.accepted[k] += ok
        if not ok.any():
            continue
        if m.is_data:
            Xb[ok] = prop_X[ok]
        else:
            theta[ok] = prop_th[ok]
            if m.kind == "paired":
                alignment.record(ok, int(m.layer), i, j)  # type: ignore[arg-type]
    return Xb
