"""``python -m fasttrap.run --analysis swap`` end to end: a tiny real study, kill and resume bit for bit,
colour data with channel swaps, and bad settings."""

from __future__ import annotations

import numpy as np
import pytest

from fasttrap.run import config
from fasttrap.common import store
from fasttrap.model.cifar import write_cifar

from test_run import all_arrays, kill_when_written, run_cmd

TINY = ["--analysis", "swap", "--set", "model.widths=[784,32,10]", "--set", "swap.seeds=3",
        "--set", "swap.steps=120", "--set", "swap.eval_every=20", "--set", "swap.eval_rows=400",
        "--set", "swap.pairs=[1,4]", "--set", "swap.target_acc=[0.6,0.8]", "--set", "swap.target_loss=[0.8]",
        "--set", "swap.n_bootstrap=200", "--set", "swap.measure_every=5", "--threads", "2"]


def test_swap_end_to_end_tiny(tmp_path):
    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TINY])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fasttrap swap (train acc ≥ 0.8, 3 seeds):" in r.stdout
    res = store.read_json(out / "swap.json")
    labels = list(res["protocols"])
    assert labels[0] == "baseline" and len(labels) == 1 + 5 * 2        # no channel swaps on one-channel MNIST
    assert not any(lab.startswith("channels") for lab in labels)
    for lab in labels[1:]:
        p = res["protocols"][lab]
        assert set(p["speedup"]) == {"estimate", "ci"} and p["verdict"] in ("faster", "slower", "no difference",
                                                                             "not measurable")
        assert 0 <= p["acceptance"] <= 1 and len(p["steps_to_target"]["train acc ≥ 0.8"]) == 3
        assert p["delta_L"]["n"] > 0                                    # ΔL measured every 5 steps
    # the negative control: paired swaps are a symmetry, no difference from the baseline
    assert res["protocols"]["paired@1"]["verdict"] == "no difference"
    base, paired = (store.read_npz(out / "swap" / f"cond_{i:03d}.npz") for i in (0, labels.index("paired@1")))
    np.testing.assert_allclose(paired["train_loss"], base["train_loss"], rtol=1e-4)
    assert np.all(np.abs(paired["move_delta_0"][:, 2]) < 1e-5)          # ΔL of a symmetry is rounding
    for f in ("report.md", "figures/swap_curves.png", "figures/swap_speedup.png", "figures/swap_delta_L.png"):
        assert (out / f).is_file(), f
    rep = (out / "report.md").read_text()
    assert "## Verdict" in rep and rep.rstrip().splitlines()[-1].startswith("- kick@1 x4:")


def test_swap_kill_and_resume_is_bit_identical(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    args = [a if a != "swap.steps=120" else "swap.steps=200" for a in TINY]
    r = run_cmd(["--out", str(ref), "--no-progress", *args])
    assert r.returncode == 0, r.stderr[-3000:]
    kill_when_written(["--out", str(killed), "--no-progress", *args], killed / "swap" / "cond_002.npz")
    assert not (killed / "report.md").exists(), "the kill did not land mid-run"
    r = run_cmd(["--resume", str(killed), "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = all_arrays(ref), all_arrays(killed)
    assert a.keys() == b.keys() and any("cond_010" in k for k in a)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs after resume"
    assert store.read_json(ref / "swap.json") == store.read_json(killed / "swap.json")


def test_swap_study_on_colour_data_with_channel_swaps(tmp_path, rng):
    """CIFAR-format files (small, synthetic): the study includes channel swaps and runs them."""
    n = 400
    y = rng.integers(0, 10, n)
    X = (rng.integers(0, 256, (n, 3072)) * 0.3 + (y[:, None] * 17 % 256) * 0.7).astype(np.uint8)  # learnable
    d = write_cifar(tmp_path / "cifar", X, y, X[:100], y[:100])
    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", "--analysis", "swap", "--set", f"data.name={d}",
                 "--set", "model.widths=[3072,16,10]", "--set", "swap.protocols=baseline,channels,pixels",
                 "--set", "swap.seeds=2", "--set", "swap.steps=40", "--set", "swap.eval_every=10",
                 "--set", "swap.pairs=[1]", "--set", "swap.target_acc=[0.3]", "--set", "swap.target_loss=[2.0]",
                 "--set", "outer.batch_size=32", "--set", "swap.n_bootstrap=100"])
    assert r.returncode == 0, r.stderr[-3000:]
    res = store.read_json(out / "swap.json")
    assert list(res["protocols"]) == ["baseline", "channels[all img]", "pixels[all img]"]
    assert res["protocols"]["channels[all img]"]["proposed"] == 2 * 40
    assert store.read_json(out / "manifest.json")["data"]["name"] == "cifar-10"


@pytest.mark.parametrize("args, code, words", [
    (["--set", "swap.layer=3"], 2, ["layer 3 does not exist", "1..2"]),
    (["--set", "swap.protocols=baseline,channels"], 2, ["at least 2 channels", "has 1"]),
    (["--set", "swap.temperature=-0.5"], 2, ["swap.temperature"]),
    (["--set", "swap.protocols=baseline,swirl"], 2, ["swirl", "valid"]),
    (["--set", "swap.pairs=[0]"], 2, ["swap.pairs"]),
    (["--set", "swap.apply=twist"], 2, ["swap.apply"]),
])
def test_bad_swap_settings(tmp_path, args, code, words):
    r = run_cmd(["--out", str(tmp_path / "x"), "--no-progress", *TINY, *args], timeout=120)
    assert r.returncode == code, (r.returncode, r.stderr[-800:])
    for w in words:
        assert w in r.stderr, (w, r.stderr[-800:])


def test_swap_profiles():
    q, f = config.resolve("quick", analysis="swap"), config.resolve("full", analysis="swap")
    assert q["swap.seeds"] >= 10 and f["swap.seeds"] >= 10
    assert len(f["swap.pairs"]) >= 3 and len(f["swap.every"]) >= 2


def test_traps_analysis_with_paired_swaps_sees_no_motion(tmp_path):
    """swap.apply puts a move into the trap analysis's outer SGD; the recorded path is aligned, so a
    paired swap (a symmetry) leaves it where the plain path is, and rows swaps move it."""
    from test_run import TINY as TRAPS_TINY

    runs = {}
    for name, extra in (("plain", []), ("paired", ["--set", "swap.apply=paired", "--set", "swap.pairs=[3]"]),
                        ("rows", ["--set", "swap.apply=rows"])):
        out = tmp_path / name
        r = run_cmd(["--out", str(out), "--no-progress", *TRAPS_TINY, "--set", "certify.enabled=false",
                     "--set", "sensitivity.enabled=false", *extra])
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = store.read_npz(out / "outer" / "seed_0.npz")
    np.testing.assert_allclose(runs["paired"]["thetas"], runs["plain"]["thetas"], rtol=1e-4, atol=1e-5)
    assert int(runs["paired"]["move_proposed"][0]) == 30 and "move_proposed" not in runs["plain"]
    assert np.abs(runs["rows"]["thetas"][-1] - runs["plain"]["thetas"][-1]).max() > 1e-2


def test_a_protocol_that_blows_training_up_is_a_result_not_a_crash(tmp_path):
    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TINY, "--set", "swap.protocols=baseline,kick",
                 "--set", "swap.pairs=[32]", "--set", "outer.lr=0.3", "--set", "swap.target_acc=[0.6]"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "diverged at step" in r.stderr
    res = store.read_json(out / "swap.json")["protocols"]["kick@1 x32"]
    assert res["diverged"]["step"] > 0 and res["verdict"] == "slower"
    assert "diverged at step" in (out / "report.md").read_text()
