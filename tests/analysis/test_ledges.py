"""The ledge rule on synthetic endpoint series with a known answer.

Each series plants traps: endpoints of a trap scatter about its centre (and drift slowly along the
outer path), reruns from the same start point scatter the same way with independent noise, and a
trap change moves the centre by a few noise units and the loss level by tens of loss-noise units —
the magnitudes the reference budget shows (issue 25: jumps 40–100σ in the loss, 2.3–4.0 against a
rerun q90 of 0.65 in the weights). The rule must recover planted boundaries exactly across seeds of
the noise, refuse a smooth drift, find returns, and tell from checkpoints when changes appear.
"""

from __future__ import annotations

import numpy as np
import pytest

import fasttrap
from fasttrap.analysis.ledges import budget_table, ledges, separate


def planted(seed: int, boundaries=(14, 31, 47, 70, 88), T: int = 100, P: int = 60, jump: float = 5.0,
            drift: float = 0.1, loss_jump=(0.16, 0.38), sigma_l: float = 0.004, labels=None, every: int = 4):
    """A window of T endpoints with traps changing at ``boundaries`` (indices where a new trap begins).

    Returns (steps, theta [T, P], loss [T], rerun index, rerun theta, rerun loss, trap label [T]).
    The per-coordinate noise s makes a rerun difference ‖ε − ε'‖ ≈ s√(2P) ≈ 1 (one noise unit).
    """
    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(2 * P)
    b = np.array([0, *boundaries, T], dtype=np.int64)
    lab = np.repeat(np.arange(len(b) - 1), np.diff(b)) if labels is None else np.asarray(labels)
    n_tr = lab.max() + 1
    centres = rng.normal(size=(n_tr, P))
    centres *= jump / np.sqrt(2) / np.linalg.norm(centres, axis=1, keepdims=True)   # pairwise ≈ jump
    levels = 1.0 - np.cumsum(rng.uniform(*loss_jump, size=n_tr))
    walk = np.cumsum(rng.normal(scale=drift * s, size=(T, P)), axis=0)
    base = centres[lab] + walk
    theta = base + rng.normal(scale=s, size=(T, P))
    loss = levels[lab] + rng.normal(scale=sigma_l, size=T)
    idx = np.arange(0, T, every)
    r_theta = base[idx] + rng.normal(scale=s, size=(idx.size, P))
    r_loss = levels[lab[idx]] + rng.normal(scale=sigma_l, size=idx.size)
    steps = np.arange(51, 51 + T)
    return steps, theta, loss, idx, r_theta, r_loss, lab


@pytest.mark.parametrize("seed", range(12))
def test_planted_boundaries_are_recovered_exactly(seed):
    bnd = (14, 31, 47, 70, 88)
    steps, th, loss, idx, rth, rl, _ = planted(seed, bnd)
    r = fasttrap.traps_from_endpoints(steps, th, loss, rerun_steps=steps[idx], rerun_theta_end=rth, rerun_loss_end=rl)
    assert r.separable, r.why
    assert r.boundaries.tolist() == list(bnd)
    assert r.boundary_steps.tolist() == [int(steps[i]) for i in bnd]
    assert r.complete_lengths().tolist() == [17, 16, 23, 18]
    assert r.segments.censored.tolist() == [True, False, False, False, False, True]
    assert r.n_returns == 0 and r.n_distinct == 6
    assert not any(a["disputed"] for a in r.agreement)


def test_a_window_without_changes_is_one_trap():
    steps, th, loss, idx, rth, rl, _ = planted(0, ())
    r = fasttrap.traps_from_endpoints(steps, th, loss, rerun_steps=steps[idx], rerun_theta_end=rth, rerun_loss_end=rl)
    assert r.separable and r.boundaries.size == 0
    assert r.complete_lengths().size == 0 and "no trap change" in r.verdict


def _drift(seed: int, per_step: float, T: int = 100, P: int = 60):
    """Endpoints moving steadily along the path: every consecutive step ≈ per_step noise units, in the
    weights and in the loss alike; reruns scatter about the same moving point."""
    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(2 * P)
    u = rng.normal(size=P)
    u /= np.linalg.norm(u)
    t = np.arange(T)
    base = np.outer(t * per_step, u) + 0.0
    theta = base + rng.normal(scale=s, size=(T, P))
    sig_l = 0.004
    unit_l = 1.645 * np.sqrt(2) * sig_l
    loss = 2.0 - t * per_step * unit_l + rng.normal(scale=sig_l, size=T)
    idx = np.arange(0, T, 4)
    rth = base[idx] + rng.normal(scale=s, size=(idx.size, P))
    rl = 2.0 - idx * per_step * unit_l + rng.normal(scale=sig_l, size=idx.size)
    return np.arange(T) + 51, theta, loss, idx, rth, rl


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("per_step", [0.5, 1.5, 2.5, 3.5, 12.0])
def test_a_smooth_drift_is_refused(seed, per_step):
    steps, th, loss, idx, rth, rl = _drift(seed, per_step)
    r = fasttrap.traps_from_endpoints(steps, th, loss, rerun_steps=steps[idx], rerun_theta_end=rth, rerun_loss_end=rl)
    assert not r.separable
    assert r.boundaries.size == 0 and r.complete_lengths().size == 0
    assert any(("drift" in w) or ("every step moves" in w) for w in r.why), r.why


def test_a_return_is_found():
    lab = np.repeat([0, 1, 0, 2], [25, 25, 25, 25])
    steps, th, loss, idx, rth, rl, _ = planted(3, (25, 50, 75), labels=lab, drift=0.0)
    r = fasttrap.traps_from_endpoints(steps, th, loss, rerun_steps=steps[idx], rerun_theta_end=rth, rerun_loss_end=rl)
    assert r.separable, r.why
    assert r.boundaries.tolist() == [25, 50, 75]
    assert r.visit_trap.tolist() == [0, 1, 0, 2]
    assert r.n_returns == 1 and r.n_distinct == 3


def test_disagreeing_signals_refuse():
    """Distance jumps with no loss step at all: the primary signals disagree at every change."""
    steps, th, loss, idx, rth, rl, _ = planted(1, (30, 60))
    rng = np.random.default_rng(0)
    flat = 1.0 + rng.normal(scale=0.004, size=loss.size)
    r = fasttrap.traps_from_endpoints(steps, th, flat, rerun_steps=steps[idx], rerun_theta_end=rth,
                                      rerun_loss_end=1.0 + rng.normal(scale=0.004, size=idx.size))
    assert not r.separable
    assert any("disagree" in w for w in r.why)
    assert all(a["disputed"] for a in r.agreement)


def test_budget_table_on_changes_that_appear_late():
    """At ¼ of the budget the endpoints have not yet split (every point sits on one ledge); from ½ on
    they show the final changes."""
    bnd = (20, 45, 70)
    steps, th, loss, idx, rth, rl, lab = planted(5, bnd)
    rng = np.random.default_rng(9)
    P = th.shape[1]
    s = 1.0 / np.sqrt(2 * P)
    early_th = rng.normal(scale=s, size=th.shape)                 # one trap: noise about one point
    early_rth = rng.normal(scale=s, size=rth.shape)
    early_l = 2.0 + rng.normal(scale=0.004, size=loss.size)
    early_rl = 2.0 + rng.normal(scale=0.004, size=idx.size)
    half_th = th + rng.normal(scale=s, size=th.shape) * 0.3
    cks = [{"fraction": 0.25, "theta": early_th, "loss": early_l, "rerun_theta": early_rth, "rerun_loss": early_rl},
           {"fraction": 0.5, "theta": half_th, "loss": loss + 0.01, "rerun_theta": rth, "rerun_loss": rl + 0.01}]
    r = fasttrap.traps_from_endpoints(steps, th, loss, rerun_steps=steps[idx], rerun_theta_end=rth, rerun_loss_end=rl,
                                      checkpoints=cks)
    assert r.separable
    bt = r.budget
    assert bt["fractions"] == [0.25, 0.5]
    assert [row["present"] for row in bt["rows"]] == [{"0.25": False, "0.5": True}] * 3
    assert bt["per_fraction"]["0.25"]["changes"] == 0 and bt["per_fraction"]["0.5"]["missing"] == []
    assert bt["stable_from"] == 0.5


def test_separate_picks_the_lowest_gap():
    z = np.r_[np.linspace(0.1, 1.4, 40), 4.0, 4.5, 40.0, 44.0]
    ok, gap, ch, why = separate(z)
    assert ok and gap == [1.4, 4.0] and ch.sum() == 4


def test_bad_inputs_are_named():
    steps, th, loss, idx, rth, rl, _ = planted(0)
    kw = dict(rerun_steps=steps[idx], rerun_theta_end=rth, rerun_loss_end=rl)
    with pytest.raises(ValueError, match="theta_end"):
        fasttrap.traps_from_endpoints(steps, th[:-1], loss, **kw)
    with pytest.raises(ValueError, match="loss_end"):
        fasttrap.traps_from_endpoints(steps, th, loss[:-1], **kw)
    with pytest.raises(ValueError, match="rerun_steps"):
        fasttrap.traps_from_endpoints(steps, th, loss, **(kw | {"rerun_steps": steps[idx] + 1000}))
    with pytest.raises(ValueError, match="rerun_theta_end"):
        fasttrap.traps_from_endpoints(steps, th, loss, **(kw | {"rerun_theta_end": rth[:, :3]}))
    with pytest.raises(TypeError, match="unknown setting"):
        fasttrap.traps_from_endpoints(steps, th, loss, cut=3, **kw)
    with pytest.raises(ValueError, match="steps"):
        fasttrap.traps_from_endpoints(steps[::-1], th, loss, **kw)
    with pytest.raises(ValueError, match="noise"):
        ledges(steps, np.ones(99), loss, {"distance": [np.nan]})


@pytest.mark.parametrize("seed", range(4))
def test_the_planted_trap_fixture(seed):
    """The segmentation tests' planted-trap fixture (tests/analysis/test_traps.py), with reruns drawn
    from the same trap centres: the ledge rule recovers every planted boundary."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_tt", Path(__file__).with_name("test_traps.py"))
    tt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tt)
    rng = np.random.default_rng(seed)
    theta, ends, L, G, status, truth = tt.planted(rng, noise=0.05)
    n, P = ends.shape
    idx = np.arange(0, n, 4)
    # the rerun of a start point lands in its trap with independent jitter (the fixture's own noise model)
    trap_of = np.searchsorted(truth, np.arange(n), side="right")
    centre = np.array([ends[trap_of == k].mean(0) for k in range(trap_of.max() + 1)])
    r_ends = centre[trap_of[idx]] + 0.05 * rng.standard_normal((idx.size, P)) / np.sqrt(P)
    r_L = L[idx] * np.exp(0.05 * 1e-2 * rng.standard_normal(idx.size))
    steps = np.arange(n)
    r = fasttrap.traps_from_endpoints(steps, ends, L, rerun_steps=steps[idx], rerun_theta_end=r_ends, rerun_loss_end=r_L,
                                      G_end=G, rerun_G_end=G[idx])
    assert r.separable, r.why
    np.testing.assert_array_equal(r.boundaries, truth)
