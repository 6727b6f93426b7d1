"""Random streams that derive from (seed, stage, index), never from the order work ran in.

The minibatch order of every descent is a permutation per (stream, epoch), computed by the same
counter-based hash in the compiled core (csrc/common/ft_rng.h) and here in NumPy; the two are tested to
agree bit for bit. A resumed run, or one cut into blocks differently, draws the same batches.
"""

from __future__ import annotations

import numpy as np

_M64 = (1 << 64) - 1
STAGES = {"init": 1, "outer": 2, "inner": 3, "eval": 4, "bootstrap": 5, "swap": 6, "labels": 7}


def mix64(x: int) -> int:
    """splitmix64's finaliser on a Python int (mod 2^64)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _mix64_np(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stream_id(seed: int, stage: str, index: int = 0) -> int:
    """The 64-bit stream of (seed, stage, index); ``stage`` is one of :data:`STAGES`."""
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {sorted(STAGES)}, got {stage!r}")
    return mix64(mix64(mix64(int(seed) & _M64) ^ STAGES[stage]) ^ (int(index) & _M64))


def mix64_array(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (elementwise, mod 2^64): :func:`mix64` vectorised."""
    return _mix64_np(np.asarray(x, dtype=np.uint64))


def stream_ids(seeds: np.ndarray, stage: str, index: int = 0) -> np.ndarray:
    """:func:`stream_id` for many seeds at once: uint64 [S]."""
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {sorted(STAGES)}, got {stage!r}")
    s = np.asarray(seeds).astype(np.uint64)
    return _mix64_np(_mix64_np(_mix64_np(s) ^ np.uint64(STAGES[stage])) ^ np.uint64(int(index) & _M64))


def epoch_key(stream: int, epoch: int) -> int:
    return mix64(mix64(int(stream) & _M64) ^ (int(epoch) & _M64))


def epoch_perm(stream: int, epoch: int, N: int) -> np.ndarray:
    """The permutation [N] (int32) of 0..N-1 for (stream, epoch): indices ordered by hash, then index."""
    key = np.uint64(epoch_key(stream, epoch))
    i = np.arange(N, dtype=np.uint64)
    with np.errstate(over="ignore"):
        keys = _mix64_np(key ^ (i * np.uint64(0xD1B54A32D192ED03)))
    return np.argsort(keys, kind="stable").astype(np.int32)


def batch_indices(stream: int, step: int, N: int, B: int, drop_last: bool = False,
                  _cache: dict | None = None) -> np.ndarray:
    """Row indices of minibatch ``step`` (0-based) of a stream: epoch = step // steps_per_epoch."""
    spe = N // B if drop_last else -(-N // B)
    if spe < 1:
        raise ValueError(f"batch_size: {B} leaves no batch in {N} rows with drop_last")
    epoch, pos = divmod(step, spe)
    if _cache is not None:
        perm = _cache.get((stream, epoch))
        if perm is None:
            _cache.clear()
            perm = _cache[(stream, epoch)] = epoch_perm(stream, epoch, N)
    else:
        perm = epoch_perm(stream, epoch, N)
    return perm[pos * B: min(N, (pos + 1) * B)]


def steps_per_epoch(N: int, B: int, drop_last: bool = False) -> int:
    return N // B if drop_last else -(-N // B)
