"""A run directory: its manifest, and the public readers of every stage it stores.

Layout of a run directory::

    config.toml  manifest.json  report.md
    outer/seed_<s>.npz            θ_t of the window, training curves
    inner/block_<b>.npz           endpoints θ*, statuses, G records, endpoint loss/G/accuracy, and the
                                  checkpoints (loss, G, distances at fractions of the budget)
    inner_seed/                   the reruns with another batch seed at every sensitivity.every-th point
    inner_half/                   half-budget reruns (runs made before the checkpoints replaced them)
    certify/seed_<s>.npz          certificates of the endpoints: ‖∇L‖², λ_min, λ_max, index, kind
    sharpness/seed_<s>.npz        the Hessian's top eigenvalues and SLQ density at outer points (optional)
    indicators/seed_<s>.npz       the indicator series and the endpoints' pairwise distances
    indicators_seed/, indicators_half/   the same for the reruns
    identity.npz  identity.json   the within-trap scale, the clusters of every seed, visits and returns
    traps.npz  traps.json         boundaries per seed, trapping times, their summary
    stats.json                    power-law fits (all, early, late)
    sensitivity.json              every statistic under the cut x0.5/x1/x2, the other rule, the reruns
    regime1/                      the regime-1 window of the first seeds, a run directory of its own
    figures/*.png|pdf|npz

and for the aging analysis::

    config.toml  manifest.json  report.md
    aging/net_<hidden>.npz        Δ, Δ₄ on the (t_w, lag) grid, curves, D(t), final θ
    aging/net_<hidden>.ckpt.npz   the checkpoint of an unfinished run (removed when it finishes)
    figures/*.png|pdf|npz

The stages (:mod:`fasttrap.run.stages`) write these files; the report and a researcher in a
notebook read them back through :func:`open_run` and the readers here, never through the stages.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis import traps
from ..common import store
from ..ops import backend
from ..version import __version__
from . import config as cfgmod
from . import integrity


class RunError(RuntimeError):
    """The run cannot go on (bad data, an unusable directory, a full disk …); the message says why."""


class IntegrityError(RunError, integrity.IntegrityError):
    """A run directory's files or settings are not what its manifest recorded; the message names the
    files (or settings) and the fix."""


def log(msg: str) -> None:
    print(f"[fasttrap] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- manifest -----
def versions() -> dict[str, str]:
    out = {"fasttrap": __version__, "python": platform.python_version()}
    for mod in ("numpy", "torch", "numba", "powerlaw", "scipy", "matplotlib"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = "n/a"
    return out


def hardware() -> dict[str, Any]:
    hw: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": backend.get_num_threads()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                hw["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if backend.cuda_available():
        try:
            import torch

            hw["gpu"] = torch.cuda.get_device_name()
        except Exception:  # noqa: BLE001
            hw["gpu"] = "cuda device"
    return hw


class Run:
    """A run directory, its manifest and the ledger of its files (:mod:`fasttrap.run.integrity`)."""

    def __init__(self, directory: Path, cfg: dict[str, Any]):
        self.dir = directory
        self.cfg = cfg
        self.manifest_path = directory / "manifest.json"
        self._lock = threading.RLock()
        if self.manifest_path.exists():
            try:
                self.manifest = store.read_json(self.manifest_path)
            except (store.DamagedFileError, OSError) as exc:
                raise IntegrityError(f"{self.manifest_path}: {exc}. It is the run's record of its stages and "
                                     "files; without it the run can be neither read nor resumed. Restore it from "
                                     "a backup, or start the run again in a new directory") from None
            if not isinstance(self.manifest, dict) or not isinstance(self.manifest.get("stages"), dict):
                raise IntegrityError(f"{self.manifest_path}: damaged (no 'stages' record in it); restore it from a "
                                     "backup, or start the run again in a new directory")
        else:
            rec = integrity.settings_record(cfg)
            self.manifest = {"versions": versions(), "hardware": hardware(), "backend": backend.info(),
                             "profile": cfg.get("profile"), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "seeds": self.seeds, "stages": {}, "resumes": 0,
                             "settings": rec, "settings_sha256": integrity.settings_sha256(rec), "files": {}}

    @property
    def seeds(self) -> list[int]:
        return [self.cfg["outer.seed_offset"] + i for i in range(self.cfg["outer.seeds"])]

    def save_manifest(self) -> None:
        with self._lock:
            store.write_json(self.manifest_path, self.manifest)

    def stage_done(self, name: str, seconds: float, **extra: Any) -> None:
        with self._lock:
            st = self.manifest["stages"].setdefault(name, {})
            st.update(done=True, seconds=round(st.get("seconds", 0.0) + seconds, 3), **extra)
            self.save_manifest()

    def is_done(self, name: str) -> bool:
        return bool(self.manifest["stages"].get(name, {}).get("done"))

    def finished(self, wall_seconds: float) -> None:
        """Mark the run finished, with this session's wall time."""
        with self._lock:
            self.manifest["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            self.manifest["wall_seconds_last_session"] = round(wall_seconds, 2)
            self.save_manifest()

    # ---------------------------------------------------------------------------- the ledger ---
    @property
    def has_ledger(self) -> bool:
        """Whether the manifest records the run's files (runs made before the ledger do not)."""
        return isinstance(self.manifest.get("files"), dict)

    def _rel(self, path: Path) -> str | None:
        try:
            rel = Path(path).resolve().relative_to(self.dir.resolve()).as_posix()
        except ValueError:
            return None
        return None if integrity.excluded(rel) else rel

    def has(self, rel: str) -> bool:
        """Whether the run holds the file ``rel`` for a reader: it exists and, in a run with a ledger,
        the ledger records it (a file written after the manifest's last update is not read)."""
        return (self.dir / rel).is_file() and (not self.has_ledger or rel in self.manifest["files"])

    def record(self, path: Path, what: dict[str, Any] | None = None) -> None:
        """Record a file just written in the ledger (and save the manifest). A file recomputed after
        its first version was found damaged must have that version's bytes when later stages were
        computed from it (:func:`fasttrap.run.integrity.is_task_output`)."""
        rel = self._rel(path)
        if rel is None or not self.has_ledger or not Path(path).is_file():
            return
        e = integrity.entry_of(Path(path), what)
        with self._lock:
            old = self.manifest["files"].get(rel)
            if old is not None and "what" in old and "what" not in e:
                e["what"] = old["what"]
            was = self.manifest.get("replaced", {}).pop(rel, None)
            self.manifest["files"][rel] = e
            if was is not None:
                same = was["sha256"] == e["sha256"]
                self.manifest.setdefault("recomputed", []).append(
                    {"file": rel, "found": was["kind"], "same_bytes": same, "at": time.strftime("%Y-%m-%d %H:%M:%S")})
            self.save_manifest()
        if was is None:
            return
        moved = self.dir / was["moved_to"] if was.get("moved_to") else None
        if was["kind"] == "unrecorded":       # not known to be wrong: the recomputation decides
            if was["sha256"] == e["sha256"] and moved is not None:
                moved.unlink(missing_ok=True)
                _prune(moved.parent, self.dir / integrity.DAMAGED)
                log(f"{rel}: recomputed to the bytes of the file found there unrecorded (it was a finished write "
                    "the manifest had not yet recorded); that copy is removed")
            else:
                log(f"{rel}: recomputed; the unrecorded file found there had other bytes and stays in {was['moved_to']}")
        elif was["sha256"] == e["sha256"]:
            log(f"{rel}: recomputed, the same bytes as first written")
        elif integrity.is_task_output(rel):
            raise IntegrityError(f"{self.dir / rel}: recomputed, but its bytes differ from those first written "
                                 f"(sha256 {e['sha256'][:12]}…, recorded {was['sha256'][:12]}…); the later stages were "
                                 "computed from the first version, so this run can no longer be trusted. Start "
                                 "it again in a new directory")

    @contextmanager
    def recording(self):  # type: ignore[no-untyped-def]
        """While inside, every file written below the run directory is recorded in its ledger."""
        store.watch(self.dir, self.record)
        try:
            yield self
        finally:
            store.watch(self.dir, None)

    def check_settings(self, present: set[str] | None = None) -> None:
        """Refuse settings that differ from those the run was made with (its ``config.toml`` edited).

        Args:
            present: the keys written in ``config.toml`` (a missing line is refused too).

        Raises:
            IntegrityError: naming ``config.toml`` and every setting that differs.
        """
        rec = self.manifest.get("settings")
        if not isinstance(rec, dict):
            return
        diff = integrity.settings_diff(rec, self.cfg, present)
        if diff:
            raise IntegrityError(f"{self.dir / 'config.toml'}: no longer the settings this run was made with "
                                 f"(manifest.json, settings_sha256 {self.manifest.get('settings_sha256', '?')[:12]}…): "
                                 + "; ".join(diff) + ". Put the file back as it was (manifest.json keeps the "
                                 "settings under 'settings'); a change of settings is a new run (--out)")

    def problems(self) -> list[integrity.Problem]:
        """The files that are not what the ledger recorded (empty for a run without a ledger)."""
        return integrity.check(self.dir, self.manifest["files"]) if self.has_ledger else []

    def verify(self) -> None:
        """Refuse a run directory whose recorded files are damaged, foreign or missing.

        Raises:
            IntegrityError: naming each such file, and the fix.
        """
        bad = [p for p in self.problems() if p.kind != "unrecorded"]
        if bad:
            raise IntegrityError(f"{self.dir}: {len(bad)} file(s) are not what the run wrote: "
                                 + "; ".join(map(str, bad[:8])) + (" …" if len(bad) > 8 else "")
                                 + f". Nothing was read from them. python -m fasttrap.run --resume {self.dir} "
                                 "recomputes them")

    def repair(self) -> list[integrity.Problem]:
        """Before a resume: move every file that is not what the ledger recorded into ``damaged/`` and
        forget it, so its stage computes it again (:meth:`record` then checks the bytes). A run made
        before the ledger adopts the files it holds. Returns the problems found."""
        if not self.has_ledger:
            with self._lock:
                self.manifest["files"] = {}
                rec = integrity.settings_record(self.cfg)
                self.manifest.setdefault("settings", rec)
                self.manifest.setdefault("settings_sha256", integrity.settings_sha256(rec))
            n = 0
            for p in self.dir.rglob("*"):
                if p.is_file() and self._rel(p) is not None and not any(
                        n_.parent in p.parents for n_ in self.dir.glob("*/manifest.json")):
                    self.record(p)
                    n += 1
            if n:
                log(f"{self.dir} was made before fasttrap kept a ledger of a run's files: its {n} files are taken "
                    "as they are, and checked from now on")
            self.save_manifest()
            return []
        found = self.problems()
        if not found:
            return found
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with self._lock:
            for p in found:
                sha = store.sha256(self.dir / p.rel) if p.kind == "unrecorded" else None
                dst = integrity.quarantine(self.dir, p.rel, stamp)
                old = self.manifest["files"].pop(p.rel, None)
                # its recomputation is checked against the recorded bytes (or, for a file the ledger did
                # not know, compared with what was found)
                self.manifest.setdefault("replaced", {})[p.rel] = {
                    "kind": p.kind, "sha256": sha if old is None else old["sha256"],
                    "moved_to": dst.relative_to(self.dir).as_posix() if dst else None}
                where = f"; moved to {dst.relative_to(self.dir)}" if dst else ""
                log(f"{p}{where}; it is computed again")
            self.save_manifest()
        return found


def _prune(d: Path, stop: Path) -> None:
    """Remove empty folders from ``d`` up to and including ``stop``."""
    while d != stop.parent and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent


# The inner stage and its reruns: "main", "seed" (batch seed run.seed + 1), "half" (half the epochs).
VARIANTS = ("main", "seed", "half")


def _suffix(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    return "" if variant == "main" else f"_{variant}"


def inner_dir(run: Run, variant: str = "main") -> Path:
    """Where the inner blocks of ``variant`` are stored."""
    return run.dir / f"inner{_suffix(variant)}"


def indicators_dir(run: Run, variant: str = "main") -> Path:
    """Where the indicator series of ``variant`` are stored."""
    return run.dir / f"indicators{_suffix(variant)}"


def variant_seeds(run: Run, variant: str = "main") -> list[int]:
    """The seeds a variant covers: all for the main run, the first ``sensitivity.seeds`` for the reruns."""
    _suffix(variant)
    n = run.cfg["sensitivity.seeds"] or len(run.seeds)
    return run.seeds if variant == "main" else run.seeds[:n]


def variants(run: Run) -> list[str]:
    """The variants this run computes: the main run, the batch-seed reruns (``sensitivity.enabled``)
    and, in runs made before the checkpoints replaced them, the half-budget reruns (``sensitivity.half``)."""
    if not run.cfg["sensitivity.enabled"]:
        return ["main"]
    return ["main", "seed", "half"] if run.cfg["sensitivity.half"] else ["main", "seed"]


def rerun_points(run: Run) -> np.ndarray:
    """Global indices [R] of the start points the reruns cover: every ``sensitivity.every``-th point of
    each of the first ``sensitivity.seeds`` seeds' windows (its first point included)."""
    _, _, seeds = start_points(run)
    every = run.cfg["sensitivity.every"]
    out = []
    for s in variant_seeds(run, "seed"):
        idx = np.flatnonzero(seeds == s)
        out.append(idx[::every])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def variant_points(run: Run, variant: str = "main") -> np.ndarray:
    """Global indices of the start points ``variant`` covers, in its block order."""
    _suffix(variant)
    if variant == "main":
        return np.arange(len(start_points(run)[1]))
    return rerun_points(run)


def start_points(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All start points in global order (seed-major): θ0 [N, P], their outer steps, their seeds."""
    th, st, sd = [], [], []
    for s in run.seeds:
        z = store.read_npz(run.dir / "outer" / f"seed_{s}.npz")
        th.append(z["thetas"])
        st.append(z["steps"])
        sd.append(np.full(len(z["steps"]), s))
    return np.concatenate(th), np.concatenate(st), np.concatenate(sd)


def blocks(n: int, size: int) -> list[tuple[int, int]]:
    """[lo, hi) index ranges that cut n start points into blocks of ``size``."""
    return [(a, min(n, a + size)) for a in range(0, n, size)]


def block_size(cfg: dict[str, Any], n: int) -> int:
    """inner.block, or for 0: every start point at once on a GPU (one batch), 25 on a CPU."""
    if cfg["inner.block"]:
        return cfg["inner.block"]
    return n if backend.resolve(cfg["run.backend"]) == "cuda" else 25


def n_points(run: Run, variant: str = "main") -> int:
    """How many start points a variant covers (:func:`variant_points`)."""
    return int(variant_points(run, variant).size)


def inner_results(run: Run, variant: str = "main") -> dict[str, np.ndarray]:
    """Every inner block of ``variant`` concatenated in global start-point order: theta [N, P], status [N],
    G_trace [N, T'] … (N: the start points of the variant's seeds)."""
    n = n_points(run, variant)
    nb = len(blocks(n, block_size(run.cfg, n)))
    paths = [inner_dir(run, variant) / f"block_{b:04d}.npz" for b in range(nb)]
    parts = [store.read_npz(p) for p in paths]
    _check_blocks(run, paths, parts, blocks(n, block_size(run.cfg, n)))
    keys = {k for k in set.intersection(*(set(p) for p in parts)) - {"trace_steps"}   # older blocks lack newer keys
            if not k.startswith("ckpt_")}                                       # checkpoints: checkpoint_series
    return {k: np.concatenate([p[k] for p in parts]) for k in sorted(keys)} | {"trace_steps": parts[0]["trace_steps"]}


# what every inner block has held since the first version; a block without one is not a block
BLOCK_KEYS = ("theta", "status", "train_loss", "train_G")


def _check_blocks(run: Run, paths: list[Path], parts: list[dict[str, np.ndarray]], ranges: list[tuple[int, int]]) -> None:
    """What a block must be, checked also where no ledger can vouch for it (runs made before it): its
    arrays, one row per start point of its range, θ of the run's size, and finite θ for a run whose
    status says it ended well."""
    P = None
    for p, z, (lo, hi) in zip(paths, parts, ranges):
        lack = [k for k in BLOCK_KEYS if k not in z]
        if lack:
            raise store.DamagedFileError(p, f"it lacks {lack}: not an inner block of this run")
        th = z["theta"]
        if th.ndim != 2 or th.shape[0] != hi - lo or len(z["status"]) != hi - lo:
            raise store.DamagedFileError(p, f"it holds {th.shape[0] if th.ndim else '?'} endpoints, the block "
                                            f"covers start points [{lo}, {hi}): from another run or block")
        P = th.shape[1] if P is None else P
        if th.shape[1] != P:
            raise store.DamagedFileError(p, f"its θ has {th.shape[1]} parameters, the other blocks' {P}: "
                                            "from another run")
        ok = np.isin(z["status"].astype(str), ["converged", "max_steps"])
        bad = ok & ~np.isfinite(th).all(axis=1)
        if bad.any():
            raise store.DamagedFileError(p, f"{int(bad.sum())} endpoint(s) have non-finite θ but the status "
                                            f"{z['status'][bad][0]!s}: damaged")


def inner_fields(run: Run, keys: tuple[str, ...], variant: str = "main", lo: int = 0,
                 hi: int | None = None) -> dict[str, np.ndarray]:
    """The named arrays of the inner blocks of ``variant`` for start points [lo, hi), concatenated in
    start-point order. Only the blocks that hold those points are opened, and of each only those
    arrays are read (a task that needs one seed's endpoints does not read every seed's)."""
    n = n_points(run, variant)
    hi = n if hi is None else min(hi, n)
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for b, (a, e) in enumerate(blocks(n, block_size(run.cfg, n))):
        if e <= lo or a >= hi:
            continue
        with store.open_npz(inner_dir(run, variant) / f"block_{b:04d}.npz") as z:
            for k in keys:
                out[k].append(z[k][max(lo, a) - a: min(hi, e) - a])
    return {k: np.concatenate(v) for k, v in out.items()}


def inner_fields_at(run: Run, keys: tuple[str, ...], points: Any, variant: str = "main") -> dict[str, np.ndarray]:
    """The named arrays of ``variant``'s inner blocks at the given positions [M] of its block order
    (for the main run, global start-point indices), in that order."""
    pts = np.asarray(points, dtype=np.int64).reshape(-1)
    n = n_points(run, variant)
    out = {k: [None] * pts.size for k in keys}
    for b, (a, e) in enumerate(blocks(n, block_size(run.cfg, n))):
        sel = np.flatnonzero((pts >= a) & (pts < e))
        if not sel.size:
            continue
        with store.open_npz(inner_dir(run, variant) / f"block_{b:04d}.npz") as z:
            for k in keys:
                arr = z[k]
                for i in sel:
                    out[k][i] = arr[pts[i] - a]
    return {k: np.stack(v) if v else np.zeros(0) for k, v in out.items()}


def checkpoint_series(run: Run) -> dict[str, np.ndarray] | None:
    """The checkpoints of the main run and of its reruns, in global order (None without checkpoints).

    Returns:
        ``fraction`` [J], ``steps`` [J] (inner steps), ``loss``, ``G`` [J, N], ``consecutive`` [J, N−1]
        (‖θ^j_{i+1} − θ^j_i‖ over global start points, across blocks too), and for the reruns (at
        :func:`rerun_points`) ``rerun_loss``, ``rerun_G``, ``rerun_distance`` [J, R] (empty when the
        run has no reruns).
    """
    n = n_points(run)
    parts = [store.read_npz(inner_dir(run) / f"block_{b:04d}.npz") for b in range(len(blocks(n, block_size(run.cfg, n))))]
    if not parts or "ckpt_steps" not in parts[0] or not parts[0]["ckpt_steps"].size:
        return None
    frac = (parts[0]["ckpt_fraction"] if "ckpt_fraction" in parts[0]          # blocks of older versions:
            else np.asarray(run.cfg["inner.checkpoints"], np.float64))        # one step per fraction
    out = {"steps": parts[0]["ckpt_steps"], "fraction": np.round(np.asarray(frac, np.float64), 4),
           "loss": np.concatenate([p["ckpt_loss"] for p in parts], axis=1),
           "G": np.concatenate([p["ckpt_G"] for p in parts], axis=1)}
    cons = []
    for i, p in enumerate(parts):
        cons.append(p["ckpt_next"])
        if i + 1 < len(parts):
            a, b = p["ckpt_edge"][:, 1].astype(np.float64), parts[i + 1]["ckpt_edge"][:, 0].astype(np.float64)
            cons.append(np.linalg.norm(a - b, axis=1)[:, None])
    out["consecutive"] = np.concatenate(cons, axis=1)
    J = out["steps"].size
    if run.cfg["sensitivity.enabled"] and n_points(run, "seed"):
        nr = n_points(run, "seed")
        rp = [store.read_npz(inner_dir(run, "seed") / f"block_{b:04d}.npz")
              for b in range(len(blocks(nr, block_size(run.cfg, nr))))]
        for k, src in (("rerun_loss", "ckpt_loss"), ("rerun_G", "ckpt_G"), ("rerun_distance", "ckpt_dist_main")):
            out[k] = np.concatenate([p[src] for p in rp], axis=1)
    else:
        out |= {k: np.zeros((J, 0)) for k in ("rerun_loss", "rerun_G", "rerun_distance")}
    return out


def ledge_series(run: Run, s: int) -> dict[str, Any] | None:
    """The series the ledge rule read for seed ``s`` (``ledges.npz``), or None."""
    from ..analysis.ledges import series_from_arrays

    p = run.dir / "ledges.npz"
    if not run.has("ledges.npz"):
        return None
    with store.open_npz(p) as z:
        return series_from_arrays(z, prefix=f"s{s}_") if f"s{s}_steps" in z else None


def load_indicators(run: Run, s: int, variant: str = "main") -> traps.Indicators:
    """The indicator series of seed ``s`` (:class:`fasttrap.analysis.traps.Indicators`) of ``variant``."""
    z = store.read_npz(indicators_dir(run, variant) / f"seed_{s}.npz")
    return traps.Indicators(z["steps"], z["loss_end"], z["acc_end"], z["G_end"], z["end_to_end"], z["start_to_end"],
                            z["outer_step"], z["status"], z["invalid"], z.get("G_start"))


def thresholds(cfg: dict[str, Any]) -> dict[str, Any]:
    """The segmentation settings of a run, as keyword arguments of :func:`fasttrap.analysis.traps.segment`."""
    return {k: cfg[f"traps.{k}"] for k in ("dist_ratio", "peak_window", "confirm", "loss_step", "G_step", "adaptive",
                                           "bimodality")}




def certificates(run: Run, s: int) -> dict[str, np.ndarray] | None:
    """The certificates of seed ``s`` (``point`` [C] global start-point indices, ``steps``, ``kind``,
    ``grad_sq``, ``lambda_min``, ``index`` … [C]), or None when the run has none."""
    p = run.dir / "certify" / f"seed_{s}.npz"
    return store.read_npz(p) if run.has(f"certify/seed_{s}.npz") else None


def sharpness(run: Run, s: int) -> dict[str, np.ndarray] | None:
    """The Hessian at seed ``s``'s outer points (``steps`` [M], ``top`` [M, k] descending, ``residuals``,
    ``trace`` [M], SLQ ``nodes`` / ``weights`` [M, probes, m]), or None when not recorded."""
    p = run.dir / "sharpness" / f"seed_{s}.npz"
    return store.read_npz(p) if run.has(f"sharpness/seed_{s}.npz") else None


def pairwise_distances(run: Run, s: int, variant: str = "main") -> np.ndarray:
    """The endpoints' pairwise distance matrix [T, T] of seed ``s``, as the indicator stage stored it."""
    return store.read_npz(indicators_dir(run, variant) / f"seed_{s}.npz")["pairwise"]


@dataclass
class RunData:
    """What a finished (or partly finished) run directory holds, read back as arrays.

    Attributes:
        path: the run directory.
        config: the resolved settings (dotted keys, as in ``config.toml``).
        manifest: versions, seeds, hardware, per-stage timings.
        seeds: the outer seeds.
        outer: per seed, the outer path: ``thetas`` [T, P], ``steps`` [T], training curves.
        start_points: θ_t of all seeds [N, P] in global order, with ``start_steps`` [N] and ``start_seeds`` [N].
        inner: the inner endpoints in the same order (``theta`` [N, P], ``status`` [N], ``train_loss``,
            ``train_G``, ``train_acc`` [N], ``G_trace`` [N, T'] …), or None before the inner stage ends.
        indicators: per seed, :class:`fasttrap.analysis.traps.Indicators`, or None.
        traps: ``traps.npz`` (lengths, censoring and flags, boundaries per seed) merged with
            ``traps.json`` (summary, thresholds), or None.
        stats: ``stats.json`` (the power-law fits), or None.
        certificates: per seed, the certificates of its endpoints (:func:`certificates`), or None.
        identity: ``identity.json`` (within-trap scale, cut, clusters, visits, returns and the gap test
            per seed), or None.
        sensitivity: ``sensitivity.json`` (the statistics under each change, with intervals), or None.
        ledges: ``ledges.json`` (the ledge rule's verdict, evidence and budget table per seed), or None.
        checkpoints: the endpoints' loss, G and distances at fractions of the budget, with the reruns'
            (:func:`checkpoint_series`), or None.
        regime1: the regime-1 companion run (``<run>/regime1``) as a :class:`RunData`, or None.
        sharpness: per seed, the Hessian at its outer points (:func:`sharpness`), or None.
        integrity: "verified" (settings and every recorded file checked against the manifest's
            ledger), or why not (a run made before the ledger).
    """

    path: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    seeds: list[int]
    outer: dict[int, dict[str, np.ndarray]]
    start_points: np.ndarray | None
    start_steps: np.ndarray | None
    start_seeds: np.ndarray | None
    inner: dict[str, np.ndarray] | None
    indicators: dict[int, traps.Indicators] | None
    traps: dict[str, Any] | None
    stats: dict[str, Any] | None
    certificates: dict[int, dict[str, np.ndarray]] | None = None
    identity: dict[str, Any] | None = None
    sensitivity: dict[str, Any] | None = None
    ledges: dict[str, Any] | None = None
    checkpoints: dict[str, np.ndarray] | None = None
    regime1: "RunData | None" = None
    sharpness: dict[int, dict[str, np.ndarray]] | None = None
    integrity: str = "unverified"

    def run(self) -> Run:
        """The :class:`Run` (directory and manifest) behind this data, for the readers above."""
        return Run(self.path, self.config)


def open_run(path: str | os.PathLike[str], verify: bool = True) -> RunData:
    """Read a run directory of ``python -m fasttrap.run`` back as arrays and dataclasses.

    Stages that have not finished yet come back as None, so a running or killed run can be
    inspected too. Nothing is written.

    A run with a ledger (every run made since fasttrap kept one) is checked first
    (:mod:`fasttrap.run.integrity`): its ``config.toml`` must hold the settings it was made with, and
    every file it recorded must have the bytes recorded; a file written after the manifest's last
    update (a run still writing, or killed in between) is not read. ``RunData.integrity`` says which.

    Args:
        path: the run directory (it holds ``config.toml`` and ``manifest.json``).
        verify: check the files' hashes (False skips that, not the settings check: for a quick look
            at a very large run).

    Returns:
        :class:`RunData`.

    Raises:
        RunError: ``path`` is not a fasttrap run directory.
        IntegrityError: its settings or files are not what it recorded (the message names them).

    Example::

        r = fasttrap.open_run("runs/quick-20261126-140000")
        r.traps["lengths"], r.traps["summary"]["all"]["mean"]
        r.indicators[0].loss_end              # [T] endpoint loss along the outer path of seed 0
    """
    d = Path(path)
    if not (d / "config.toml").is_file() or not (d / "manifest.json").is_file():
        raise RunError(f"{d}: not a fasttrap run directory (config.toml and manifest.json are missing)")
    try:
        cfg = cfgmod.from_saved(d / "config.toml", fill_missing=True)
    except cfgmod.ConfigError as exc:
        raise IntegrityError(str(exc)) from None
    run = Run(d, cfg)
    run.check_settings(cfgmod.keys_in(d / "config.toml"))
    if run.has_ledger:
        if verify:
            run.verify()
        integrity_note = "verified" if verify else "settings checked; file hashes not checked (verify=False)"
    else:
        integrity_note = "unverified: made before fasttrap kept a ledger of a run's files"
    seeds = run.seeds
    outer = {s: store.read_npz(d / "outer" / f"seed_{s}.npz") for s in seeds if run.has(f"outer/seed_{s}.npz")}
    have_outer = len(outer) == len(seeds) and len(seeds) > 0
    th0 = st = sd = None
    if have_outer:
        th0, st, sd = start_points(run)
    inner = None
    if have_outer and run.is_done("inner"):
        inner = inner_results(run)
    ind = None
    if all(run.has(f"indicators/seed_{s}.npz") for s in seeds) and seeds:
        ind = {s: load_indicators(run, s) for s in seeds}
    tr = None
    if run.has("traps.npz") and run.has("traps.json"):
        tr = dict(store.read_npz(d / "traps.npz")) | store.read_json(d / "traps.json")

    def js(name: str) -> Any:
        return store.read_json(d / name) if run.has(name) else None

    certs = {s: c for s in seeds if (c := certificates(run, s)) is not None} or None
    ck = checkpoint_series(run) if inner is not None else None
    r1 = open_run(d / "regime1", verify) if (d / "regime1" / "manifest.json").is_file() else None
    sharp = {s: h for s in seeds if (h := sharpness(run, s)) is not None} or None
    return RunData(sharpness=sharp, certificates=certs, identity=js("identity.json"), sensitivity=js("sensitivity.json"),
                   ledges=js("ledges.json"), checkpoints=ck, regime1=r1, path=d, config=cfg, manifest=run.manifest,
                   seeds=seeds, outer=outer, start_points=th0, start_steps=st, start_seeds=sd, inner=inner,
                   indicators=ind, traps=tr, stats=js("stats.json"), integrity=integrity_note)
