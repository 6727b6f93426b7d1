"""Issue 28, case by case: every command-line case that once ended in a traceback (exit 1) or ran on
wrong input now exits with its documented code (2 settings, 3 data or run directory), names the
setting or file at fault, prints no traceback, and leaves no run directory behind (this module).

Where the issue's other cases are tested (each asserts the error type and the name in the message,
or the recomputation):

* a block replaced by another, truncated, empty, CRC-damaged or one-ulp-stale; outer, certificate,
  indicator, ledge, trap, stats, sensitivity, report and figure files; an edited or line-deleted
  config.toml; a truncated or foreign manifest.json; a NaN-θ or status-less block of a run without a
  ledger: ``tests/run/test_integrity.py``;
* BatchNorm without running statistics, a wrong ``input_shape``, an output of shape [B] or
  [B, 4, 2], ``train()`` after wrapping: ``tests/model/test_torchmodel.py`` (the last four tests);
* ``hessian_eigs(k=P)`` on a zero cluster: ``tests/linalg/test_lanczos.py::
  test_hessian_eigs_finds_every_copy_of_a_zero_cluster``;
* fractional, bytes and bool CIFAR labels: ``tests/model/test_cifar.py::
  test_bad_files_are_refused_with_the_file_named``; NaN or inf IDX pixels:
  ``tests/model/test_data.py::test_float_idx_images_with_nan_or_inf_are_refused``;
* ``Swap(prob=True)``, ``Swap(temperature=True)``: ``tests/dynamics/test_swap.py::
  test_bad_moves_get_clear_errors``;
* ``certify(seed=-1)``, ``seed='a'``, k > P: ``tests/analysis/test_certify.py::test_bad_input_is_refused``;
  ``inner_descent(method="newton_mr", steps=10**12)``: ``tests/analysis/test_certify.py::
  test_newton_mr_with_a_huge_budget_allocates_only_what_it_runs``;
* a Dask run's bytes, certificates included: ``tests/run/test_dask.py::test_dask_run_equals_the_local_run``.
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
