"""Shared machinery of the pytest-benchmark suites.

Every suite checks agreement with the reference before timing anything, and prints ratios
measured in the same run (these machines are noisy): the yardstick SGEMM rate is measured by the
same session, right beside the timings it is compared with.
"""

from __future__ import annotations

import json
import platform
import time
from collections import defaultdict
from pathlib import Path

import pytest

import os

RESULTS = Path(os.environ.get("FASTTRAP_BENCH_RESULTS") or Path(__file__).parent / "results")
# Rows are recorded only when something was timed: with --benchmark-disable (the test command's
# agreement run) nothing is written, so a test run never changes the source tree.
_WRITE = {"on": True}


def pytest_configure(config: pytest.Config) -> None:
    try:
        _WRITE["on"] = not config.getoption("benchmark_disable")
    except ValueError:
        pass


def sgemm_rate(threads: int | None = None, n: int = 2048, reps: int = 3) -> float:
    """Best of this core's OpenBLAS and torch.mm on an n×n×n float32 product, in GFLOP/s."""
    import torch

    import fasttrap
    from fasttrap.ops import _loader

    threads = threads or fasttrap.get_num_threads()
    best = _loader.core.gemm_rate(n, False, reps, threads) if _loader.core is not None else 0.0
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


class Recorder:
    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = defaultdict(list)

    def add(self, suite: str, **row) -> None:
        self.rows[suite].append(row)
        if not _WRITE["on"]:
            return
        # Written at once as well, so that a run cut short keeps what it measured.
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / f"{suite}.jsonl", "a") as fh:
            fh.write(json.dumps({k: v for k, v in row.items() if k != "_module"}, default=float) + "\n")


_recorder = Recorder()


@pytest.fixture(scope="session")
def recorder() -> Recorder:
    return _recorder


def machine() -> dict[str, object]:
    import fasttrap

    info = fasttrap.backend_info()
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "threads": info["threads"], "blas": info["blas"], "date": time.strftime("%Y-%m-%d")}


def pytest_terminal_summary(terminalreporter):
    if not _recorder.rows or not _WRITE["on"]:
        return
    RESULTS.mkdir(exist_ok=True)
    for suite, rows in _recorder.rows.items():
        from importlib import import_module

        fmt = getattr(import_module(rows[0]["_module"]), "format_table")
        table = fmt(rows)
        terminalreporter.write_line("")
        terminalreporter.write_line(f"=== {suite} ===")
        for line in table.splitlines():
            terminalreporter.write_line(line)
        out = {"machine": machine(), "rows": [{k: v for k, v in r.items() if k != "_module"} for r in rows]}
        (RESULTS / f"{suite}.json").write_text(json.dumps(out, indent=1, default=float))
        (RESULTS / f"{suite}.md").write_text(table + "\n")
