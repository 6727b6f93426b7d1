"""``python -m fasttrap.run`` end to end: a tiny real run, a kill and resume, and bad input."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fasttrap.run import cli, config
from fasttrap.common import store

# A tiny but real configuration: the embedded MNIST, a small MLP, 20 outer points.
TINY = ["--set", "model.widths=[784,24,10]", "--set", "outer.steps=30", "--set", "window.start=1",
        "--set", "window.stop=20", "--set", "window.every=1", "--set", "regime1.seeds=0",
        "--set", "sensitivity.seed_bootstrap=50", "--set", "sensitivity.n_bootstrap=10",
        "--set", "inner.epochs=0.25", "--set", "inner.block=5",
        "--set", "stats.n_bootstrap=10", "--set", "outer.curve_points=6", "--set", "inner.eval_rows=5000",
        "--set", "certify.every=5", "--set", "certify.rows=2000", "--set", "certify.lanczos_steps=20",
        "--set", "certify.minres_iters=20"]
# For the kill test: enough inner work that a kill lands mid-stage.
KILLABLE = ["--set", "model.widths=[784,48,10]", "--set", "outer.steps=40", "--set", "window.start=1",
            "--set", "window.stop=32", "--set", "window.every=1", "--set", "regime1.seeds=1",
            "--set", "regime1.start=1", "--set", "regime1.stop=8", "--set", "sensitivity.seed_bootstrap=20",
            "--set", "sensitivity.n_bootstrap=5", "--set", "inner.epochs=1", "--set", "inner.block=4",
            "--set", "stats.n_bootstrap=10", "--set", "outer.curve_points=6", "--set", "inner.eval_rows=3000",
            "--set", "certify.every=8", "--set", "certify.rows=1000", "--set", "certify.lanczos_steps=10",
            "--set", "certify.minres_iters=10", "--threads", "2"]


def run_cmd(args, timeout=600, **kw):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "fasttrap.run", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def kill_when_written(args, path: Path, delay: float = 0.0) -> None:
    """Start ``python -m fasttrap.run args``; SIGKILL it ``delay`` s after ``path`` appears."""
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.Popen([sys.executable, "-m", "fasttrap.run", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        t0 = time.time()
        while not path.exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() - t0 < 300
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def all_arrays(d: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted(d.rglob("*.npz")):
        for k, v in store.read_npz(p).items():
            out[f"{p.relative_to(d)}:{k}"] = v
    return out


def test_end_to_end_tiny(tmp_path):
    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TINY])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[inner]" in r.stdout and "epochs = 0.25" in r.stdout        # the resolved config is printed …
    saved = (out / "config.toml").read_text()
    assert "epochs = 0.25" in saved                                     # … and saved
    assert "report:" in r.stdout and "traps:" in r.stdout               # the summary
    for f in ("manifest.json", "report.md", "traps.json", "stats.json", "outer/seed_0.npz", "inner/block_0003.npz",
              "indicators/seed_0.npz", "figures/indicators_seed0.png", "figures/indicators_seed0.pdf",
              "figures/indicators_seed0.npz", "figures/trapping_times.png", "figures/training_curves.png",
              "figures/G_start_end_seed0.png"):
        assert (out / f).is_file(), f
    man = store.read_json(out / "manifest.json")
    assert set(man["stages"]) >= {"outer", "inner", "indicators", "traps", "stats", "report"}
    assert man["versions"]["fasttrap"] and "cpus" in man["hardware"] and man["seeds"] == [0]
    rep = (out / "report.md").read_text()
    for section in ("## Training", "## Inner runs", "## What the endpoints are", "## Traps", "## Power law",
                    "## Settings", "Regimes"):
        assert section in rep
    inner = store.read_npz(out / "inner" / "block_0000.npz")
    assert inner["theta"].shape == (5, 784 * 24 + 24 + 24 * 10 + 10)
    assert set(inner["status"]) <= {"max_steps", "converged", "diverged", "nonfinite"}

    # The contents add up: every outer point of the window lies in exactly one segment (complete,
    # censored or flagged), and the statistics are those of the stored lengths.
    tz, tj, fits = store.read_npz(out / "traps.npz"), store.read_json(out / "traps.json"), store.read_json(out / "stats.json")
    assert int(tz["lengths"].sum()) == 20 and np.all(tz["lengths"] >= 1)
    assert tz["censored"][0] and tz["censored"][-1]                  # the window's ends are incomplete
    complete = tz["lengths"][~tz["censored"] & ~tz["flagged"]]
    summ = tj["summary"]["all"]
    assert summ["n"] == complete.size
    if complete.size:
        assert summ["mean"] == pytest.approx(complete.mean()) and summ["max"] == complete.max()
    assert summ["n_censored"] == int((tz["censored"] & ~tz["flagged"]).sum())
    assert summ["n"] + summ["n_censored"] + summ["n_flagged"] == tz["lengths"].size
    if "skipped" in fits["all"]:
        why = fits["all"]["skipped"]
        assert why.startswith(f"{complete.size} complete trapping times") or "fit failed" in why, why
    else:
        assert fits["all"]["n"] == complete.size
    assert tj["traps_per_seed"]["0"] == tz["lengths"].size

    # Certificates: every 5th endpoint, each with a kind; every trap says what it is made of.
    cert = store.read_npz(out / "certify" / "seed_0.npz")
    np.testing.assert_array_equal(cert["point"], np.arange(0, 20, 5))
    assert set(cert["kind"]) <= {"minimum", "saddle", "gradient_flat", "not_converged"}
    assert np.all((cert["kind"] == "minimum") | (cert["kind"] == "saddle") | (cert["grad_sq"] >= 1e-10))
    assert tz["segment_kind"].size == tz["lengths"].size
    assert sum(tj["segments_by_certificate"].values()) == tz["lengths"].size
    assert (out / "figures" / "certificates_seed0.png").is_file()

    # Every run's λ_max at its start point, and the stability flag of its fixed lr.
    lam0 = store.read_npz(out / "inner" / "block_0000.npz")["lambda_max"]
    assert lam0.shape == (5,) and np.all(lam0 > 0)
    assert "lr·λ_max² > 2" in rep

    # Trap identity and sensitivity: the ledge rule measured its noise on the reruns (every 4th point),
    # its verdict is stored with its evidence, and the table holds the rule under every change.
    lj, sen = store.read_json(out / "ledges.json"), store.read_json(out / "sensitivity.json")
    assert not (out / "identity.json").exists() and tj["rule_used"] == "ledge"
    ps = lj["per_seed"]["0"]
    assert ps["n_reruns"] == 5 and ps["signals"]["distance"]["noise"] > 0 and ps["signals"]["loss"]["noise"] > 0
    assert tj["separable"] == lj["separable"] == ps["separable"]
    np.testing.assert_array_equal(tz["boundaries_0"], ps["boundaries"])
    assert ps["budget"]["fractions"] == pytest.approx([0.25, 0.5, 0.75], abs=0.01)   # the steps they reached
    names = [r["name"] for r in sen["rows"]]
    assert names[:3] == ["ledge rule, threshold 3 noise units", "ledge rule, threshold 1.5 noise units",
                         "ledge rule, threshold 6 noise units"]
    assert len(names) == 6 and all(n.startswith("budget 0.") for n in names[3:])
    assert sen["rows"][0]["n"] == summ["n"]                       # row 1 is what the report states
    for section in ("## Trap identity (ledge rule)", "### Budget stability", "## Sensitivity"):
        assert section in rep
    assert (out / "figures" / "ledges_seed0.png").is_file()
    # the stored series reproduce the stored traps through the same rule
    from fasttrap.analysis.ledges import series_from_arrays, traps_from_series
    from fasttrap.run.stages.traps import ledge_settings

    with np.load(out / "ledges.npz") as z:
        again = traps_from_series(series_from_arrays(z, "s0_"), **ledge_settings(store_cfg(out)))
    np.testing.assert_array_equal(again.segments.lengths, tz["lengths"])
    assert again.separable == ps["separable"]
    # and so does traps_from_endpoints on the run's own endpoints
    rd0 = __import__("fasttrap").open_run(out)
    from fasttrap.run.stages.traps import seed_endpoints

    direct = __import__("fasttrap").traps_from_endpoints(**seed_endpoints(rd0.run(), 0), **ledge_settings(rd0.config))
    np.testing.assert_array_equal(direct.segments.lengths, tz["lengths"])
    assert direct.budget == ps["budget"]

    # The public readers give back the same numbers.
    import fasttrap

    rd = fasttrap.open_run(out)
    assert rd.seeds == [0] and rd.config["inner.epochs"] == 0.25
    np.testing.assert_array_equal(rd.traps["lengths"], tz["lengths"])
    assert rd.inner["theta"].shape[0] == 20 and rd.start_points.shape == rd.inner["theta"].shape
    np.testing.assert_array_equal(rd.indicators[0].steps, np.arange(1, 21))
    assert rd.stats == fits and rd.traps["summary"] == tj["summary"]
    assert rd.identity is None and rd.sensitivity == sen and rd.regime1 is None
    with pytest.raises(fasttrap.run.rundir.RunError, match="not a fasttrap run directory"):
        fasttrap.open_run(tmp_path)


def store_cfg(out: Path) -> dict:
    from fasttrap.run import config

    return config.from_saved(out / "config.toml")


LEGACY = ["--set", "traps.rule=cluster", "--set", "sensitivity.every=1", "--set", "sensitivity.half=true",
          "--set", "inner.checkpoints=[]"]


def test_reruns_every_kth_point_are_real_descents(tmp_path):
    """The batch-seed reruns start from every sensitivity.every-th point of a window and equal fresh
    descents with seed + 1 from those points; the main run's checkpoints equal shorter descents."""
    import fasttrap
    from fasttrap.run import rundir as rundir_mod
    from fasttrap.run.stages.data import mlp_of

    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TINY, "--set", "window.stop=10", "--set", "certify.enabled=false",
                 "--set", "outer.seeds=2", "--set", "sensitivity.seeds=1", "--set", "sensitivity.every=3"])
    assert r.returncode == 0, r.stderr[-3000:]
    rd = fasttrap.open_run(out)
    cfg, run = rd.config, rd.run()
    pts = rundir_mod.rerun_points(run)
    np.testing.assert_array_equal(pts, [0, 3, 6, 9])            # seed 0's window only, every 3rd point
    rer = rundir_mod.inner_results(run, "seed")
    np.testing.assert_array_equal(rer["index"], pts)
    main = rundir_mod.inner_results(run)
    mlp = mlp_of(cfg)
    ds = fasttrap.model.data.load("mnist", normalize=cfg["data.normalize"])
    spe = -(-len(ds.y_train) // cfg["inner.batch_size"])
    n = int(round(cfg["inner.epochs"] * spe))
    th0 = rd.start_points[pts].astype(np.float32)
    fresh = fasttrap.inner_descent(mlp, th0, ds, steps=n, solver=fasttrap.SGD(lr=main["lr"][pts],
                                   batches=cfg["inner.batches"]), seed=1, evaluate=False, progress=False,
                                   G_tol=cfg["inner.G_tol"], growth=cfg["inner.growth"])
    np.testing.assert_array_equal(fresh.theta, rer["theta"])
    assert not np.array_equal(rer["theta"], main["theta"][pts])
    # checkpoints of the main run: the loss at ¼ of the budget is that of a descent of ¼ the steps
    ck = rundir_mod.checkpoint_series(run)
    assert ck["loss"].shape == (3, 20) and ck["consecutive"].shape == (3, 19) and ck["rerun_loss"].shape == (3, 4)
    th5 = rd.start_points[:5].astype(np.float32)
    q = fasttrap.inner_descent(mlp, th5, ds, steps=int(ck["steps"][0]), solver=fasttrap.SGD(lr=main["lr"][:5],
                               batches=cfg["inner.batches"]), seed=0, progress=False,
                               eval_rows=cfg["inner.eval_rows"], G_tol=cfg["inner.G_tol"],
                               growth=cfg["inner.growth"])
    np.testing.assert_allclose(ck["loss"][0, :5], q.train_loss, rtol=1e-6)
    np.testing.assert_allclose(ck["consecutive"][0, :4], np.linalg.norm(np.diff(q.theta.astype(np.float64), axis=0),
                                                                         axis=1), rtol=1e-6)
    # the reruns' checkpoint distances are to the main run's checkpoints at the same points
    assert np.all(ck["rerun_distance"] > 0)
    # the sensitivity stage costs the reruns only: 4 of 20 points
    man = store.read_json(out / "manifest.json")
    assert man["stages"]["inner_seed"]["models"] == 4 and "inner_half" not in man["stages"]


def test_sensitivity_rows_come_from_real_reruns(tmp_path):
    """The reruns are real descents: the half-budget rerun equals a fresh descent of half the steps
    with the same batch order, the batch-seed rerun a fresh descent with seed + 1; both differ
    from the main run, and the table's rows are the statistics of their own endpoints."""
    import fasttrap
    from fasttrap.analysis import sensitivity
    from fasttrap.run import rundir as rundir_mod
    from fasttrap.run.stages import traps as stages
    from fasttrap.run.stages.data import mlp_of

    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TINY, "--set", "window.stop=10", "--set", "certify.enabled=false",
                 "--set", "outer.seeds=2", "--set", "sensitivity.seeds=1", *LEGACY])
    assert r.returncode == 0, r.stderr[-3000:]
    rd = fasttrap.open_run(out)
    cfg = rd.config
    main, half, other = (store.read_npz(out / d / "block_0000.npz") for d in ("inner", "inner_half", "inner_seed"))
    mlp = mlp_of(cfg)
    ds = fasttrap.model.data.load("mnist", normalize=cfg["data.normalize"])
    th0 = rd.start_points[:5].astype(np.float32)
    spe = -(-len(ds.y_train) // cfg["inner.batch_size"])
    for z, steps, seed in ((half, int(round(cfg["inner.epochs"] / 2 * spe)), 0),
                           (other, int(round(cfg["inner.epochs"] * spe)), 1)):
        fresh = fasttrap.inner_descent(mlp, th0, ds, steps=steps, solver=fasttrap.SGD(lr=main["lr"],
                                       batches=cfg["inner.batches"]), seed=seed, evaluate=False, progress=False,
                                       G_tol=cfg["inner.G_tol"], growth=cfg["inner.growth"])
        np.testing.assert_array_equal(fresh.theta, z["theta"])
        assert not np.array_equal(z["theta"], main["theta"])
    # a row range reads only the blocks that hold it, and gives the same rows as the whole stage
    full = rundir_mod.inner_results(rd.run())
    for lo, hi in ((0, 20), (3, 12), (5, 10), (17, 20)):
        part = rundir_mod.inner_fields(rd.run(), ("theta", "lr"), lo=lo, hi=hi)
        np.testing.assert_array_equal(part["theta"], full["theta"][lo:hi])
        np.testing.assert_array_equal(part["lr"], full["lr"][lo:hi])
    # the reruns cover only the first seed (sensitivity.seeds = 1); the main run both
    assert rd.inner["theta"].shape[0] == 20
    assert len(list((out / "inner_seed").glob("block_*.npz"))) == 2
    sen = rd.sensitivity
    rows = {r["name"]: r for r in sen["rows"]}
    assert "clusters, cut ×1, seeds 0–0 only" in rows
    run = rd.run()
    for key, variant in (("batch seed 1", "seed"), (next(k for k in rows if k.startswith("half")), "half")):
        split = int(np.searchsorted(rd.indicators[0].steps, cfg["traps.split"]))
        again = sensitivity.statistics(stages.segments(run, "cluster", variant), split)
        assert rows[key]["n"] == again["n"] and rows[key]["seeds"] == 1


def test_regime1_is_analysed_apart(tmp_path):
    import fasttrap

    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TINY, "--set", "window.start=11", "--set", "window.stop=20",
                 "--set", "regime1.seeds=1", "--set", "regime1.start=1", "--set", "regime1.stop=10",
                 "--set", "outer.seeds=2", "--set", "certify.enabled=false", "--set", "sensitivity.enabled=false"])
    assert r.returncode == 0, r.stderr[-3000:]
    sub = fasttrap.open_run(out / "regime1")
    assert sub.seeds == [0] and sub.config["window.start"] == 1 and sub.config["window.stop"] == 10
    np.testing.assert_array_equal(sub.indicators[0].steps, np.arange(1, 11))
    # the same outer path: regime 1's start points are the main run's θ_1 … θ_10 of seed 0
    main = fasttrap.open_run(out)
    assert main.regime1 is not None and main.regime1.path == out / "regime1"
    np.testing.assert_array_equal(main.indicators[0].steps, np.arange(11, 21))
    rep = (out / "report.md").read_text()
    assert "## Regime 1 (outer steps 1–10)" in rep and (out / "regime1" / "report.md").is_file()
    # without reruns the ledge rule has no noise to measure: it refuses, and the report says why
    assert main.traps["rule_used"] == "ledge" and main.traps["separable"] is False
    assert "no reruns measure the noise" in rep and main.ledges["per_seed"]["0"]["why"] == ["no reruns"]


def test_auto_lr_rule_sets_each_runs_step_from_its_curvature(tmp_path):
    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TINY, "--set", "inner.lr_rule=auto", "--set", "window.stop=10",
                 "--set", "certify.enabled=false"])
    assert r.returncode == 0, r.stderr[-3000:]
    z = np.concatenate([store.read_npz(p)["lr"] for p in sorted((out / "inner").glob("block_*.npz"))])
    lam = np.concatenate([store.read_npz(p)["lambda_max"] for p in sorted((out / "inner").glob("block_*.npz"))])
    np.testing.assert_allclose(z, 1.0 / lam ** 2, rtol=1e-12)
    assert np.all(lam > 0) and not np.any(z * lam ** 2 > 2)
    assert "set to 1/λ_max² per run" in (out / "report.md").read_text()


def test_kill_and_resume_is_bit_identical(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = run_cmd(["--out", str(ref), "--no-progress", *KILLABLE])
    assert r.returncode == 0, r.stderr[-3000:]
    n_blocks = len(list((ref / "inner").glob("block_*.npz")))
    assert n_blocks == 8
    kill_when_written(["--out", str(killed), "--no-progress", *KILLABLE], killed / "inner" / "block_0001.npz")
    done = len(list((killed / "inner").glob("block_*.npz")))
    assert 2 <= done < n_blocks, f"the kill did not land mid-stage ({done} of {n_blocks} blocks done)"
    assert not (killed / "report.md").exists()
    r = run_cmd(["--resume", str(killed), "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stderr
    a, b = all_arrays(ref), all_arrays(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs after resume"
    assert store.read_json(killed / "manifest.json")["resumes"] == 1
    assert not list(killed.rglob("*.tmp"))


def test_full_disk_keeps_finished_blocks_intact(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_replace = os.replace

    def full_disk(src, dst, *a, **k):
        if str(dst).endswith("block_0002.npz"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", full_disk)
    code = cli.main(["--out", str(out), "--no-progress", *TINY])
    err = capsys.readouterr().err
    assert code == 4
    assert "no space left" in err.lower() and "block_0002" in err and "resume" in err.lower()
    blocks = sorted((out / "inner").glob("block_*.npz"))
    assert [p.name for p in blocks] == ["block_0000.npz", "block_0001.npz"]
    for p in blocks:                                  # the finished blocks are whole
        z = store.read_npz(p)
        assert z["theta"].shape[0] == 5 and np.isfinite(z["theta"]).all()
    assert not list(out.rglob("*.tmp"))               # no torn temp files left behind
    monkeypatch.setattr(os, "replace", real_replace)
    assert cli.main(["--resume", str(out), "--no-progress"]) == 0
    assert len(list((out / "inner").glob("block_*.npz"))) == 4


@pytest.mark.parametrize("args, code, words", [
    (["--set", "inner.epoch=3"], 2, ["unknown setting", "inner.epochs"]),
    (["--set", "model.activation=gelu"], 2, ["model.activation", "relu, tanh, sigmoid, linear"]),
    (["--set", "inner.batches=mixed"], 2, ["shared, independent"]),
    (["--set", "inner.epochs=lots"], 2, ["inner.epochs", "float"]),
    (["--set", "window.stop=500"], 2, ["window.stop", "outer.steps"]),
    (["--set", "noequals"], 2, ["key=value"]),
    (["--profile", "huge"], 2, ["invalid choice"]),
    (["--threads", "0"], 2, ["--threads"]),
])
def test_bad_settings_are_rejected_with_the_valid_choices(tmp_path, args, code, words):
    r = run_cmd(["--out", str(tmp_path / "x"), *args], timeout=120)
    assert r.returncode == code, (r.returncode, r.stderr[-500:])
    for w in words:
        assert w in r.stderr
    assert not (tmp_path / "x").exists()


def test_bad_config_file(tmp_path):
    bad = tmp_path / "run.toml"
    bad.write_text("[inner]\nepochs = 'many'\n")
    r = run_cmd(["--config", str(bad), "--out", str(tmp_path / "x")], timeout=120)
    assert r.returncode == 2 and "inner.epochs" in r.stderr
    bad.write_text("[inner\nepochs = 1\n")
    r = run_cmd(["--config", str(bad), "--out", str(tmp_path / "x")], timeout=120)
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    r = run_cmd(["--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "x")], timeout=120)
    assert r.returncode == 2 and "cannot be read" in r.stderr


def test_unreadable_data_directory(tmp_path):
    r = run_cmd(["--out", str(tmp_path / "a"), "--no-progress", *TINY, "--set", f"data.name={tmp_path / 'missing'}"], timeout=120)
    assert r.returncode == 3 and "not a directory" in r.stderr
    d = tmp_path / "junk"
    d.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (d / name).write_text("<html>not found</html>")
    r = run_cmd(["--out", str(tmp_path / "b"), "--no-progress", *TINY, "--set", f"data.name={d}"], timeout=120)
    assert r.returncode == 3 and "HTML" in r.stderr and "train-images" in r.stderr


def test_existing_output_directory_is_refused(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = run_cmd(["--out", str(out), *TINY], timeout=120)
    assert r.returncode == 3 and "not an empty directory" in r.stderr and "--resume" in r.stderr
    assert (out / "keep.txt").read_text() == "precious" and len(list(out.iterdir())) == 1


def test_resume_rules(tmp_path):
    r = run_cmd(["--resume", str(tmp_path)], timeout=120)
    assert r.returncode == 2 and "config.toml" in r.stderr
    r = run_cmd(["--resume", str(tmp_path), "--set", "inner.epochs=3"], timeout=120)
    assert r.returncode == 2 and "saved settings" in r.stderr


# ------------------------------------------------------------------------------ config ------
def test_profiles_and_precedence(tmp_path):
    q = config.resolve("quick")
    t = config.resolve("thesis")
    # the reference protocol as run: raw pixels; regime 2 (51-150, 9 seeds) for trapping times and
    # regime 1 (1-50, 3 seeds) apart; inner lr 0.1 / 0.01 split at 50; 100 epochs of batch 128 with
    # each run's own batch order; early/late split at 80
    assert t["data.normalize"] == "none" and t["outer.seeds"] == 9 and t["outer.steps"] == 150
    assert (t["window.start"], t["window.stop"], t["window.every"]) == (51, 150, 1)
    assert (t["regime1.seeds"], t["regime1.start"], t["regime1.stop"]) == (3, 1, 50)
    assert t["inner.epochs"] == 100 and t["inner.lr"] == [0.1, 0.01] and t["inner.regime_split"] == 50
    assert t["inner.batch_size"] == 128 and t["inner.batches"] == "independent" and t["traps.split"] == 80
    assert t["outer.lr"] == 0.1 and t["outer.batch_size"] == 128 and t["traps.rule"] == "ledge"
    r1 = config.regime1_config(t)
    assert (r1["outer.seeds"], r1["window.start"], r1["window.stop"], r1["regime1.seeds"]) == (3, 1, 50, 0)
    assert r1["traps.split"] == 26                 # regime 1 is split at its own middle, not at step 80
    # quick is a miniature of the same protocol: the same outer path and inner descent, a shorter
    # stretch of regime 2 at the smallest budget that agrees with 100 epochs, no regime 1
    same = ("data.normalize", "inner.lr", "inner.regime_split", "inner.batch_size", "inner.batches", "traps.rule",
            "outer.lr", "outer.batch_size", "model.widths", "sensitivity.enabled", "sensitivity.every")
    assert {k: q[k] for k in same} == {k: t[k] for k in same}
    assert t["window.start"] <= q["window.start"] < q["window.stop"] <= t["window.stop"] and q["window.every"] == 1
    assert q["outer.seeds"] == 1 and q["inner.epochs"] == 25 and q["regime1.seeds"] == 0
    # the standardised variant is kept under its own name and differs in the inputs only
    ts = config.resolve("thesis-standardized")
    assert ts["data.normalize"] == "default"
    assert {k: v for k, v in ts.items() if k not in ("data.normalize", "profile")} == \
        {k: v for k, v in t.items() if k not in ("data.normalize", "profile")}
    f = tmp_path / "c.toml"
    f.write_text("[inner]\nepochs = 3\nlr = [0.05]\n[traps]\nconfirm = false\n")
    c = config.resolve("quick", f, ["inner.epochs=4"])
    assert c["inner.epochs"] == 4.0 and c["inner.lr"] == [0.05] and c["traps.confirm"] is False


def test_config_round_trips_through_toml(tmp_path):
    c = config.resolve("thesis", None, ["data.name=/some/where", "inner.G_tol=1e-12"])
    (tmp_path / "config.toml").write_text(config.to_toml(c))
    back = config.from_saved(tmp_path / "config.toml")
    assert back == c


def test_help_documents_every_setting():
    text = config.describe()
    for k in config.SCHEMA:
        assert k in text
    r = run_cmd(["--help"], timeout=120)
    assert r.returncode == 0 and "inner.epochs" in r.stdout and "thesis" in r.stdout
    assert "--analysis" in r.stdout and "aging.hidden" in r.stdout and "--analysis aging" in r.stdout


# ------------------------------------------------------------------------------ aging -------
AGING_TINY = ["--analysis", "aging", "--set", "aging.hidden=12,3", "--set", "aging.steps=200", "--set", "outer.seeds=2",
              "--set", "outer.curve_points=8", "--set", "aging.noise_rows=2000", "--set", "aging.eval_rows=2000",
              "--set", "aging.n_tw=3", "--set", "aging.n_lags=10"]
AGING_KILLABLE = ["--analysis", "aging", "--set", "aging.hidden=32", "--set", "aging.steps=4000",
                  "--set", "aging.checkpoint_every=200", "--set", "outer.curve_points=10",
                  "--set", "aging.noise_rows=3000", "--set", "aging.eval_rows=3000", "--threads", "2"]


def test_aging_end_to_end_tiny(tmp_path):
    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *AGING_TINY])
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'analysis = "aging"' in (out / "config.toml").read_text()
    assert "fasttrap aging: 12:" in r.stdout and "fasttrap aging: 3:" in r.stdout
    for f in ("manifest.json", "report.md", "aging/net_12.npz", "aging/net_3.npz", "figures/aging.png",
              "figures/aging.pdf", "figures/aging.npz", "figures/gradient_noise.png", "figures/training_curves.png"):
        assert (out / f).is_file(), f
    assert not list((out / "aging").glob("*.ckpt.npz"))        # checkpoints go once a net is done
    z = store.read_npz(out / "aging" / "net_12.npz")
    assert z["msd"].shape == (2, 3, len(z["lags"])) and z["theta_final"].shape == (2, 784 * 12 + 12 + 12 * 10 + 10)
    assert np.isfinite(z["noise_D"]).all() and (z["noise_D"] > 0).all()
    rep = (out / "report.md").read_text()
    for s in ("# fasttrap aging report", "### 12", "### 3", "![aging](figures/aging.png)", "Gradient noise"):
        assert s in rep
    man = store.read_json(out / "manifest.json")
    assert man["analysis"] == "aging" and {"aging_12", "aging_3", "report"} <= set(man["stages"])


def test_aging_kill_and_resume_is_bit_identical(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = run_cmd(["--out", str(ref), "--no-progress", *AGING_KILLABLE])
    assert r.returncode == 0, r.stderr[-3000:]
    ck = killed / "aging" / "net_32.ckpt.npz"
    kill_when_written(["--out", str(killed), "--no-progress", *AGING_KILLABLE], ck, delay=0.3)
    assert not (killed / "aging" / "net_32.npz").exists(), "the kill did not land mid-run"
    t_ck = int(store.read_npz(ck)["t"])
    assert 0 < t_ck < 4000
    r = run_cmd(["--resume", str(killed), "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from its checkpoint" in r.stderr
    a, b = all_arrays(ref), all_arrays(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs after resume"


@pytest.mark.parametrize("args, words", [
    (["--analysis", "aging", "--set", "aging.hidden=100-x"], ["aging.hidden", "100-100,5-5"]),
    (["--analysis", "aging", "--profile", "thesis"], ["thesis", "aging", "quick, long"]),
    (["--analysis", "aging", "--set", "aging.tw_min=50", "--set", "aging.steps=50"], ["aging.tw_min"]),
    (["--analysis", "ages"], ["invalid choice"]),
])
def test_bad_aging_settings(tmp_path, args, words):
    refused(tmp_path, args, words)


def refused(tmp_path, args, words):
    """``python -m fasttrap.run --out … args`` exits 2, its message holds every one of ``words``, and
    no run directory is left behind."""
    r = run_cmd(["--out", str(tmp_path / "x"), *args], timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-500:])
    for w in words:
        assert w in r.stderr
    assert not (tmp_path / "x").exists()


def test_aging_config_round_trips_and_profiles(tmp_path):
    c = config.resolve("long", None, ["aging.hidden=50,20-20"], analysis="aging")
    assert c["aging.steps"] == 100000 and config.hidden_widths(c) == [[50], [20, 20]]
    (tmp_path / "config.toml").write_text(config.to_toml(c))
    assert config.from_saved(tmp_path / "config.toml") == c
    q = config.resolve("quick", analysis="aging")
    assert config.hidden_widths(q) == [[100, 100], [5, 5]]
    r = run_cmd(["--resume", str(tmp_path), "--analysis", "aging"], timeout=120)
    assert r.returncode == 2 and "saved settings" in r.stderr


def test_diverging_sgd_exits_3_with_the_reason(tmp_path):
    r = run_cmd(["--out", str(tmp_path / "x"), "--no-progress", *AGING_TINY, "--set", "outer.lr=1e5",
                 "--set", "model.loss=mse"], timeout=300)
    assert r.returncode == 3, (r.returncode, r.stderr[-800:])
    assert "diverged" in r.stderr and "outer.lr" in r.stderr


@pytest.mark.parametrize("args", [
    ["--set", "model.widths=[784,100,10,5]"],                 # the data has 10 classes: refused at the data stage
    ["--set", "data.name=/nonexistent/idx-dir"],
])
@pytest.mark.parametrize("given_empty", [False, True])
def test_a_failed_start_leaves_nothing_behind(tmp_path, args, given_empty):
    out = tmp_path / "run"
    if given_empty:
        out.mkdir()
    r = run_cmd(["--out", str(out), "--no-progress", *TINY, *args])
    assert r.returncode == 3, r.stderr[-2000:]
    assert (not out.exists()) if not given_empty else (out.is_dir() and not any(out.iterdir()))


def test_a_run_made_before_the_certificate_settings_keeps_its_certificates(tmp_path):
    """A saved config without certify.krylov and certify.products (a run made before them) resumes with
    what it was made with: one fresh Lanczos run per doubling of k and float64 products; a new run gets
    the continued run and float32 products."""
    c = config.resolve("quick", None, [])
    assert (c["certify.krylov"], c["certify.products"]) == ("one", "float32")
    text = config.to_toml(c)
    old = "\n".join(line for line in text.splitlines() if not line.startswith(("krylov", "products")))
    assert old != text
    (tmp_path / "config.toml").write_text(old)
    back = config.from_saved(tmp_path / "config.toml")
    assert (back["certify.krylov"], back["certify.products"]) == ("separate", "float64")
    with pytest.raises(config.ConfigError, match="certify.products"):
        config.resolve("quick", None, ["certify.products=float16"])
