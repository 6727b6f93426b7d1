"""Data: the embedded MNIST, and a strict reader of IDX directories (gzip or raw).

The package ships real MNIST (60 000 training and 10 000 test images) in ``fasttrap/datasets/mnist``:
the MNIST database of handwritten digits, Yann LeCun, Corinna Cortes and Christopher J. C. Burges,
licensed CC BY-SA 3.0 (see the README there). It is verified against its SHA-256 sums on load.

``load`` also reads any directory holding the four IDX files of the MNIST layout
(``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-…``), for example
Fashion-MNIST from Debian's ``dataset-fashion-mnist``. Every file is checked: gzip integrity,
magic number, dimensions, payload size, image/label counts and label range; a fault raises
:class:`DataError` naming the file and what is wrong. A directory holding the CIFAR-10 or CIFAR-100
"python version" batch files is read by :mod:`fasttrap.model.cifar`, as strictly.

Images are flattened to rows, channel-major (C, H, W) as the files store them; ``Dataset.image_shape``
says how to fold a row back: (1, 28, 28) for MNIST, (3, 32, 32) for CIFAR.

Example:
    >>> data = load("mnist")                 # PyTorch's usual MNIST normalisation
    >>> data.X_train.shape, data.X_train.dtype
    ((60000, 784), dtype('float32'))
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import cifar
from .errors import DataError

EMBEDDED = Path(__file__).resolve().parent.parent / "datasets" / "mnist"
FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)

# name -> (mean, std) of [0, 1] pixels; "none" keeps [0, 1]; "standardize" uses the training set's.
NORMALIZATIONS: dict[str, tuple[float, float] | None] = {
    "mnist": (0.1307, 0.3081),           # PyTorch's usual MNIST transform
    "fashion-mnist": (0.2860, 0.3530),
    "none": None,
    "standardize": None,
}

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}



@dataclass(frozen=True)
class Dataset:
    """A classification data set, flattened.

    Attributes:
        X_train: [N, n0] float32 inputs.
        y_train: [N] int64 labels in [0, n_classes).
        X_test: [N_test, n0] float32.
        y_test: [N_test] int64.
        name: where it came from ("mnist", "fashion-mnist" or the directory).
        normalize: the normalisation applied.
        n_classes: 1 + the largest label (10 for MNIST).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str
    normalize: str
    n_classes: int
    info: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one row: from the files, else (1, n0, 1) for plain features."""
        shp = self.info.get("image_shape")
        if shp is not None and int(np.prod(shp)) == self.n_features:
            return tuple(int(v) for v in shp)  # type: ignore[return-value]
        return (1, self.n_features, 1)

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """The first n_train / n_test rows (for quick runs and tests)."""
        return Dataset(self.X_train[:n_train], self.y_train[:n_train], self.X_test[:n_test], self.y_test[:n_test],
                       self.name, self.normalize, self.n_classes, dict(self.info, subset=(n_train, n_test)))

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.X_train.shape}, test={self.X_test.shape}, "
                f"classes={self.n_classes}, normalize={self.normalize!r})")


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if path.suffix == ".gz":
        if raw[:2] != b"\x1f\x8b":
            head = raw[:64].lstrip().lower()
            hint = " (it looks like an HTML page saved as .gz)" if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")) else ""
            raise DataError(f"{path}: not a gzip file{hint}")
        try:
            return gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file (gzip or raw) as an array of its declared type and dimensions.

    Raises:
        DataError: on a bad magic number, an unknown type code, or a payload whose size does not
            match the dimensions (truncated or with trailing bytes).
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(buf)} bytes)")
    zero, code, ndim = int.from_bytes(buf[:2], "big"), buf[2], buf[3]
    if zero != 0 or code not in _IDX_TYPES or not 1 <= ndim <= 4:
        head = buf[:16].lstrip().lower()
        hint = " (it looks like an HTML page)" if head.startswith(b"<") else ""
        raise DataError(f"{path}: wrong magic number 0x{int.from_bytes(buf[:4], 'big'):08x}{hint}; "
                        "an IDX file starts with 0x0000 <type> <ndim>")
    hdr = 4 + 4 * ndim
    if len(buf) < hdr:
        raise DataError(f"{path}: truncated header")
    dims = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dt = np.dtype(_IDX_TYPES[code])
    need = int(np.prod(dims)) * dt.itemsize
    have = len(buf) - hdr
    if have < need:
        raise DataError(f"{path}: truncated: dimensions {dims} need {need} bytes of data, found {have}")
    if have > need:
        raise DataError(f"{path}: {have - need} unexpected trailing bytes after the {dims} payload")
    return np.frombuffer(buf, dtype=dt, count=int(np.prod(dims)), offset=hdr).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for cand in (directory / (stem + ".gz"), directory / stem, directory / stem.replace("-idx", ".idx"),
                 directory / (stem.replace("-idx", ".idx") + ".gz")):
        if cand.is_file():
            return cand
    raise DataError(f"{directory}: missing {stem}[.gz] (expected the four MNIST-layout IDX files)")


def _verify_sums(directory: Path, files: dict[str, Path], required: bool) -> None:
    sums = directory / "SHA256SUMS"
    if not sums.is_file():
        if required:
            raise DataError(f"{sums}: checksum file missing from the embedded data")
        return
    expected = {}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            expected[parts[1].lstrip("*")] = parts[0].lower()
    for path in files.values():
        want = expected.get(path.name)
        if want is None:
            if required:
                raise DataError(f"{path}: no checksum for it in {sums}")
            continue
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != want:
            raise DataError(f"{path}: SHA-256 {got[:16]}… does not match {sums} ({want[:16]}…); the file is corrupt")


@lru_cache(maxsize=4)
def _load_raw(directory: str, verify: bool, required: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"{d}: not a directory (give 'mnist', 'fashion-mnist', a directory of IDX files or one of "
                        "the CIFAR-10/100 python-version batch files)")
    if cifar.is_cifar_dir(d):
        return cifar.read_cifar(d)
    files = {k: _find(d, v) for k, v in _FILES.items()}
    if verify:
        _verify_sums(d, files, required)
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        img, lab = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        pi, pl = files[f"{split}_images"], files[f"{split}_labels"]
        if img.ndim != 3:
            raise DataError(f"{pi}: expected 3 dimensions [N, rows, cols], got {img.ndim}")
        if lab.ndim != 1:
            raise DataError(f"{pl}: expected 1 dimension [N], got {lab.ndim}")
        if img.shape[0] != lab.shape[0]:
            raise DataError(f"{pi} has {img.shape[0]} images but {pl} has {lab.shape[0]} labels")
        if img.shape[0] == 0:
            raise DataError(f"{pi}: holds no images")
        if np.issubdtype(img.dtype, np.floating) and not np.all(np.isfinite(img)):
            bad = int((~np.isfinite(img)).sum())
            raise DataError(f"{pi}: {bad} pixel values are NaN or infinite; the images are damaged")
        if not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0 or lab.max() > 255:
            raise DataError(f"{pl}: labels must be small non-negative integers, got range "
                            f"[{lab.min()}, {lab.max()}]")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(f"{files['test_images']}: image size {arrays['test_images'].shape[1:]} differs from "
                        f"the training images' {arrays['train_images'].shape[1:]}")
    n_classes = int(arrays["train_labels"].max()) + 1
    if arrays["test_labels"].max() >= n_classes:
        raise DataError(f"{files['test_labels']}: label {int(arrays['test_labels'].max())} never occurs in training "
                        f"(labels out of range [0, {n_classes}))")
    info = {"files": {k: str(p) for k, p in files.items()}, "n_classes": n_classes,
            "image_shape": (1, *arrays["train_images"].shape[1:])}
    return (arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"], info)


def _resolve(name_or_dir: str | os.PathLike) -> tuple[str, Path, bool, str]:
    """(display name, directory, checksums required, default normalisation)."""
    s = str(name_or_dir)
    if s == "mnist":
        return "mnist", EMBEDDED, True, "mnist"
    if s in ("fashion-mnist", "fashion_mnist", "fashion"):
        for d in FASHION_DIRS:
            if d.is_dir():
                return "fashion-mnist", d, False, "fashion-mnist"
        raise DataError("fashion-mnist: not found in " + ", ".join(map(str, FASHION_DIRS))
                        + " (install Debian's dataset-fashion-mnist, or pass its directory)")
    return s, Path(s), False, "standardize"


def load(name_or_dir: str | os.PathLike = "mnist", normalize: str = "default", verify: bool = True) -> Dataset:
    """Load a data set as float32 arrays with int64 labels.

    Args:
        name_or_dir: ``"mnist"`` (embedded), ``"fashion-mnist"`` (Debian's package), a directory
            of MNIST-layout IDX files (gzip or raw), or a directory of the CIFAR-10 / CIFAR-100
            python-version batch files (the name of the data set is then "cifar-10" / "cifar-100").
        normalize: ``"default"`` (``"mnist"`` for MNIST, ``"fashion-mnist"`` for Fashion-MNIST,
            ``"standardize"`` otherwise), ``"mnist"`` ((x - 0.1307)/0.3081 on [0, 1] pixels, PyTorch's
            usual MNIST transform), ``"fashion-mnist"``, ``"standardize"`` (the training set's mean and
            std), or ``"none"`` ([0, 1] pixels).
        verify: check SHA-256 sums (always present for the embedded MNIST; used for a directory when
            it holds a SHA256SUMS file).

    Returns:
        A :class:`Dataset` with X_train [N, n0] float32, y_train [N] int64, X_test, y_test.

    Raises:
        DataError: a missing, corrupt or inconsistent file (the message names it).
        ValueError: an unknown ``normalize``.
    """
    if not isinstance(normalize, str) or (normalize != "default" and normalize not in NORMALIZATIONS):
        raise ValueError(f"normalize: expected one of {['default', *NORMALIZATIONS]}, got {normalize!r}")
    name, directory, required, default_norm = _resolve(name_or_dir)
    xtr, ytr, xte, yte, info = _load_raw(str(directory.resolve()), bool(verify), required)
    norm = default_norm if normalize == "default" else normalize
    if "variant" in info:                       # CIFAR: name it by what it is
        name = info["variant"]
    n0 = int(np.prod(xtr.shape[1:]))
    scale = 255.0 if xtr.dtype == np.uint8 else 1.0
    Xtr = xtr.reshape(len(xtr), n0).astype(np.float32) / np.float32(scale)
    Xte = xte.reshape(len(xte), n0).astype(np.float32) / np.float32(scale)
    if norm == "standardize":
        mean, std = float(Xtr.mean()), float(Xtr.std())
    elif NORMALIZATIONS[norm] is not None:
        mean, std = NORMALIZATIONS[norm]  # type: ignore[misc]
    else:
        mean, std = 0.0, 1.0
    if std <= 0:
        raise DataError(f"{directory}: training images are constant; cannot standardise")
    if norm != "none":
        Xtr = (Xtr - np.float32(mean)) / np.float32(std)
        Xte = (Xte - np.float32(mean)) / np.float32(std)
    info = dict(info, mean=mean, std=std, directory=str(directory))
    return Dataset(np.ascontiguousarray(Xtr), ytr.astype(np.int64), np.ascontiguousarray(Xte), yte.astype(np.int64),
                   name, norm, int(info["n_classes"]), info)
