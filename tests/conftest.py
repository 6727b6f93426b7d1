from __future__ import annotations

import sys
from pathlib import Path

# tests/ on sys.path: the helpers (_util) and the slow references (naive/) import from any subfolder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import os
import zlib

import numpy as np
import pytest

@pytest.fixture
def rng(request) -> np.random.Generator:
    # Fresh inputs for every test, reproducible from the test's id; set FASTTRAP_TEST_SEED to
    # draw a different set on another run.
    base = int(os.environ.get("FASTTRAP_TEST_SEED", "0"))
    return np.random.default_rng([base, zlib.crc32(request.node.nodeid.encode())])


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow (full-size end-to-end runs)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (CI runs the small versions)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
