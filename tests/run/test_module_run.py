"""``python -m fasttrap.run`` with the aging paper's networks (``model.arch``): the trap analysis and
aging on the small conv net (a TorchModel, the torch.func path), the toy model on the core, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from fasttrap import open_run
from fasttrap.run import config
from fasttrap.common import store

from test_run import refused, run_cmd

SLICE = ["--set", "data.train_rows=600", "--set", "data.test_rows=200"]
TRAPS_SMALLNET = ["--set", "model.arch=smallnet", *SLICE, "--set", "outer.steps=16", "--set", "window.start=1",
                  "--set", "window.stop=8", "--set", "window.every=1", "--set", "regime1.seeds=0",
                  "--set", "sensitivity.seed_bootstrap=20", "--set", "sensitivity.n_bootstrap=5",
                  "--set", "inner.epochs=0.5", "--set", "inner.batch_size=100", "--set", "inner.block=4",
                  "--set", "stats.n_bootstrap=5", "--set", "outer.curve_points=4", "--set", "inner.lr_rows=100",
                  "--set", "certify.every=4", "--set", "certify.rows=200", "--set", "certify.lanczos_steps=8",
                  "--set", "certify.k=2", "--set", "certify.k_max=4", "--set", "certify.slq_probes=0",
                  "--set", "certify.minres_iters=8"]


def test_the_trap_analysis_runs_on_the_small_conv_net(tmp_path):
    """Outer SGD, inner descents with statuses, certificates, indicators, traps and statistics, end to
    end on a module; a resume of the finished run changes nothing."""
    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--no-progress", *TRAPS_SMALLNET], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = (out / "report.md").read_text()
    assert "smallnet (two conv + two dense layers" in rep and "torch (CPU)" in rep
    d = open_run(out)
    P = 21_840
    z = store.read_npz(out / "inner" / "block_0000.npz")
    assert z["theta"].shape == (4, P) and set(z["status"]) <= {"max_steps", "converged", "diverged", "nonfinite"}
    assert np.isfinite(z["theta"]).all()
    c = store.read_npz(out / "certify" / "seed_0.npz")
    assert c["kind"].size == 2 and np.all(c["lambda_max"] > 0)
    assert d.config["model.arch"] == "smallnet"
    before = {p: p.read_bytes() for p in sorted((out / "inner").glob("*.npz"))}
    r = run_cmd(["--resume", str(out), "--no-progress"], timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert before == {p: p.read_bytes() for p in sorted((out / "inner").glob("*.npz"))}


def test_aging_on_the_small_conv_net_and_the_toy_model(tmp_path):
    base = ["--analysis", "aging", "--no-progress", *SLICE, "--set", "aging.steps=60", "--set", "outer.seeds=2",
            "--set", "outer.curve_points=4", "--set", "aging.n_tw=2", "--set", "aging.n_lags=6",
            "--set", "aging.tw_min=5"]
    r = run_cmd(["--out", str(tmp_path / "conv"), *base, "--set", "model.arch=smallnet"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fasttrap aging: smallnet:" in r.stdout
    a = store.read_npz(tmp_path / "conv" / "aging" / "net_smallnet.npz")
    assert a["theta_final"].shape == (2, 21_840) and np.all(a["msd"][:, 0, 1:] > 0)
    r = run_cmd(["--out", str(tmp_path / "toy"), *base, "--set", "model.arch=toy", "--set", "aging.hidden=20,3"],
                timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "toy-20:" in r.stdout and "toy-3:" in r.stdout
    t = store.read_npz(tmp_path / "toy" / "aging" / "net_toy-3.npz")
    assert list(t["widths"]) == [784, 3, 10]
    assert "toy model (one hidden ReLU layer, sigmoid output, MSE)" in (tmp_path / "toy" / "report.md").read_text()


@pytest.mark.parametrize("args, words", [
    (["--analysis", "spectra", "--set", "model.arch=smallnet"], ["model.arch", "spectra", "fasttrap.MLP"]),
    (["--analysis", "swap", "--set", "model.arch=resnet18"], ["model.arch", "swap"]),
    (["--set", "model.arch=toy"], ["model.widths", "toy model has one hidden layer"]),
    (["--analysis", "aging", "--set", "model.arch=toy", "--set", "aging.hidden=5-5"], ["aging.hidden", "one width"]),
    (["--set", "model.arch=vgg"], ["model.arch", "mlp, toy, smallnet, resnet18"]),
])
def test_bad_model_settings(tmp_path, args, words):
    refused(tmp_path, args, words)


def test_the_paper_profiles():
    fc = config.resolve("paper-fc", analysis="aging")
    assert (fc["outer.lr"], fc["outer.batch_size"], fc["model.arch"]) == (0.01, 128, "mlp")
    toy = config.resolve("paper-toy", analysis="aging")
    assert (toy["outer.lr"], toy["outer.batch_size"], toy["model.arch"]) == (0.1, 100, "toy")
    assert config.hidden_widths(toy) == [[100], [4]]
    sn = config.resolve("smallnet", analysis="aging")
    assert sn["model.arch"] == "smallnet" and sn["data.name"] == "fashion-mnist"


def test_an_older_run_resumes_without_the_settings_added_since(tmp_path):
    """Settings added later with defaults that change nothing are filled in; any other missing one
    still refuses a resume."""
    c = config.resolve("quick", analysis="aging")
    text = config.to_toml(c)
    drop = {"data": ("train_rows =", "test_rows ="), "model": ("arch =", "compile =")}
    lines, section = [], ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        if not line.startswith(drop.get(section, ("\0",))):
            lines.append(line)
    old = "\n".join(lines)
    assert len(lines) == len(text.splitlines()) - 4
    (tmp_path / "config.toml").write_text(old)
    back = config.from_saved(tmp_path / "config.toml")
    assert back["model.arch"] == "mlp" and back["model.compile"] is False and back["data.train_rows"] == 0
    (tmp_path / "config.toml").write_text("\n".join(line for line in old.splitlines() if not line.startswith("lr =")))
    with pytest.raises(config.ConfigError, match="lacks"):
        config.from_saved(tmp_path / "config.toml")


def test_the_small_conv_net_on_cifar_files_keeps_the_image_shape(tmp_path):
    """CIFAR-10 from python-version batch files (written here, small): the small net is built for
    3×32×32 images and an aging run goes through."""
    from fasttrap.model.cifar import write_cifar

    g = np.random.default_rng(0)
    d = write_cifar(tmp_path / "cifar", g.integers(0, 256, (250, 3072), dtype=np.uint8), g.integers(0, 10, 250),
                    g.integers(0, 256, (50, 3072), dtype=np.uint8), g.integers(0, 10, 50))
    out = tmp_path / "run"
    r = run_cmd(["--out", str(out), "--analysis", "aging", "--no-progress", "--set", f"data.name={d}",
                 "--set", "model.arch=smallnet", "--set", "aging.steps=20", "--set", "outer.seeds=1",
                 "--set", "outer.batch_size=50", "--set", "outer.curve_points=2", "--set", "aging.n_tw=2",
                 "--set", "aging.n_lags=4", "--set", "aging.tw_min=2"], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a = store.read_npz(out / "aging" / "net_smallnet.npz")
    assert a["theta_final"].shape == (1, 3 * 25 * 10 + 10 + 10 * 25 * 20 + 20 + 500 * 50 + 50 + 50 * 10 + 10)
