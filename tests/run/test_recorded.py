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


CERT_RUNS = [d for d in RUNS if (d / "certify").is_dir()]


@pytest.mark.parametrize("d", CERT_RUNS, ids=[str(p.relative_to(RECORDED)) for p in CERT_RUNS])
def test_recorded_kinds_are_those_of_the_error_bound_rule(d):
    """Re-certification from the stored arrays: the sign rule changed (eps·λ_max → error bound), but
    it only decides between the critical kinds. Where every certified endpoint has ‖∇L‖² ≥ grad_tol,
    the kinds under the new rule are the stored ones, whatever rule made the run."""
    from fasttrap.common.kinds import classify

    r = fasttrap.open_run(d)
    cfg = r.config
    for f in sorted((d / "certify").glob("seed_*.npz")):
        c = store.read_npz(f)
        assert np.all(c["grad_sq"] >= cfg["certify.grad_tol"]), f       # no critical point recorded
        big_index = np.full(c["grad_sq"].size, 10**6)                   # any index: it must not matter
        again = classify(c["grad_sq"], big_index, c["negative_fraction"], c["gf_residual"], cfg["certify.grad_tol"],
                         cfg["certify.gf_cut"], undecided=c.get("undecided", np.zeros(c["grad_sq"].size)))
        np.testing.assert_array_equal(again, c["kind"])
