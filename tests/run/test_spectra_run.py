"""``python -m fasttrap.run --analysis spectra`` end to end: a tiny real run, kill and resume, bad input,
and the report's verdict on synthetic metrics."""

from __future__ import annotations

import numpy as np
import pytest

import fasttrap
from fasttrap.run import config
from fasttrap.common import store
from fasttrap.model import data as datamod

from test_run import all_arrays, kill_when_written, refused, run_cmd

TINY = ["--analysis", "spectra", "--set", "model.widths=[784,64,10]", "--set", "outer.seeds=2",
        "--set", "spectra.train_rows=200", "--set", "spectra.esd_rows=60", "--set", "spectra.check_every=25",
        "--set", "spectra.target_loss=0.05", "--set", "spectra.hessian_k=3", "--set", "spectra.hessian_probes=2",
        "--set", "spectra.hessian_steps=8", "--threads", "2"]


def test_spectra_end_to_end_tiny(tmp_path):
    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TINY])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fasttrap spectra:" in r.stdout and "α of the Jacobian ESD" in r.stdout
    for f in ("report.md", "spectra.json", "spectra/train_real.npz", "spectra/train_random.npz",
              "spectra/esd_real_seed0.npz", "spectra/esd_random_seed1.json", "figures/jacobian_esd.png",
              "figures/spectra_metrics.png", "figures/hessian_density.png", "figures/training.png"):
        assert (out / f).is_file(), f
    real, rnd = (store.read_npz(out / "spectra" / f"train_{k}.npz") for k in ("real", "random"))
    ds = datamod.load("mnist")
    # the pairing: the same initial weights; the real labels are the data's, the random ones are not
    np.testing.assert_array_equal(real["theta"][:, 0], rnd["theta"][:, 0])
    np.testing.assert_array_equal(real["labels"], ds.y_train[:200])
    assert (rnd["labels"] != ds.y_train[:200]).mean() > 0.8 and set(np.unique(rnd["labels"])) <= set(range(10))
    # both trained to the target loss; mid before end
    assert real["reached"].all() and rnd["reached"].all()
    assert np.all(real["train_loss"][:, 2] <= 0.05) and np.all(rnd["train_loss"][:, 2] <= 0.05)
    assert np.all(real["step"][:, 1] <= real["step"][:, 2]) and np.all(rnd["step"][:, 2] > 0)
    # the stored spectra are those of the stored weights, on the stated inputs
    mlp = fasttrap.MLP([784, 64, 10])
    z = store.read_npz(out / "spectra" / "esd_random_seed1.npz")
    X = ds.X_test[:60].astype(np.float64)
    np.testing.assert_allclose(z["jac_test_end"], fasttrap.jacobian_esd(mlp, rnd["theta"][1, 2][None].astype(np.float64), X)[0],
                               rtol=1e-10, atol=1e-12 * z["jac_test_end"][0])
    assert z["jac_train_mid"].shape == (60,)
    # the control: at init the two conditions are the same net, every Jacobian difference is 0
    res = store.read_json(out / "spectra.json")
    init = [c for c in res["comparisons"] if c["checkpoint"] == "init" and c["inputs"] != "hessian"]
    assert init and all(c["diff"]["mean"] == 0 and not c["separated"] for c in init)
    assert res["primary"]["metric"] == "alpha_no_spikes" and res["primary"]["diff"]["n"] == 2
    rep = (out / "report.md").read_text()
    for s in ("# fasttrap spectra report", "## The answer", "(primary)", "## Hessian of the training loss",
              "![Jacobian ESD](figures/jacobian_esd.png)"):
        assert s in rep
    man = store.read_json(out / "manifest.json")
    assert man["analysis"] == "spectra" and {"spectra_train_real", "spectra_esd", "report"} <= set(man["stages"])


def test_spectra_kill_and_resume_is_bit_identical(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = run_cmd(["--out", str(ref), "--no-progress", *TINY])
    assert r.returncode == 0, r.stderr[-3000:]
    kill_when_written(["--out", str(killed), "--no-progress", *TINY], killed / "spectra" / "esd_real_seed0.npz")
    assert not (killed / "report.md").exists(), "the kill did not land mid-run"
    r = run_cmd(["--resume", str(killed), "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = all_arrays(ref), all_arrays(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs after resume"
    for p in sorted((ref / "spectra").glob("*.json")):
        assert store.read_json(p) == store.read_json(killed / "spectra" / p.name), p.name


@pytest.mark.parametrize("args, words", [
    (["--analysis", "spectra", "--set", "spectra.esd_rows=3000", "--set", "spectra.train_rows=2000"],
     ["spectra.esd_rows", "spectra.train_rows"]),
    (["--analysis", "spectra", "--profile", "thesis"], ["thesis", "spectra", "quick, full"]),
    (["--analysis", "spectra", "--set", "spectra.hessian_steps=1"], ["spectra.hessian_steps"]),
])
def test_bad_spectra_settings(tmp_path, args, words):
    refused(tmp_path, args, words)


def test_spectra_train_rows_beyond_the_data_is_a_clear_error(tmp_path):
    r = run_cmd(["--out", str(tmp_path / "x"), "--no-progress", *TINY, "--set", "spectra.train_rows=70000"], timeout=120)
    assert r.returncode == 3 and "spectra.train_rows (70000) exceeds the 60000 training images" in r.stderr


def test_spectra_profiles():
    q, f = config.resolve("quick", analysis="spectra"), config.resolve("full", analysis="spectra")
    assert q["outer.seeds"] >= 5 and f["outer.seeds"] >= 5
    assert f["spectra.esd_rows"] == 10000 and q["spectra.esd_rows"] <= q["spectra.train_rows"]


def _fake_metrics(alpha_real, alpha_random):
    """Metrics files as the ESD tasks write them, with α of the test-input ESD at the end set per seed."""
    from fasttrap.run.stages.spectra import CHECKPOINTS, INPUTS

    def one(a):
        fit = {"alpha": a, "alpha_err": 0.1, "xmin": 1.0, "ks": 0.05, "n_tail": 100}
        jac = {"fit": fit, "fit_no_spikes": fit, "lambda_max": 10.0, "stable_rank": 2.0, "hard_rank": 50,
               "entropy": 0.5}
        return {"checkpoints": {ck: {**{f"jacobian_{i}": jac for i in INPUTS},
                                     "hessian": {"lambda_max": 1.0, "trace": 3.0}} for ck in CHECKPOINTS}}
    return {"real": [one(a) for a in alpha_real], "random": [one(a) for a in alpha_random]}


def test_the_verdict_follows_the_paired_interval():
    from fasttrap.run.report.spectra import answer, comparisons

    rng = np.random.default_rng(3)
    base = rng.normal(3.0, 0.8, 6)                     # seed-to-seed spread shared by the pair
    head, _ = answer(comparisons(_fake_metrics(base, base + 1.0 + rng.normal(0, 0.05, 6))))
    assert head.startswith("**Yes.**") and "6 paired seeds" in head
    head, _ = answer(comparisons(_fake_metrics(base, base + rng.normal(0, 0.3, 6))))
    assert head.startswith("**No detectable separation**")
    head, _ = answer(comparisons(_fake_metrics(base[:1], base[:1] + 1)))
    assert "fewer than 2 seeds" in head


def test_sharpness_along_the_outer_path(tmp_path):
    """Off by default; on, the traps run stores the Hessian at every n-th outer point, equal to a fresh
    Lanczos on the stored weights, and the report sets it beside the trap boundaries."""
    from test_run import TINY as TRAPS_TINY

    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TRAPS_TINY, "--set", "sharpness.every=4",
                 "--set", "sharpness.rows=500", "--set", "sharpness.k=2", "--set", "sharpness.steps=12"])
    assert r.returncode == 0, r.stderr[-3000:]
    data = fasttrap.open_run(out)
    h = data.sharpness[0]
    np.testing.assert_array_equal(h["steps"], data.outer[0]["steps"][::4])
    assert h["top"].shape == (h["steps"].size, 2) and h["nodes"].shape[:2] == (h["steps"].size, 2)
    ds = datamod.load("mnist", normalize=data.config["data.normalize"])
    mlp = fasttrap.MLP([784, 24, 10])
    th = data.outer[0]["thetas"][::4][:2].astype(np.float64)
    ref = fasttrap.hessian_eigs(mlp, th, ds.X_train[:500].astype(np.float64), ds.y_train[:500], k=2)
    np.testing.assert_allclose(h["top"][:2], ref.values, rtol=1e-9)
    rep = (out / "report.md").read_text()
    assert "## Sharpness along the outer path" in rep and (out / "figures" / "sharpness_seed0.png").is_file()
    assert config.resolve("quick")["sharpness.every"] == 0
