"""report.md of each analysis: one module per analysis, one function per section (markdown only).

:mod:`.traps` (the trapping-time analysis), :mod:`.aging` (aging and diffusion), :mod:`.spectra` (Jacobian and
Hessian ESDs, real against random labels), :mod:`.common`.
"""

from __future__ import annotations

from typing import Any

_OLD_NAMES = {"write_report": ("traps", "write_report"), "write_aging_report": ("aging", "write_aging_report"),
              "regimes": (None, "regimes"), "aging_verdict": (None, "aging_verdict")}


def __getattr__(name: str) -> Any:
    # The names the flat ``fasttrap.report`` module had, for scripts written against it.
    if name not in _OLD_NAMES:
        raise AttributeError(f"module 'fasttrap.run.report' has no attribute {name!r}")
    import importlib

    mod, attr = _OLD_NAMES[name]
    if mod is None:
        src = "fasttrap.analysis.curves" if name == "regimes" else "fasttrap.analysis.aging"
    else:
        src = f"fasttrap.run.report.{mod}"
    return getattr(importlib.import_module(src), attr)
