"""Helpers: FLOP counts, the Gram cost model, log-binned histograms, atomic storage, progress."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import fasttrap
from fasttrap.ops import _loader, flops
from fasttrap.common import progress, store
from fasttrap.analysis import traps


def test_textbook_and_fused_flop_counts():
    mlp = fasttrap.MLP((784, 100, 100, 10))
    assert flops.textbook_grad_G(mlp, 128) == 105_625_600          # the 105.6 MFLOP of the issue
    fused = flops.fused_grad_G(mlp, 128, 64)
    assert 68e6 < fused < 70e6                                       # Gram trick: two 784-wide GEMMs fewer
    assert flops.fused_grad_G(mlp, 128, 64, shared=False) > fused    # an unshared X X^T costs more


@pytest.mark.parametrize("widths, B, sharing", [((784, 100, 10), 128, 64), ((784, 100, 10), 128, 1),
                                                 ((10, 100, 3), 128, 1), ((5, 4), 5, 17), ((300, 31, 10), 300, 3),
                                                 ((784, 100, 10), 2000, 1)])
def test_python_cost_model_mirrors_the_core(widths, B, sharing):
    mlp = fasttrap.MLP(widths)
    assert flops.uses_gram(mlp, B, sharing) == _loader.core.use_gram(list(widths), B, sharing)


def test_log_histogram_is_a_density():
    x = np.random.default_rng(0).integers(1, 500, 2000)
    edges, dens = traps.log_histogram(x)
    assert np.all(np.diff(edges) > 0) and edges[0] == 1 and edges[-1] > x.max()
    np.testing.assert_allclose((dens * np.diff(edges)).sum(), 1.0)
    assert traps.log_histogram([])[0].size == 0


def test_store_round_trips(tmp_path):
    store.write_json(tmp_path / "a.json", {"x": np.float64(1.5), "nan": float("nan"), "arr": np.arange(3), "n": np.int64(4)})
    assert store.read_json(tmp_path / "a.json") == {"x": 1.5, "nan": None, "arr": [0, 1, 2], "n": 4}
    store.write_npz(tmp_path / "b.npz", a=np.arange(5.0), s=np.array(["max_steps", "diverged"]))
    z = store.read_npz(tmp_path / "b.npz")
    assert z["a"].tolist() == [0, 1, 2, 3, 4] and z["s"].tolist() == ["max_steps", "diverged"]
    with pytest.raises(TypeError, match="object"):
        store.write_npz(tmp_path / "c.npz", o=np.array([{}, None], dtype=object))
    assert not (tmp_path / "c.npz").exists()


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "keep.txt"
    store.write_text(target, "old")

    def boom(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(store.StoreError, match="no space left"):
        store.write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / ".stale.npz.x1.tmp").write_text("half")
    assert [p.name for p in store.clean_stale_temps(tmp_path)] == [".stale.npz.x1.tmp"]


def test_progress_logs_when_not_a_terminal(capsys):
    p = progress.Progress(100, "unit test", "step", enabled=True, every=0.0)
    p.update_to(40, active=3)
    p.update_to(100)
    p.close()
    err = capsys.readouterr().err
    assert "unit test: 40/100 steps" in err and "active=3" in err and "done, 100 steps" in err
    q = progress.Progress(10, "silent", enabled=False)
    q.update_to(10)
    q.close()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(tmp_path, umask):
    """A run directory's files get the mode an ordinary open() gives under the umask (not mkstemp's 0600)."""
    import os

    from fasttrap.common import store

    old = os.umask(umask)
    try:
        p = store.write_json(tmp_path / "a.json", {"x": 1})
        q = store.write_npz(tmp_path / "b.npz", x=np.zeros(3))
        ref = tmp_path / "ref.txt"
        with open(ref, "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    want = os.stat(ref).st_mode & 0o777
    assert want == 0o666 & ~umask
    for f in (p, q):
        assert os.stat(f).st_mode & 0o777 == want
