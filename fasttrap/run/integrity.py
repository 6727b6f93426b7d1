"""A run directory that proves its integrity: the ledger of its files, and the settings it was made with.

Every file a run writes goes through :mod:`fasttrap.common.store` (atomically); the run records each
one in ``manifest.json`` under ``"files"``: its SHA-256, its size, for an ``.npz`` the dtype and shape
of every array, and for the output of a task what it is (the task, e.g. ``inner-main-0003``, and its
arguments: variant, block, start-point range; or the seed). The manifest also keeps the resolved
settings the run was made with (``"settings"``, execution settings aside) and their hash
(``"settings_sha256"``).

Why a ledger and not only the zip CRCs: a CRC catches a torn or flipped file, but not a valid file in
the wrong place (a block copied over another, a certificate from another run), and a stale file is
valid too. A content hash recorded when the file was written catches all three, and the layout says
what the file was meant to be.

* ``--resume`` first compares ``config.toml`` with the recorded settings and refuses a change by name
  (:func:`settings_diff`). Then it checks every recorded file (:func:`check`): one that is damaged,
  foreign or missing, and one the ledger does not know (a kill between a write and the manifest's
  update, or a file put there by hand), is moved to ``<run>/damaged/`` (nothing is deleted) and
  computed again by its stage. Every stage is deterministic, so a recomputed task output must have the
  bytes first recorded; if it does not, the later stages were computed from other bytes and the run
  refuses (:class:`IntegrityError`).
* :func:`fasttrap.open_run` checks the same and refuses a damaged or foreign file by name, with the
  fix (``--resume`` recomputes it); a file not in the ledger is not read.
* Runs made before the ledger (no ``"files"`` in the manifest) cannot be checked: ``open_run`` says so
  in ``RunData.integrity``, and a resume adopts their files as they are and checks them from then on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common import store
from . import config as cfgmod

# Not in the ledger: the manifest itself, the settings (checked through "settings"), the aging
# checkpoints (rewritten all along and removed when the run ends; they carry their own resume check),
# and the quarantine.
DAMAGED = "damaged"
# Outputs whose recomputation must give the bytes first recorded: later stages were computed from them.
TASK_DIRS = ("outer", "inner", "inner_seed", "inner_half", "certify", "sharpness", "indicators", "indicators_seed",
             "indicators_half")


class IntegrityError(RuntimeError):
    """A run directory's files or settings are not what its manifest recorded (the message names them)."""


def excluded(rel: str) -> bool:
    """Whether a path (relative to its run directory) stays out of the ledger."""
    parts = rel.split("/")
    name = parts[-1]
    return (name in ("manifest.json", "config.toml") or name.endswith(".ckpt.npz") or name.endswith(".tmp")
            or name.startswith(".fasttrap-") or parts[0] == DAMAGED)


def entry_of(path: Path, what: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ledger's record of one file: ``sha256``, ``bytes``, ``arrays`` ({name: [dtype, shape]}) for an
    .npz, and ``what`` for a task's output."""
    e: dict[str, Any] = {"sha256": store.sha256(path), "bytes": path.stat().st_size}
    if path.suffix == ".npz":
        try:
            e["arrays"] = store.npz_layout(path)
        except store.DamagedFileError:
            e["arrays"] = None
    if what:
        e["what"] = what
    return e


def settings_record(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide what a run computes (execution settings aside), as JSON values."""
    keep = {k: v for k, v in cfg.items() if k != "profile" and not cfgmod.is_execution_setting(k)}
    return json.loads(json.dumps(keep, sort_keys=True, default=str))


def settings_sha256(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def settings_diff(recorded: dict[str, Any], cfg: dict[str, Any], present: set[str] | None) -> list[str]:
    """How the settings of ``config.toml`` differ from those the run was made with.

    Args:
        recorded: the manifest's ``settings``.
        cfg: the settings read from ``config.toml`` (later settings filled with their defaults).
        present: the keys written in ``config.toml`` (None: do not check for missing lines).

    Returns:
        one line per difference (empty: the same settings). A setting added to fasttrap after the run
        was made is not in ``recorded`` and is not a difference.
    """
    now = settings_record(cfg)
    out = []
    for k in sorted(recorded):
        if k == "analysis":
            if now.get(k, "traps") != recorded[k]:
                out.append(f"analysis = {now.get(k)!r}, made as {recorded[k]!r}")
            continue
        if present is not None and k not in present:
            out.append(f"{k}: the line is missing (the run was made with {k} = {recorded[k]!r})")
        elif k in now and now[k] != recorded[k]:
            out.append(f"{k} = {now[k]!r}, but the run was made with {recorded[k]!r}")
    return out


@dataclass
class Problem:
    """One file that is not what the ledger recorded."""

    rel: str        # the path relative to the run directory
    kind: str       # "damaged", "foreign", "missing" or "unrecorded"
    detail: str

    def __str__(self) -> str:
        return f"{self.rel}: {self.kind} ({self.detail})"


def _nested_runs(root: Path) -> list[Path]:
    return [p.parent for p in root.glob("*/manifest.json")]


def check(root: Path, files: dict[str, dict[str, Any]]) -> list[Problem]:
    """Every recorded file against its record, and every file the ledger does not know.

    A nested run directory (``regime1/``) keeps a ledger of its own and is not looked into.
    """
    problems = []
    by_hash = {e["sha256"]: rel for rel, e in files.items()}
    for rel, e in sorted(files.items()):
        p = root / rel
        if not p.is_file():
            problems.append(Problem(rel, "missing", "the manifest records it, the directory does not hold it"))
            continue
        size = p.stat().st_size
        digest = store.sha256(p)
        if digest == e["sha256"] and size == e["bytes"]:
            continue
        other = by_hash.get(digest)
        if other is not None and other != rel:
            problems.append(Problem(rel, "foreign", f"its bytes are those of {other}"))
        else:
            what = "truncated" if size < e["bytes"] else "its bytes differ from those recorded when it was written"
            problems.append(Problem(rel, "damaged", f"{what}; {size} bytes, recorded {e['bytes']}"))
    nested = _nested_runs(root)
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(n in p.parents for n in nested):
            continue
        rel = p.relative_to(root).as_posix()
        if not excluded(rel) and rel not in files:
            problems.append(Problem(rel, "unrecorded", "not in the manifest's ledger: written after its last update "
                                                     "(a kill in between) or put there from elsewhere"))
    return problems


def quarantine(root: Path, rel: str, stamp: str) -> Path | None:
    """Move a file into ``<run>/damaged/<stamp>/<rel>`` (nothing is deleted). Returns where, or None."""
    src = root / rel
    if not src.exists():
        return None
    dst = root / DAMAGED / stamp / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.replace(dst)
    return dst


def is_task_output(rel: str) -> bool:
    """Whether later stages were computed from this file (so a recomputation must give its bytes)."""
    return rel.split("/")[0] in TASK_DIRS and rel.endswith(".npz")
