"""The embedded MNIST, the IDX reader, and a clear error for every kind of bad file."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from fasttrap.model import data
from fasttrap.model.data import DataError


def test_embedded_mnist_loads_and_is_verified():
    ds = data.load("mnist")
    assert ds.X_train.shape == (60000, 784) and ds.X_train.dtype == np.float32
    assert ds.X_test.shape == (10000, 784)
    assert ds.y_train.dtype == np.int64 and ds.n_classes == 10
    np.testing.assert_array_equal(ds.y_train[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    assert abs(ds.X_train.mean()) < 1e-3 and abs(ds.X_train.std() - 1) < 1e-3  # (x-0.1307)/0.3081
    assert ds.normalize == "mnist"


def test_embedded_mnist_matches_canonical_md5_of_uncompressed_files():
    sums = dict(line.split()[::-1] for line in (data.EMBEDDED / "MD5SUMS.uncompressed").read_text().splitlines())
    for name, want in sums.items():
        raw = gzip.decompress((data.EMBEDDED / (name + ".gz")).read_bytes())
        assert hashlib.md5(raw).hexdigest() == want, name


def test_attribution_ships_with_the_data():
    text = (data.EMBEDDED / "README.md").read_text()
    assert "LeCun" in text
    assert "Creative Commons Attribution-Share Alike 3.0" in text


@pytest.mark.parametrize("norm", ["none", "mnist", "standardize", "fashion-mnist"])
def test_normalizations(norm):
    ds = data.load("mnist", normalize=norm)
    raw = data.load("mnist", normalize="none")
    if norm == "none":
        assert ds.X_train.min() == 0.0 and ds.X_train.max() == 1.0
    else:
        mean, std = ds.info["mean"], ds.info["std"]
        np.testing.assert_allclose(ds.X_train[:100] * std + mean, raw.X_train[:100], atol=1e-5)
        if norm == "standardize":
            assert abs(ds.X_train.mean()) < 1e-4


def test_unknown_normalization():
    with pytest.raises(ValueError, match="normalize"):
        data.load("mnist", normalize="zscore")


def _copy_mnist(tmp_path: Path, gz: bool = True) -> Path:
    d = tmp_path / "idx"
    d.mkdir()
    for name in data._FILES.values():
        src = data.EMBEDDED / (name + ".gz")
        if gz:
            shutil.copy(src, d / (name + ".gz"))
        else:
            (d / name).write_bytes(gzip.decompress(src.read_bytes()))
    return d


def test_raw_idx_directory(tmp_path):
    d = _copy_mnist(tmp_path, gz=False)
    ds = data.load(d)
    ref = data.load("mnist")
    np.testing.assert_array_equal(ds.y_test, ref.y_test)
    np.testing.assert_array_equal(data.load(d, normalize="mnist").X_train, ref.X_train)
    assert ds.normalize == "standardize"


def _write_idx(path: Path, arr: np.ndarray, magic: int | None = None, gz: bool = True, extra: bytes = b"", cut: int = 0):
    code = 0x08
    m = magic if magic is not None else (code << 8) | arr.ndim
    payload = struct.pack(">I", m) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.astype(np.uint8).tobytes() + extra
    if cut:
        payload = payload[:-cut]
    path.write_bytes(gzip.compress(payload) if gz else payload)


def _tiny_dir(tmp_path: Path, **fault) -> Path:
    d = tmp_path / "tiny"
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    imgs = {"train": rng.integers(0, 256, (20, 4, 4)), "t10k": rng.integers(0, 256, (10, 4, 4))}
    labs = {"train": np.arange(20) % 3, "t10k": np.arange(10) % 3}
    for split in ("train", "t10k"):
        _write_idx(d / f"{split}-images-idx3-ubyte.gz", imgs[split])
        _write_idx(d / f"{split}-labels-idx1-ubyte.gz", labs[split])
    return d


def test_tiny_directory_loads(tmp_path):
    ds = data.load(_tiny_dir(tmp_path), normalize="none")
    assert ds.X_train.shape == (20, 16) and ds.n_classes == 3


def test_truncated_file(tmp_path):
    d = _tiny_dir(tmp_path)
    imgs = np.random.default_rng(1).integers(0, 256, (20, 4, 4))
    _write_idx(d / "train-images-idx3-ubyte.gz", imgs, cut=7)
    with pytest.raises(DataError, match=r"train-images.*truncated"):
        data.load(d)


def test_truncated_gzip_stream(tmp_path):
    d = _tiny_dir(tmp_path)
    p = d / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(DataError, match=r"t10k-images.*(corrupt|truncated)"):
        data.load(d)


def test_trailing_bytes(tmp_path):
    d = _tiny_dir(tmp_path)
    _write_idx(d / "train-labels-idx1-ubyte.gz", np.arange(20) % 3, extra=b"xx")
    with pytest.raises(DataError, match=r"train-labels.*trailing"):
        data.load(d)


def test_wrong_magic(tmp_path):
    d = _tiny_dir(tmp_path)
    _write_idx(d / "train-labels-idx1-ubyte.gz", np.arange(20) % 3, magic=0x12340801)
    with pytest.raises(DataError, match=r"train-labels.*magic"):
        data.load(d)


def test_mismatched_counts(tmp_path):
    d = _tiny_dir(tmp_path)
    _write_idx(d / "train-labels-idx1-ubyte.gz", np.arange(19) % 3)
    with pytest.raises(DataError, match=r"20 images but .*19 labels"):
        data.load(d)


def test_labels_out_of_range(tmp_path):
    d = _tiny_dir(tmp_path)
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 7, 0, 1, 2, 0, 1, 2]))
    with pytest.raises(DataError, match=r"t10k-labels.*out of range"):
        data.load(d)


def test_html_page_saved_as_gz(tmp_path):
    d = _tiny_dir(tmp_path)
    (d / "train-images-idx3-ubyte.gz").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    with pytest.raises(DataError, match=r"train-images.*HTML"):
        data.load(d)


def test_missing_file_and_directory(tmp_path):
    d = _tiny_dir(tmp_path)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels"):
        data.load(d)
    with pytest.raises(DataError, match="not a directory"):
        data.load(tmp_path / "nope")


def test_checksum_mismatch_is_caught(tmp_path):
    d = _copy_mnist(tmp_path)
    shutil.copy(data.EMBEDDED / "SHA256SUMS", d / "SHA256SUMS")
    p = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(p.read_bytes())
    raw[-20] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"t10k-labels.*SHA-256"):
        data.load(d)


FASHION = data.FASHION_DIRS[0]


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian():
    ds = data.load("fashion-mnist")
    assert ds.X_train.shape == (60000, 784) and ds.n_classes == 10
    assert ds.normalize == "fashion-mnist"
    assert not np.array_equal(ds.y_train[:100], data.load("mnist").y_train[:100])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_idx_images_with_nan_or_inf_are_refused(tmp_path, bad):
    d = _tiny_dir(tmp_path)
    imgs = np.random.default_rng(2).uniform(0, 1, (20, 4, 4)).astype(">f4")
    imgs[3, 1, 2] = bad
    payload = struct.pack(">I", (0x0D << 8) | 3) + b"".join(struct.pack(">I", s) for s in imgs.shape) + imgs.tobytes()
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match=r"train-images.*1 pixel values are NaN or infinite"):
        data.load(d)
