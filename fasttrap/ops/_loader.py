"""Loads the compiled core. A missing core (or a core without CUDA) is a state, never an
import error: :data:`core` is ``None`` and :data:`core_error` says why."""

from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import importlib.util
import os
import sys
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


def _installed_core(here: str) -> str | None:
    """The compiled core of an installed fasttrap elsewhere on sys.path, if any.

    Running from a source checkout (``python -m fasttrap.run`` in the repository root puts the
    checkout first on sys.path) imports the Python files from the checkout, which has no compiled
    core; ``pip install .`` built it into site-packages. Using that one keeps the checkout usable.
    """
    for entry in sys.path:
        d = os.path.join(os.path.abspath(entry or os.getcwd()), "fasttrap")
        if os.path.abspath(d) == here or not os.path.isdir(d):
            continue
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(d, "_core" + suffix)
            if os.path.isfile(path):
                return path
    return None


def _load() -> None:
    global core, core_error
    _preload_openblas()
    # The core is fasttrap._core, in the package root (one level above this file).
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    local = any(n.startswith("_core") and n.endswith((".so", ".pyd")) for n in os.listdir(here))
    try:
        if local:
            mod = importlib.import_module("fasttrap._core")
        else:
            path = _installed_core(here)
            if path is None:
                core, core_error = None, (f"fasttrap._core is not built (not in {here}, and no installed fasttrap "
                                          "on sys.path has one); install with `pip install .`")
                return
            spec = importlib.util.spec_from_file_location("fasttrap._core", path)
            mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(mod)  # type: ignore[union-attr]
            from ..version import __version__

            if getattr(mod, "__version__", None) != __version__:
                core, core_error = None, (f"the installed core at {path} is version {getattr(mod, '__version__', '?')}, "
                                          f"this fasttrap is {__version__}; reinstall with `pip install .`")
                return
            sys.modules["fasttrap._core"] = mod
    except ImportError as exc:  # pragma: no cover - exercised only on broken installs
        core, core_error = None, f"fasttrap._core could not be imported: {exc}"
        return
    core, core_error = mod, None


_load()
