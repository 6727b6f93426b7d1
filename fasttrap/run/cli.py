"""``python -m fasttrap.run``: the main job, from the command line.

    python -m fasttrap.run                         # the quick profile, into a new run directory
    python -m fasttrap.run --profile thesis --out runs/thesis --backend cuda
    python -m fasttrap.run --set inner.epochs=5 --set outer.seeds=2
    python -m fasttrap.run --resume runs/thesis    # continue a killed run
    python -m fasttrap.run --analysis aging        # aging and diffusion: 100-100 against 5-5 on MNIST
    python -m fasttrap.run --analysis spectra      # Jacobian and Hessian ESDs: real against random labels

Exit codes: 0 done; 2 bad command line or settings; 3 bad data or run directory, or SGD diverged; 4 storage failure
(e.g. a full disk: the last finished block is intact, resume once there is space); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from . import config as cfgmod


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fasttrap.run",
        description="Trapping-time analysis of neural-network training: outer SGD, batched inner descents on "
                    "G = ½|∇L|², trap segmentation, trapping-time statistics, figures and a report; with "
                    "--analysis aging, the aging (two-time weight displacements) and gradient noise of SGD instead; "
                    "with --analysis spectra, the spectral densities of the input Jacobian and of the Hessian of "
                    "nets trained on real and on random labels.",
        epilog=cfgmod.describe(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--analysis", choices=cfgmod.ANALYSES, default=None,
                   help="'traps' (default): the trapping-time analysis; 'aging': two-time weight observables, "
                        "gradient noise and training curves of the networks in aging.hidden; 'spectra': Jacobian and "
                        "Hessian ESDs with power-law fits, real against random labels")
    p.add_argument("--profile", choices=sorted(set().union(*cfgmod.ALL_PROFILES.values())), default=None,
                   help="settings preset: 'quick' (default; minutes on a laptop CPU); for traps 'thesis' (the "
                        "reference protocol), for aging 'long', for spectra 'full'")
    p.add_argument("--config", metavar="FILE", help="TOML file of settings ([section] tables, see below)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one setting (repeatable), e.g. --set inner.epochs=5")
    p.add_argument("--out", metavar="DIR", help="run directory to create (must not exist or be empty); "
                                                 "default runs/<profile>-<date>-<time> (runs/aging-<profile>-… for aging)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its saved settings")
    p.add_argument("--backend", choices=["auto", "cpu", "cuda", "torch"], help="compute backend (setting run.backend)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads of the compiled core (setting run.threads)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or log lines")
    return p


def _fail(code: int, msg: str) -> int:
    print(f"fasttrap.run: error: {msg}", file=sys.stderr, flush=True)
    return code


def _load_saved(directory: Path) -> dict[str, Any]:
    try:
        return cfgmod.from_saved(directory / "config.toml")
    except cfgmod.ConfigError as exc:
        first = exc
    # a run that recorded its settings says exactly which lines are missing or changed
    from .rundir import Run

    try:
        cfg = cfgmod.from_saved(directory / "config.toml", fill_missing=True)
    except cfgmod.ConfigError:
        raise cfgmod.ConfigError(f"--resume {first}") from None
    if (directory / "manifest.json").is_file():
        Run(directory, cfg).check_settings(cfgmod.keys_in(directory / "config.toml"))
    raise cfgmod.ConfigError(f"--resume {first}") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .rundir import IntegrityError

    if args.threads is not None and args.threads < 1:
        return _fail(2, f"--threads: expected an int >= 1, got {args.threads}")
    try:
        if args.resume:
            if args.profile or args.config or args.out or args.analysis:
                return _fail(2, "--resume continues a run with its saved settings; --analysis, --profile, --config "
                                "and --out cannot be combined with it")
            # where the work runs may change on resume (a new scheduler, more workers); what it computes may not
            bad = [o for o in args.overrides if not cfgmod.is_execution_setting(o.split("=", 1)[0].strip())]
            if bad:
                return _fail(2, f"--resume continues a run with its saved settings; only where it runs may change "
                                f"(--set run.executor, run.scheduler, run.threads, cluster.*), not {', '.join(bad)}")
            directory = Path(args.resume)
            cfg = _load_saved(directory)
            cfg = cfgmod.apply_overrides(cfg, args.overrides)
            if args.backend and args.backend != cfg["run.backend"]:
                return _fail(2, f"--backend {args.backend}: the run was started with run.backend={cfg['run.backend']}; "
                                "resuming on another backend would not reproduce it")
            if args.threads:
                cfg["run.threads"] = args.threads     # results do not depend on the thread count
        else:
            overrides = list(args.overrides)
            if args.backend:
                overrides.append(f"run.backend={args.backend}")
            if args.threads:
                overrides.append(f"run.threads={args.threads}")
            profile = args.profile or "quick"
            analysis = args.analysis or "traps"
            cfg = cfgmod.resolve(profile, args.config, overrides, analysis=analysis)
            name = profile if analysis == "traps" else f"{analysis}-{profile}"
            directory = Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
            if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
                return _fail(3, f"--out {directory}: exists and is not an empty directory; a new run never writes "
                                f"into an old one (use --resume {directory} to continue it)")
    except cfgmod.ConfigError as exc:
        return _fail(2, str(exc))
    except IntegrityError as exc:       # config.toml or manifest.json not as the run recorded them
        return _fail(3, str(exc))
    from ..ops.backend import BackendUnavailable, resolve as resolve_backend

    try:                               # before any directory or data: an explicit backend must exist here
        resolve_backend(cfg["run.backend"])
    except BackendUnavailable as exc:
        return _fail(2, f"run.backend = {cfg['run.backend']!r}: {exc}; use --backend auto or cpu")

    text = cfgmod.to_toml(cfg)
    print(text, flush=True)
    progress = False if args.no_progress else None
    fresh = not args.resume and not directory.exists()
    code = _execute(args, cfg, text, directory, progress)
    if code in (2, 3) and not args.resume:
        _remove_failed_start(directory, fresh)
    return code


def _remove_failed_start(directory: Path, fresh: bool) -> None:
    """A new run that failed before any stage finished leaves nothing behind: the directory it created
    (or, where it was given an empty one, what it wrote there), so the same command can be rerun."""
    import shutil

    from ..common import store

    man = directory / "manifest.json"
    try:
        done = any(v.get("done") for v in store.read_json(man).get("stages", {}).values()) if man.exists() else False
    except (OSError, ValueError):
        return
    if done:
        return
    if fresh:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        for p in directory.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _execute(args: argparse.Namespace, cfg: dict[str, Any], text: str, directory: Path, progress: bool | None) -> int:
    from ..common import store
    from ..dynamics.outer import DivergenceError
    from ..model.data import DataError
    from . import pipeline, rundir

    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not args.resume:
            store.write_text(directory / "config.toml", text)
        if args.resume:
            store.clean_stale_temps(directory)
        run = rundir.Run(directory, cfg)
        if args.resume:
            run.check_settings(cfgmod.keys_in(directory / "config.toml"))     # config.toml edited since?
            run.manifest["resumes"] = run.manifest.get("resumes", 0) + 1
        summary = pipeline.execute(run, progress=progress)
    except KeyboardInterrupt:
        return _fail(130, f"interrupted; finished work is saved. Continue with: python -m fasttrap.run --resume {directory}")
    except store.StoreError as exc:
        return _fail(4, f"{exc.strerror or exc}")
    except cfgmod.ConfigError as exc:          # e.g. run.executor = "dask" without Dask installed
        return _fail(2, str(exc))
    except (rundir.RunError, DataError, DivergenceError, store.DamagedFileError) as exc:
        return _fail(3, str(exc))
    except PermissionError as exc:
        return _fail(3, f"{directory}: {exc.strerror or exc}")
    print(summary, flush=True)
    return 0
