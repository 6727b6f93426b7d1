"""Every command-line case of issue 28 that once ended in a traceback (exit 1) or ran on wrong input:
each now exits with its documented code (2 settings, 3 data or run directory), names the setting or
file at fault in its message, prints no traceback, and leaves no run directory behind.

The run-directory cases (damaged, foreign and unrecorded files, an edited or damaged config.toml or
manifest.json) are in ``test_integrity.py``; the API cases (CIFAR labels, IDX pixels, Swap bools,
BatchNorm, TorchModel shapes, ``hessian_eigs(k=P)``, ``certify(seed=...)``) beside their modules'
tests under ``tests/model``, ``tests/dynamics``, ``tests/linalg`` and ``tests/analysis``.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fasttrap.ops.backend import cuda_available

from test_run import TINY, run_cmd  # noqa: E402  (rootdir-relative, as the other run tests)


def float_idx_dir(tmp_path: Path) -> Path:
    """An MNIST-layout directory whose training images are float IDX with one NaN pixel."""
    d = tmp_path / "idx"
    d.mkdir()
    rng = np.random.default_rng(0)

    def write(name: str, arr: np.ndarray, code: int) -> None:
        head = struct.pack(">I", (code << 8) | arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
        (d / name).write_bytes(gzip.compress(head + arr.tobytes()))

    imgs = rng.uniform(0, 1, (200, 28, 28)).astype(">f4")
    imgs[7, 3, 4] = np.nan
    write("train-images-idx3-ubyte.gz", imgs, 0x0D)
    write("t10k-images-idx3-ubyte.gz", rng.uniform(0, 1, (50, 28, 28)).astype(">f4"), 0x0D)
    write("train-labels-idx1-ubyte.gz", (np.arange(200) % 10).astype(np.uint8), 0x08)
    write("t10k-labels-idx1-ubyte.gz", (np.arange(50) % 10).astype(np.uint8), 0x08)
    return d


CASES = [
    pytest.param(lambda tmp: ["--backend", "cuda"], 2, ["run.backend = 'cuda'", "--backend auto"],
                 marks=pytest.mark.skipif(cuda_available(), reason="a CUDA device is here"), id="cuda-without-gpu"),
    pytest.param(lambda tmp: ["--set", f"data.name={float_idx_dir(tmp)}"], 3,
                 ["train-images-idx3-ubyte.gz", "NaN or infinite"], id="idx-nan-pixels"),
    pytest.param(lambda tmp: ["--set", "data.train_rows=5"], 2,
                 ["outer.batch_size = 128", "data.train_rows = 5"], id="train-rows-below-batch"),
    pytest.param(lambda tmp: ["--config", str(binary_file(tmp))], 2, ["blob.toml", "not a TOML file"],
                 id="binary-config"),
    pytest.param(lambda tmp: ["--set", "swap.apply=rows", "--set", "swap.layer=9"], 2,
                 ["swap.layer = 9", "layer 9 does not exist"], id="swap-rows-layer-out-of-range"),
    pytest.param(lambda tmp: ["--set", "certify.k=100000", "--set", "certify.k_max=100000"], 2,
                 ["certify.k = 100000", "P = 19090"], id="certify-k-above-P"),
]


def binary_file(tmp: Path) -> Path:
    p = tmp / "blob.toml"
    p.write_bytes(bytes(np.random.default_rng(1).integers(128, 256, 300, dtype=np.uint8)))
    return p


@pytest.mark.parametrize("make_args, code, words", CASES)
def test_each_case_exits_with_its_code_and_names_the_cause(tmp_path, make_args, code, words):
    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TINY, *make_args(tmp_path)], timeout=300)
    assert r.returncode == code, (r.returncode, r.stderr[-1500:])
    assert "Traceback" not in r.stderr, r.stderr[-1500:]
    for w in words:
        assert w in r.stderr, (w, r.stderr[-1500:])
    assert not out.exists()                    # a refused start leaves nothing behind
