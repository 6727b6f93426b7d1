"""The run directory's storage: every file is written atomically (temp file, fsync, rename).

A reader (or a resumed run) therefore sees either the previous complete file or the new complete
file, never a torn one, whatever kills the process. A full disk raises :class:`StoreError` with a
clear message and leaves the previous file intact.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np


class StoreError(OSError):
    """Writing to the run directory failed (the message says what and why)."""


class DamagedFileError(ValueError):
    """A file of the run directory cannot be read as what it should be (truncated, not a zip archive,
    a bad CRC, not JSON …). The message names the file and says why; ``path`` is the file."""

    def __init__(self, path: str | os.PathLike, why: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: damaged ({why})")


# Watchers of directories: every file written atomically below one of them is reported to the
# watcher of the deepest such directory (a run directory records each file it writes in its manifest;
# a run nested in another, such as <run>/regime1, records its own).
_WATCH: dict[Path, Callable[[Path], None]] = {}
_WATCH_LOCK = threading.Lock()


def watch(directory: str | os.PathLike, callback: Callable[[Path], None] | None) -> None:
    """Call ``callback(path)`` after every atomic write below ``directory`` (None: stop watching)."""
    d = Path(directory).resolve()
    with _WATCH_LOCK:
        if callback is None:
            _WATCH.pop(d, None)
        else:
            _WATCH[d] = callback


def _notify(path: Path) -> None:
    if not _WATCH:
        return
    p = path.resolve()
    with _WATCH_LOCK:
        hit = None
        for parent in p.parents:
            if parent in _WATCH:
                hit = _WATCH[parent]
                break
    if hit is not None:
        hit(p)


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask: from /proc where Linux shows it (reading it changes nothing), else by
    setting and restoring it."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    m = os.umask(0o022)
    os.umask(m)
    return m


def atomic_write(path: str | os.PathLike, writer: Callable[[io.BufferedWriter], None]) -> Path:
    """Write ``path`` through ``writer(fh)`` into a temp file beside it, fsync, and rename over it.

    The file gets the permissions an ordinary ``open()`` would give it under the user's umask
    (``mkstemp`` alone would leave it 0600, unreadable to colleagues on a shared file system).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(exc.errno, f"no space left on the device while writing {path}; the previous "
                                        f"version of the file, if any, is intact. Free space and resume the run.") from exc
        raise StoreError(exc.errno or 0, f"could not write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    _notify(path)
    return path


def clean_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove the temp files of writes that a killed process never finished (they are never read:
    the file they were meant to replace is intact). Returns what was removed."""
    removed = []
    for p in Path(directory).rglob(".*.tmp"):
        if p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if np.isfinite(v) else None
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; a file that is not valid JSON raises :class:`DamagedFileError` naming it."""
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode())
    except (ValueError, UnicodeDecodeError) as exc:        # JSONDecodeError is a ValueError
        raise DamagedFileError(path, f"not valid JSON: {exc}") from None


def write_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Arrays (uncompressed .npz) written atomically; object arrays are refused (they need pickle)."""
    arrs = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in arrs.items():
        if v.dtype == object:
            raise TypeError(f"{k}: object arrays cannot be stored; convert to str or numbers")
    return atomic_write(path, lambda fh: np.savez(fh, **arrs))


# what a damaged .npz raises inside NumPy / zipfile (a truncated archive, a bad CRC, a torn header)
NPZ_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, KeyError, zipfile.LargeZipFile)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an .npz file; a damaged one raises :class:`DamagedFileError` naming it
    (a missing one, FileNotFoundError)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except NPZ_ERRORS as exc:
        raise DamagedFileError(path, f"not a readable .npz archive: {type(exc).__name__}: {exc}") from None


@contextmanager
def open_npz(path: str | os.PathLike) -> Iterator[Any]:
    """``np.load`` of an .npz without pickles, for reading a few of its arrays; a damaged file (or one
    that lacks a named array) raises :class:`DamagedFileError` naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            yield z
    except FileNotFoundError:
        raise
    except NPZ_ERRORS as exc:
        raise DamagedFileError(path, f"not a readable .npz archive, or one without the arrays it should hold: "
                                     f"{type(exc).__name__}: {exc}") from None


def npz_layout(path: str | os.PathLike) -> dict[str, list[Any]]:
    """What an .npz holds, from its headers alone: {name: [dtype, shape]} (no array is read)."""
    out: dict[str, list[Any]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                with zf.open(name) as fh:
                    major, _ = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
                out[name.removesuffix(".npy")] = [dtype.str, list(shape)]
    except NPZ_ERRORS as exc:
        raise DamagedFileError(path, f"not a readable .npz archive: {type(exc).__name__}: {exc}") from None
    return out


def save_figure(fig: Any, stem: str | os.PathLike, arrays: dict[str, Any] | None = None) -> list[Path]:
    """``stem.png``, ``stem.pdf`` and, with arrays, ``stem.npz`` (the data behind the figure)."""
    out = []
    for ext in ("png", "pdf"):
        def w(fh: io.BufferedWriter, ext: str = ext) -> None:
            fig.savefig(fh, format=ext, dpi=130, bbox_inches="tight")
        out.append(atomic_write(f"{stem}.{ext}", w))
    if arrays:
        out.append(write_npz(f"{stem}.npz", **arrays))
    return out
