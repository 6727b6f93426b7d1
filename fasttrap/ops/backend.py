"""Which implementation runs a call: the compiled CPU core, the CUDA core, or the torch twin.

``auto`` picks CUDA when the core was built with it and a device is present, else the CPU core,
else the torch twin; it never fails for lack of CUDA. An explicit ``cuda`` without it raises
:class:`BackendUnavailable` saying why.
"""

from __future__ import annotations

import os

from . import _loader
from .validate import check_backend

_threads: int = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
_chunk: int = 2


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here (for example ``cuda`` without a GPU)."""


def built_with_cuda() -> bool:
    """True when the compiled core contains the CUDA sources."""
    return _loader.core is not None and bool(_loader.core.built_with_cuda())


def cuda_device_count() -> int:
    """Visible CUDA devices (0 without a core, without CUDA, or on any driver error)."""
    if _loader.core is None:
        return 0
    try:
        return int(_loader.core.cuda_device_count())
    except Exception:  # noqa: BLE001
        return 0


def cuda_available() -> bool:
    return built_with_cuda() and cuda_device_count() > 0


def core_available() -> bool:
    return _loader.core is not None


def set_num_threads(n: int) -> None:
    """Worker threads of the CPU core (default: the CPUs this process may run on)."""
    global _threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    _threads = n


def get_num_threads() -> int:
    return _threads


def set_chunk(c: int) -> None:
    """Models per chunk in the CPU core's wide layer-1 GEMMs (1..64; default 2)."""
    global _chunk
    if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 64:
        raise ValueError(f"c: expected an int in [1, 64], got {c!r}")
    _chunk = c


def get_chunk() -> int:
    return _chunk


def resolve(backend: str) -> str:
    """``auto``/``cpu``/``cuda``/``torch`` → the backend that will run: ``cpu``, ``cuda`` or ``torch``."""
    backend = check_backend(backend)
    if backend == "torch":
        return "torch"
    if backend == "cuda":
        if not built_with_cuda():
            why = _loader.core_error or "fasttrap._core was built without CUDA (no nvcc at build time, or FASTTRAP_CUDA=OFF)"
            raise BackendUnavailable(f"backend='cuda' requested, but {why}")
        if cuda_device_count() == 0:
            raise BackendUnavailable("backend='cuda' requested, but no CUDA device is visible "
                                     "(no GPU, no driver, or CUDA_VISIBLE_DEVICES hides it)")
        return "cuda"
    if backend == "cpu":
        if _loader.core is None:
            raise BackendUnavailable(f"backend='cpu' requested, but {_loader.core_error}")
        return "cpu"
    if cuda_available():
        return "cuda"
    return "cpu" if _loader.core is not None else "torch"


def info() -> dict[str, object]:
    """What this installation can do: for bug reports and run manifests."""
    core = _loader.core
    return {
        "core": core is not None,
        "core_error": _loader.core_error,
        "core_version": getattr(core, "__version__", None),
        "built_with_cuda": built_with_cuda(),
        "cuda_devices": cuda_device_count(),
        "blas": core.blas_config() if core is not None else None,
        "threads": _threads,
    }
