"""The recorded runs under docs/recorded: each reads back with fasttrap.open_run, and where it was made
with the ledge rule, the rule rerun on its stored series (ledges.npz) reproduces its stored traps
exactly — the same function the main job called (the endpoints themselves are not committed: a
recorded run keeps the series the rule read, not every θ)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fasttrap
from fasttrap.analysis.ledges import series_from_arrays, traps_from_series
from fasttrap.common import store
from fasttrap.run.stages.traps import ledge_settings

RECORDED = Path(__file__).resolve().parents[2] / "docs" / "recorded"
RUNS = sorted(p.parent for p in RECORDED.rglob("manifest.json"))


@pytest.mark.parametrize("d", RUNS, ids=[str(p.relative_to(RECORDED)) for p in RUNS])
def test_recorded_run_opens(d):
    r = fasttrap.open_run(d)
    assert r.config and r.manifest["stages"]


LEDGE_RUNS = [d for d in RUNS if (d / "ledges.npz").exists()]


@pytest.mark.parametrize("d", LEDGE_RUNS, ids=[str(p.relative_to(RECORDED)) for p in LEDGE_RUNS])
def test_recorded_ledges_reproduce_the_stored_traps(d):
    r = fasttrap.open_run(d)
    tz = store.read_npz(d / "traps.npz")
    lengths = []
    with np.load(d / "ledges.npz") as z:
        for s in r.seeds:
            if f"s{s}_steps" not in z:
                continue
            again = traps_from_series(series_from_arrays(z, f"s{s}_"), **ledge_settings(r.config))
            ps = r.ledges["per_seed"][str(s)]
            assert again.boundaries.tolist() == ps["boundaries"]
            assert again.separable == ps["separable"] and again.budget == ps["budget"]
            np.testing.assert_array_equal(tz[f"boundaries_{s}"], again.boundaries)
            lengths.append(again.segments.lengths)
    np.testing.assert_array_equal(np.concatenate(lengths), tz["lengths"])
