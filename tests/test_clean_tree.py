"""README's test command must not change the repository: its benchmark part runs every benchmark's
agreement check with timing switched off, and nothing may be written into benchmarks/results (or
anywhere else tracked). The CI version runs one suite; ``--runslow`` runs them all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


needs_git = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                               reason="not a git checkout")


def _bench(files: list[str]) -> None:
    before = _status()
    env = dict(os.environ)
    env.pop("FASTTRAP_BENCH_RESULTS", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, "--benchmark-disable"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode in (0, 5), r.stdout[-3000:] + r.stderr[-2000:]
    assert _status() == before, f"the benchmark run changed the tree:\n{_status()}"


@needs_git
def test_the_benchmark_agreement_run_writes_nothing_tracked():
    _bench(["benchmarks/bench_grad_G.py"])      # the suite that used to append its errors to a result file


@needs_git
@pytest.mark.slow
def test_the_whole_benchmark_part_writes_nothing_tracked():
    _bench(sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("bench_*.py")))
