"""Loads the compiled core. A missing core (or a core without CUDA) is a state, never an
import error: :data:`core` is ``None`` and :data:`core_error` says why."""

from __future__ import annotations

import ctypes
import os
from types import ModuleType

core: ModuleType | None = None
core_error: str | None = None


def _preload_openblas() -> None:
    # _core links libscipy_openblas.so from the scipy-openblas32 package. Its rpath finds it beside
    # us in site-packages; loading it here first also covers editable and relocated installs.
    # The core runs OpenBLAS single-threaded (all threads are its own), so OpenBLAS should not
    # start a pool of spinning workers: the variable is set only while *this* library loads,
    # and restored at once, so NumPy's own OpenBLAS is left as the user configured it.
    old = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import scipy_openblas32

        path = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True))
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except Exception:  # noqa: BLE001 - the rpath may still find it; the import below will tell
        pass
    finally:
        if old is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = old


def _load() -> None:
    global core, core_error
    _preload_openblas()
    here = os.path.dirname(os.path.abspath(__file__))
    if not any(n.startswith("_core") and n.endswith((".so", ".pyd")) for n in os.listdir(here)):
        core, core_error = None, (f"fasttrap._core is not built in {here} (is this the source tree? "
                                  "install with `pip install .` and import from elsewhere)")
        return
    try:
        from . import _core as mod  # type: ignore[attr-defined]
    except ImportError as exc:  # pragma: no cover - exercised only on broken installs
        core, core_error = None, f"fasttrap._core could not be imported: {exc}"
        return
    core, core_error = mod, None


_load()
