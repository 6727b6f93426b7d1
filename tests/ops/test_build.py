"""The state of the build: importing never fails, and CUDA is a state, not an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fasttrap
from fasttrap.ops import _loader


def test_core_is_built():
    assert _loader.core is not None, _loader.core_error
    info = fasttrap.backend_info()
    assert info["core"] and "OpenBLAS" in info["blas"]


@pytest.mark.skipif(os.environ.get("FASTTRAP_EXPECT_CUDA_BUILD") != "1",
                    reason="set FASTTRAP_EXPECT_CUDA_BUILD=1 where nvcc was present at build time (CI does)")
def test_cuda_sources_were_compiled():
    assert fasttrap.built_with_cuda()


def test_device_count_is_an_int_even_without_a_driver():
    n = fasttrap.cuda_device_count()
    assert isinstance(n, int) and n >= 0
    assert fasttrap.cuda_available() == (fasttrap.built_with_cuda() and n > 0)


def test_import_survives_hidden_gpus():
    code = "import fasttrap; print(fasttrap.cuda_device_count(), fasttrap.built_with_cuda())"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    count, _ = out.stdout.split()
    assert count == "0"


def test_running_from_the_checkout_uses_the_compiled_core():
    """`python -m fasttrap.run` in the repository root imports the checkout's Python files; the
    compiled core must still be found (the one pip built into site-packages), or the job would
    silently run on the slow torch twin."""
    root = Path(__file__).resolve().parents[2]
    code = "import fasttrap; i = fasttrap.backend_info(); print(fasttrap.__file__); print(i['core'], i['core_error'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    path, status = out.stdout.strip().splitlines()[-2:]
    assert path.startswith(str(root)), path          # the checkout's files …
    assert status.startswith("True"), status          # … with a working core


def test_import_leaves_numpy_openblas_threads_alone():
    code = ("import os; os.environ.pop('OPENBLAS_NUM_THREADS', None); import fasttrap, os; "
            "print(os.environ.get('OPENBLAS_NUM_THREADS'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"
