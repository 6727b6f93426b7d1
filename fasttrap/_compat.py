"""Old import paths keep working: ``fasttrap.traps``, ``fasttrap.kernels``, ``fasttrap.stats`` ….

Before the package was given one folder per stage, its modules sat flat in ``fasttrap/``. Scripts
that import them by those names get the module's new home, the same module object (so
``fasttrap.traps is fasttrap.analysis.traps``), imported only when first asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

# old name (under fasttrap.) -> new module
ALIASES: dict[str, str] = {
    "kernels": "fasttrap.ops",
    "backend": "fasttrap.ops.backend",
    "cuda": "fasttrap.ops.cuda",
    "flops": "fasttrap.ops.flops",
    "_validate": "fasttrap.ops.validate",
    "_loader": "fasttrap.ops._loader",
    "mlp": "fasttrap.model.mlp",
    "data": "fasttrap.model.data",
    "rng": "fasttrap.model.rng",
    "outer": "fasttrap.dynamics.outer",
    "inner": "fasttrap.dynamics.inner",
    "swap": "fasttrap.dynamics.swap",
    "traps": "fasttrap.analysis.traps",
    "stats": "fasttrap.analysis.powerlaw",
    "aging": "fasttrap.analysis.aging",
    "diffusion": "fasttrap.analysis.diffusion",
    "store": "fasttrap.common.store",
    "progress": "fasttrap.common.progress",
    "config": "fasttrap.run.config",
    "cli": "fasttrap.run.cli",
    "pipeline": "fasttrap.run.pipeline",
    "report": "fasttrap.run.report",
    "plots": "fasttrap.run.plots",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass   # the target module ran when it was imported


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 - the finder protocol
        head, _, tail = fullname.partition(".")
        if head != "fasttrap" or tail not in ALIASES:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(ALIASES[tail]))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())


def resolve(name: str) -> ModuleType:
    """The module behind an old name (``"traps"`` → :mod:`fasttrap.analysis.traps`)."""
    return importlib.import_module(ALIASES[name])
