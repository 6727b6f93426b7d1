"""The inner stage on a Dask LocalCluster against one local process, on this machine.

    python -m pytest benchmarks/bench_dask.py -s

The quick profile's inner stage (its main descents and both reruns; no certificates, no regime-1
companion), run twice by ``python -m fasttrap.run``: once in one process with the compiled core on
all cores (``--threads N``), once as Dask tasks on a ``LocalCluster`` of N worker processes × 1
thread. Both must write the same bytes (checked before anything is reported). Reported: the
inner stages' wall seconds from each run's manifest, the executed model-steps/s, and the ratio.
With ``--benchmark-disable`` (the README's test command) a small version runs and only the
bit-for-bit agreement is checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fasttrap.common import store

pytest.importorskip("distributed")

STAGES = ("inner", "inner_seed", "inner_half")
QUICK = ["--set", "certify.enabled=false", "--set", "regime1.seeds=0"]
SMALL = QUICK + ["--set", "model.widths=[784,24,10]", "--set", "window.stop=70", "--set", "inner.epochs=0.25",
                 "--set", "inner.block=5", "--set", "stats.n_bootstrap=5", "--set", "sensitivity.n_bootstrap=5",
                 "--set", "sensitivity.seed_bootstrap=20", "--set", "outer.curve_points=6"]


def _run(out: Path, args: list[str]) -> dict:
    env = dict(os.environ, MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-m", "fasttrap.run", "--out", str(out), "--no-progress", *args],
                       capture_output=True, text=True, env=env, timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    return store.read_json(out / "manifest.json")


def _arrays(d: Path) -> dict[str, bytes]:
    out = {}
    for sub in ("inner", "inner_seed", "inner_half"):
        for p in sorted((d / sub).glob("*.npz")):
            for k, v in store.read_npz(p).items():
                out[f"{sub}/{p.name}:{k}"] = v.tobytes()
    return out


def test_dask_local_cluster_against_one_process(tmp_path, recorder, request):
    timed = not request.config.getoption("benchmark_disable", False)
    n = os.cpu_count() or 2
    args = QUICK if timed else SMALL
    one = _run(tmp_path / "one", [*args, "--threads", str(n)])
    dask = _run(tmp_path / "dask", [*args, "--set", "run.executor=dask", "--set", "cluster.kind=local",
                                    "--set", f"cluster.workers={n}", "--set", "cluster.threads=1"])
    a, b = _arrays(tmp_path / "one"), _arrays(tmp_path / "dask")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), "the Dask run wrote other bytes"
    if not timed:
        return
    for name, man, how in (("1 process", one, f"1 × {n} threads"), ("dask", dask, f"{n} workers × 1 thread")):
        st = man["stages"]
        secs = sum(st[s]["seconds"] for s in STAGES)
        steps = sum(st[s]["model_steps"] for s in STAGES)
        recorder.add("cpu_dask", _module=__name__, executor=name, layout=how, seconds=secs, model_steps=steps,
                     model_steps_s=steps / secs, blocks=sum(st[s]["n_blocks"] for s in STAGES), cpus=n)


def format_table(rows):
    base = next((r for r in rows if r["executor"] == "1 process"), None)
    out = ["| executor | layout | inner blocks | model-steps | seconds | model-steps/s | vs 1 process |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        rel = f"{base['seconds'] / r['seconds']:.2f}×" if base else ""
        out.append(f"| {r['executor']} | {r['layout']} | {r['blocks']} | {r['model_steps']:,} | {r['seconds']:.1f} | "
                   f"{r['model_steps_s']:,.0f} | {rel} |")
    return "\n".join(out) + f"\n\nThe quick profile's inner stage and its reruns, {rows[0]['cpus']} CPUs; same bytes checked."
