"""The main job: pick the analysis's stages and run (or resume) them all.

``python -m fasttrap.run`` → :func:`fasttrap.run.cli.main` → :func:`execute`, which hands the run to
the ``execute`` of its analysis in :mod:`fasttrap.run.stages` (``traps``: data → outer → inner →
indicators → traps → stats → report; ``aging``: data → one aging run per network → report; ``spectra``: data → training on real and
random labels → spectra → report). A new
analysis is a new module there with the same ``execute(run, progress)``, and one line below.
"""

from __future__ import annotations

from typing import Any, Callable

from ..ops import backend
from .rundir import Run


def _analyses() -> dict[str, Callable[[Run, Any], str]]:
    from .stages import aging, spectra, swap, traps

    return {"traps": traps.execute, "aging": aging.execute, "spectra": spectra.execute, "swap": swap.execute}


def execute(run: Run, progress: bool | None = None) -> str:
    """Run (or resume) every stage of the run's analysis; returns the short summary."""
    cfg = run.cfg
    if cfg["run.threads"]:
        backend.set_num_threads(cfg["run.threads"])
    if cfg.get("model.arch", "mlp") in ("mlp", "toy"):
        run.manifest["backend_resolved"] = backend.resolve(cfg["run.backend"])
    else:       # a torch module: torch.func, on the GPU where torch sees one
        from ..ops import resolve_module_backend

        be = resolve_module_backend(cfg["run.backend"])
        run.manifest["backend_resolved"] = "torch (GPU)" if be == "cuda" else "torch (CPU)"
    run.manifest["analysis"] = cfg.get("analysis", "traps")
    if run.manifest.get("finished"):
        from .rundir import log

        log(f"{run.dir} had finished ({run.manifest['finished']}); what is on disk is kept, and the cheap stages that "
            "always run (traps, statistics, report and figures) are recomputed from it: no descent is run again")
    run.save_manifest()
    with run.recording():       # every file written is recorded in the manifest's ledger
        run.repair()            # a damaged, foreign or unknown file is moved aside and computed again
        return _analyses()[cfg.get("analysis", "traps")](run, progress)
