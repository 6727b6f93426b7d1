"""A strict reader of the CIFAR-10 and CIFAR-100 "python version" batch files.

The data sets cannot be shipped or downloaded here; a user gives the directory they unpacked:

* CIFAR-10 (``cifar-10-batches-py``): ``data_batch_1`` … ``data_batch_5``, ``test_batch`` and
  ``batches.meta``; each batch a pickled dict with ``data`` (uint8 [n, 3072]) and ``labels`` (n ints
  in [0, 10)); the meta file holds ``label_names``.
* CIFAR-100 (``cifar-100-python``): ``train``, ``test`` and ``meta``; each data file a pickled dict
  with ``data`` and ``fine_labels`` (and ``coarse_labels``) in [0, 100); the meta file holds
  ``fine_label_names``.

A row of ``data`` is one 32 × 32 colour image in channel-major order (the 1,024 red values, then
green, then blue, each row-major), so a :class:`fasttrap.model.data.Dataset` keeps it as it is and records
``image_shape = (3, 32, 32)``: swap moves and conv nets know what a pixel and a channel are.

The files are pickles written by Python 2. Unpickling runs code named in the file, so they are read
with a restricted unpickler that allows only the few NumPy constructors an array needs; a file that
names anything else is refused as foreign, as is a truncated file, a missing key, a wrong shape or
dtype, a label out of range, or a batch whose labels and images disagree in number. Every refusal
is a :class:`DataError` naming the file.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

IMAGE_SHAPE = (3, 32, 32)
ROW = 3 * 32 * 32

# The globals a NumPy array's pickle may name (numpy 1.x and 2.x spellings), and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the file names {module}.{name}, which a CIFAR batch never does")


def _err(msg: str) -> Exception:
    return DataError(msg)


def read_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with str keys (Python 2 byte strings decoded)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _err(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        obj = _Restricted(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as exc:
        kind = "truncated" if isinstance(exc, EOFError) else "not a CIFAR python-version pickle"
        raise _err(f"{path}: {kind} ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise _err(f"{path}: expected a pickled dict, got {type(obj).__name__} (not a CIFAR batch file)")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _batch(path: Path, label_key: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = read_pickle(path)
    if "data" not in d or label_key not in d:
        raise _err(f"{path}: missing {'data' if 'data' not in d else label_key!r} (keys: {sorted(d)}); "
                   f"not a CIFAR-{n_classes} batch")
    X = d["data"]
    if not isinstance(X, np.ndarray) or X.dtype != np.uint8 or X.ndim != 2 or X.shape[1] != ROW:
        desc = f"{X.dtype} {list(X.shape)}" if isinstance(X, np.ndarray) else type(X).__name__
        raise _err(f"{path}: data must be uint8 [n, {ROW}] (32 × 32 × 3 images), got {desc}")
    raw = d[label_key]
    vals = raw.tolist() if isinstance(raw, np.ndarray) else raw
    if not isinstance(vals, (list, tuple)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in vals):
        # a float label 2.7 would truncate to 2, b'3' and True would pass as numbers: refuse them all
        kinds = sorted({type(v).__name__ for v in vals}) if isinstance(vals, (list, tuple)) else [type(raw).__name__]
        raise _err(f"{path}: {label_key} must be integers, got {', '.join(kinds)}")
    y = np.asarray(vals, dtype=np.int64)
    if y.ndim != 1 or y.size != X.shape[0]:
        raise _err(f"{path}: {X.shape[0]} images but {y.size} {label_key}")
    if X.shape[0] == 0:
        raise _err(f"{path}: holds no images")
    if y.min() < 0 or y.max() >= n_classes:
        raise _err(f"{path}: {label_key} must lie in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    return X, y


def is_cifar_dir(directory: Path) -> bool:
    """Does ``directory`` look like an unpacked CIFAR-10 or CIFAR-100 python version?"""
    return (directory / "data_batch_1").is_file() or ((directory / "train").is_file() and (directory / "meta").is_file())


def read_cifar(directory: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The CIFAR-10 or CIFAR-100 python version in ``directory``.

    Returns:
        ``(X_train uint8 [N, 3072], y_train int64 [N], X_test, y_test, info)``; info holds
        ``variant`` ("cifar-10" or "cifar-100"), ``n_classes``, ``label_names``, ``image_shape``
        (3, 32, 32) and the files read.

    Raises:
        DataError: a missing, truncated, foreign or inconsistent file (the message names it).
    """
    d = Path(directory)
    if not d.is_dir():
        raise _err(f"{d}: not a directory")
    if (d / "data_batch_1").is_file():
        variant, n_classes, label_key, meta_file, names_key = "cifar-10", 10, "labels", "batches.meta", "label_names"
        train = sorted(d.glob("data_batch_*"), key=lambda p: p.name)
        nums = []
        for p in train:
            suffix = p.name[len("data_batch_"):]
            if not suffix.isdigit():
                raise _err(f"{p}: not a CIFAR-10 batch name (data_batch_<n>)")
            nums.append(int(suffix))
        if sorted(nums) != list(range(1, len(nums) + 1)):
            raise _err(f"{d}: training batches {sorted(nums)} are not data_batch_1 … data_batch_{len(nums)} "
                       "(a batch is missing)")
        train = [d / f"data_batch_{i}" for i in range(1, len(nums) + 1)]
        test = d / "test_batch"
    elif (d / "train").is_file():
        variant, n_classes, label_key, meta_file, names_key = "cifar-100", 100, "fine_labels", "meta", "fine_label_names"
        train, test = [d / "train"], d / "test"
    else:
        raise _err(f"{d}: no CIFAR files (expected data_batch_1 … and test_batch of CIFAR-10, or train, test "
                   "and meta of CIFAR-100, python version)")
    for p in (test, d / meta_file):
        if not p.is_file():
            raise _err(f"{d}: missing {p.name} ({variant}, python version)")
    parts = [_batch(p, label_key, n_classes) for p in train]
    Xtr = np.concatenate([x for x, _ in parts])
    ytr = np.concatenate([y for _, y in parts])
    Xte, yte = _batch(test, label_key, n_classes)
    meta = read_pickle(d / meta_file)
    names = meta.get(names_key)
    if not isinstance(names, list) or len(names) != n_classes:
        raise _err(f"{d / meta_file}: expected {names_key} with {n_classes} names")
    names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
    info = {"variant": variant, "n_classes": n_classes, "label_names": names, "image_shape": IMAGE_SHAPE,
            "files": {"train": [str(p) for p in train], "test": str(test), "meta": str(d / meta_file)}}
    return Xtr, ytr, Xte, yte, info


def write_cifar(directory: str | Path, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray,
                y_test: np.ndarray, variant: str = "cifar-10", batches: int = 5) -> Path:
    """Write arrays in the CIFAR python-version layout (for tests and small synthetic sets).

    Args:
        X_*: uint8 [n, 3072]; y_*: integer labels.
        variant: "cifar-10" (``batches`` training batches) or "cifar-100".
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def dump(path: Path, obj: dict) -> None:
        path.write_bytes(pickle.dumps({k.encode(): v for k, v in obj.items()}, protocol=2))

    if variant == "cifar-10":
        for i, (xs, ys) in enumerate(zip(np.array_split(X_train, batches), np.array_split(y_train, batches)), 1):
            dump(d / f"data_batch_{i}", {"data": xs, "labels": [int(v) for v in ys], "batch_label": b"training"})
        dump(d / "test_batch", {"data": X_test, "labels": [int(v) for v in y_test]})
        dump(d / "batches.meta", {"label_names": [f"class{i}".encode() for i in range(10)], "num_vis": ROW})
    elif variant == "cifar-100":
        dump(d / "train", {"data": X_train, "fine_labels": [int(v) for v in y_train],
                           "coarse_labels": [int(v) // 5 for v in y_train]})
        dump(d / "test", {"data": X_test, "fine_labels": [int(v) for v in y_test],
                          "coarse_labels": [int(v) // 5 for v in y_test]})
        dump(d / "meta", {"fine_label_names": [f"class{i}".encode() for i in range(100)],
                          "coarse_label_names": [f"super{i}".encode() for i in range(20)]})
    else:
        raise ValueError(f"variant: expected 'cifar-10' or 'cifar-100', got {variant!r}")
    return d
