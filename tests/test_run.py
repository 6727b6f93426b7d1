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

from fasttrap import cli, config, store

# A tiny but real configuration: the embedded MNIST, a small MLP, 20 outer points.
TINY = ["--set", "model.widths=[784,24,10]", "--set", "outer.steps=30", "--set", "window.start=1",
        "--set", "window.stop=20", "--set", "inner.epochs=0.25", "--set", "inner.block=5",
        "--set", "stats.n_bootstrap=10", "--set", "outer.curve_points=6", "--set", "inner.eval_rows=5000"]
# For the kill test: enough inner work that a kill lands mid-stage.
KILLABLE = ["--set", "model.widths=[784,48,10]", "--set", "outer.steps=40", "--set", "window.start=1",
            "--set", "window.stop=32", "--set", "inner.epochs=1.5", "--set", "inner.block=4",
            "--set", "stats.n_bootstrap=10", "--set", "outer.curve_points=6", "--set", "inner.eval_rows=3000",
            "--threads", "2"]


def run_cmd(args, timeout=600, **kw):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "fasttrap.run", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


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
    for section in ("## Training", "## Inner runs", "## Traps", "## Power law", "## Settings", "Regimes"):
        assert section in rep
    inner = store.read_npz(out / "inner" / "block_0000.npz")
    assert inner["theta"].shape == (5, 784 * 24 + 24 + 24 * 10 + 10)
    assert set(inner["status"]) <= {"max_steps", "converged", "diverged", "nonfinite"}


def test_kill_and_resume_is_bit_identical(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = run_cmd(["--out", str(ref), "--no-progress", *KILLABLE])
    assert r.returncode == 0, r.stderr[-3000:]
    n_blocks = len(list((ref / "inner").glob("block_*.npz")))
    assert n_blocks == 8
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.Popen([sys.executable, "-m", "fasttrap.run", "--out", str(killed), "--no-progress", *KILLABLE],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        t0 = time.time()
        while not (killed / "inner" / "block_0001.npz").exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() - t0 < 300
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
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
    assert t["outer.seeds"] == 9 and t["inner.epochs"] == 100 and t["inner.lr"] == [0.1, 0.01]
    assert t["inner.regime_split"] == 50 and t["window.stop"] - t["window.start"] + 1 == 100
    assert q["model.widths"] == [784, 100, 100, 10]
    f = tmp_path / "c.toml"
    f.write_text("[inner]\nepochs = 3\nlr = [0.05]\n[traps]\nconfirm = false\n")
    c = config.resolve("quick", f, ["inner.epochs=4"])
    assert c["inner.epochs"] == 4.0 and c["inner.lr"] == [0.05] and c["traps.confirm"] is False


def test_config_round_trips_through_toml(tmp_path):
    c = config.resolve("thesis", None, ["data.name=/some/where", "inner.G_tol=1e-12"])
    (tmp_path / "config.toml").write_text(config.to_toml(c))
    back = cli._load_saved(tmp_path)
    assert back == c


def test_help_documents_every_setting():
    text = config.describe()
    for k in config.SCHEMA:
        assert k in text
    r = run_cmd(["--help"], timeout=120)
    assert r.returncode == 0 and "inner.epochs" in r.stdout and "thesis" in r.stdout
