"""The CIFAR-10/100 python-version reader, on small synthetic files written in that format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fasttrap.model import data
from fasttrap.model.cifar import read_cifar, write_cifar


def _arrays(rng, n_train=50, n_test=20, classes=10):
    return (rng.integers(0, 256, (n_train, 3072), dtype=np.uint8), rng.integers(0, classes, n_train),
            rng.integers(0, 256, (n_test, 3072), dtype=np.uint8), rng.integers(0, classes, n_test))


@pytest.mark.parametrize("variant, classes", [("cifar-10", 10), ("cifar-100", 100)])
def test_round_trip(tmp_path, rng, variant, classes):
    Xtr, ytr, Xte, yte = _arrays(rng, classes=classes)
    d = write_cifar(tmp_path / variant, Xtr, ytr, Xte, yte, variant=variant)
    ds = data.load(d, normalize="none")
    assert ds.name == variant and ds.n_classes == classes
    assert ds.image_shape == (3, 32, 32) and ds.X_train.shape == (50, 3072) and ds.X_train.dtype == np.float32
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.y_test, yte)
    np.testing.assert_allclose(ds.X_train, Xtr / 255.0, rtol=1e-6)
    # channel-major: pixel (row 2, col 5) of the green channel of image 7 is where the files put it
    img = ds.X_train[7].reshape(3, 32, 32)
    assert img[1, 2, 5] == np.float32(Xtr[7, 1024 + 2 * 32 + 5] / 255.0)
    assert len(read_cifar(d)[4]["label_names"]) == classes
    std = data.load(d)                                      # default: standardised by the training set
    assert abs(float(std.X_train.mean())) < 1e-4


def test_mnist_keeps_its_image_shape():
    assert data.load("mnist").image_shape == (1, 28, 28)


def _corrupt(tmp_path, rng, how):
    Xtr, ytr, Xte, yte = _arrays(rng)
    d = write_cifar(tmp_path / "c", Xtr, ytr, Xte, yte)
    if how == "truncated":
        raw = (d / "data_batch_2").read_bytes()
        (d / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    elif how == "foreign":
        class Evil:
            def __reduce__(self):
                import os
                return (os.system, ("touch " + str(tmp_path / "pwned"),))
        (d / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2))
    elif how == "shape":
        (d / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10},
                                                      protocol=2))
    elif how == "dtype":
        (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]},
                                                    protocol=2))
    elif how == "labels":
        (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},
                                                    protocol=2))
    elif how in ("float_labels", "bytes_labels", "bool_labels"):
        lab = {"float_labels": [0.0, 2.7], "bytes_labels": [0, b"3"], "bool_labels": [True, False]}[how]
        (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": lab},
                                                    protocol=2))
    elif how == "count":
        (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]},
                                                    protocol=2))
    elif how == "missing_test":
        (d / "test_batch").unlink()
    elif how == "missing_batch":
        (d / "data_batch_3").unlink()
    elif how == "not_a_dict":
        (d / "data_batch_1").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    return d


@pytest.mark.parametrize("how, words", [
    ("truncated", ["data_batch_2", "truncated"]),
    ("foreign", ["data_batch_3", "posix.system" if __import__("os").name == "posix" else "system"]),
    ("shape", ["data_batch_1", "uint8 [n, 3072]"]),
    ("dtype", ["test_batch", "uint8"]),
    ("labels", ["test_batch", "[0, 10)"]),
    ("count", ["test_batch", "3 images but 2 labels"]),
    ("float_labels", ["test_batch", "must be integers", "float"]),     # 2.7 is never truncated to 2
    ("bytes_labels", ["test_batch", "must be integers", "bytes"]),
    ("bool_labels", ["test_batch", "must be integers", "bool"]),
    ("missing_test", ["test_batch"]),
    ("missing_batch", ["a batch is missing"]),
    ("not_a_dict", ["data_batch_1", "dict"]),
])
def test_bad_files_are_refused_with_the_file_named(tmp_path, rng, how, words):
    d = _corrupt(tmp_path, rng, how)
    with pytest.raises(data.DataError) as e:
        data.load(d)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert not (tmp_path / "pwned").exists()          # a foreign pickle never runs its code


def test_not_a_data_directory(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(data.DataError, match="missing"):
        data.load(tmp_path / "x")
