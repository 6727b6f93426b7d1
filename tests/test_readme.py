"""Every Python example in README.md runs as written (issue 26).

The blocks are read from README.md itself. Where a block continues the prose around it (``mlp``,
``theta``, ``X``, ``y``, ``ds``, ``endpoints`` are defined in the text, not in the block), it runs
after PRELUDE, which defines them as the text does; nothing in a block is edited, except that the
placeholder run directory of the ``open_run`` example is replaced by a real one. The blocks that
train for minutes (the aging run of 10,000 steps, the Swap run, the API tour, the TorchModel tour)
are marked slow; CI runs the others, and every block is compiled and its imports resolved.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
PLACEHOLDER = "runs/quick-20261126-140000"

PRELUDE = """
import numpy as np
import fasttrap
from fasttrap.model import data
ds = data.load("mnist")
mlp = fasttrap.MLP((784, 100, 100, 10))
theta = mlp.init(K=2, seed=0)
X, y = ds.X_train[:512], ds.y_train[:512]
N = len(X)
endpoints = theta
"""


def _title(src: str) -> str:
    return next(line for line in src.splitlines() if line.strip())[:60]


# which blocks train for minutes on 2 cores (measured: each > 1 min)
SLOW_WORDS = ("run_aging(", "moves=[Swap(", "inner_descent(mlp, outer.thetas", "zoo.build(")


def test_the_readme_has_its_examples():
    assert len(BLOCKS) >= 8
    assert sum(PLACEHOLDER in b for b in BLOCKS) == 1


@pytest.mark.parametrize("i", range(len(BLOCKS)), ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_every_block_compiles_and_its_imports_resolve(i):
    tree = ast.parse(BLOCKS[i], filename=f"README block {i + 1}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fasttrap"):
            mod = importlib.import_module(node.module)
            for a in node.names:
                assert hasattr(mod, a.name) or importlib.util.find_spec(f"{node.module}.{a.name}"), \
                    f"README block {i + 1}: from {node.module} import {a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("fasttrap"):
                    importlib.import_module(a.name)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A small real run of the main job, for the open_run example."""
    sys.path.insert(0, str(Path(__file__).parent / "run"))
    from test_run import TINY, run_cmd

    out = tmp_path_factory.mktemp("readme") / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TINY])
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _params():
    for i, src in enumerate(BLOCKS):
        marks = [pytest.mark.slow] if any(w in src for w in SLOW_WORDS) else []
        yield pytest.param(i, marks=marks, id=f"block{i + 1}")


@pytest.mark.parametrize("i", list(_params()))
def test_every_block_runs_as_written(i, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)                      # a block that writes (a checkpoint) writes here
    src = BLOCKS[i]
    if PLACEHOLDER in src:
        src = src.replace(PLACEHOLDER, str(request.getfixturevalue("run_dir")))
    ns: dict = {}
    exec(compile(PRELUDE, "README prelude", "exec"), ns)
    exec(compile(src, f"README block {i + 1} ({_title(src)})", "exec"), ns)
