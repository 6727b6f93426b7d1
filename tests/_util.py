"""Helpers shared by the tests."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import pytest

import fasttrap

CUDA = fasttrap.cuda_available()

# Backends a compiled-vs-twin test runs on: the CPU core always, CUDA when a device is present.
COMPILED_BACKENDS = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device (or core built without CUDA)")),
]


def rel_l2(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (nb if nb > 0 else 1.0))


def cosine(a, b) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    return float(a @ b / (na * nb))


def to_np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with the core on n threads, restoring the previous count after."""
    old = fasttrap.get_num_threads()
    fasttrap.set_num_threads(n)
    try:
        yield
    finally:
        fasttrap.set_num_threads(old)
