"""A run directory that proves its integrity (issue 28): for every kind of file a run writes, truncate it,
replace it with another valid file, and edit the settings; ``--resume`` and ``open_run`` must either
recompute to the bytes of an untouched run or refuse, naming the file. Nothing wrong is ever read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import fasttrap
from fasttrap.common import store
from fasttrap.run.rundir import IntegrityError, RunError

from test_run import TINY, run_cmd  # noqa: E402  (rootdir-relative, as the other run tests)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def arrays(d: Path) -> dict[str, bytes]:
    """Every array of every .npz of a run directory (the quarantine aside), as bytes."""
    out = {}
    for p in sorted(d.rglob("*.npz")):
        rel = p.relative_to(d)
        if rel.parts[0] == "damaged":
            continue
        for k, v in store.read_npz(p).items():
            out[f"{rel}:{k}"] = v.dtype.str.encode() + str(v.shape).encode() + v.tobytes()
    return out


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("integrity") / "ref"
    r = run_cmd(["--out", str(out), "--no-progress", *TINY, "--set", "outer.seeds=2"])
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def ref_arrays(ref) -> dict[str, bytes]:
    return arrays(ref)


def copy_of(ref: Path, tmp_path: Path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(ref, d)
    return d


def test_a_run_records_every_file_it_writes(ref):
    man = store.read_json(ref / "manifest.json")
    files = man["files"]
    on_disk = {p.relative_to(ref).as_posix() for p in ref.rglob("*") if p.is_file()}
    assert set(files) == on_disk - {"manifest.json", "config.toml"}
    assert files["inner/block_0001.npz"]["what"] == {"task": "inner-main-0001", "args": ["main", 1, 5, 10]}
    assert files["inner/block_0001.npz"]["arrays"]["theta"] == ["<f4", [5, 784 * 24 + 24 + 24 * 10 + 10]]
    assert files["certify/seed_0.npz"]["what"]["args"] == [0]
    assert len(man["settings_sha256"]) == 64 and man["settings"]["inner.epochs"] == 0.25
    assert "run.threads" not in man["settings"]          # where it runs may change, what it computes may not
    assert fasttrap.open_run(ref).integrity == "verified"


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def restale(p: Path) -> None:
    """A valid file of the right layout with other numbers (a stale or hand-edited copy)."""
    z = store.read_npz(p)
    k = next(k for k, v in z.items() if v.dtype.kind == "f" and np.isfinite(v).any())
    z[k] = np.nextafter(z[k], np.inf)          # one ulp: a change no zip CRC or reader would notice
    np.savez(p, **z)


# (file, damage): every kind of file the traps analysis writes, each damaged in the ways issue 28 lists
CASES = [
    ("inner/block_0000.npz", "truncate"), ("inner/block_0000.npz", "copy:inner/block_0001.npz"),
    ("inner/block_0002.npz", "flip"), ("inner/block_0000.npz", "restale"),
    ("inner_seed/block_0000.npz", "truncate"),
    ("outer/seed_0.npz", "truncate"), ("outer/seed_1.npz", "copy:outer/seed_0.npz"),
    ("certify/seed_0.npz", "copy:certify/seed_1.npz"), ("certify/seed_1.npz", "empty"),
    ("indicators/seed_0.npz", "restale"),
    ("ledges.npz", "truncate"), ("ledges.json", "empty"), ("traps.json", "truncate"), ("traps.npz", "flip"),
    ("figures/ledges_seed0.npz", "truncate"), ("inner/block_0001.npz", "delete"),
    ("sensitivity.json", "truncate"), ("stats.json", "flip"), ("report.md", "truncate"),
]


def damage(d: Path, rel: str, how: str) -> None:
    p = d / rel
    if how == "truncate":
        truncate(p)
    elif how == "flip":
        flip(p)
    elif how == "empty":
        p.write_bytes(b"")
    elif how == "restale":
        restale(p)
    elif how == "delete":
        p.unlink()
    else:
        shutil.copyfile(d / how.split(":", 1)[1], p)


@pytest.mark.parametrize("rel,how", CASES, ids=[f"{r}-{h.split(':')[0]}" for r, h in CASES])
def test_damaged_files_are_refused_by_open_run_and_recomputed_by_resume(ref, ref_arrays, tmp_path, rel, how):
    if not (ref / rel).exists():
        pytest.skip(f"{rel}: this run does not write it")
    d = copy_of(ref, tmp_path)
    damage(d, rel, how)
    with pytest.raises(IntegrityError, match=rel.replace(".", r"\.")) as exc:
        fasttrap.open_run(d)
    kind = {"copy": "foreign", "delete": "missing"}.get(how.split(":")[0], "damaged")
    assert kind in str(exc.value) and "--resume" in str(exc.value)
    if how.startswith("copy:"):
        assert f"its bytes are those of {how.split(':', 1)[1]}" in str(exc.value)
    r = run_cmd(["--resume", str(d), "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert rel in r.stderr and "computed again" in r.stderr
    got = arrays(d)
    assert got.keys() == ref_arrays.keys()
    bad = [k for k in got if got[k] != ref_arrays[k]]
    assert not bad, f"differs from the untouched run after the resume: {bad[:5]}"
    if how != "delete":
        assert (d / "damaged").is_dir() and list((d / "damaged").rglob(Path(rel).name)), "the damaged file was lost"
    man = store.read_json(d / "manifest.json")
    assert any(x["file"] == rel for x in man["recomputed"])
    assert fasttrap.open_run(d).integrity == "verified"


def test_an_unrecorded_file_is_recomputed_and_kept_only_if_it_differs(ref, ref_arrays, tmp_path):
    """A kill between a block's write and the manifest's update leaves a block the ledger does not know:
    it is not read, and a resume recomputes it; an identical copy is dropped, a different one kept."""
    d = copy_of(ref, tmp_path)
    man = store.read_json(d / "manifest.json")
    del man["files"]["inner/block_0003.npz"]
    man["files"].pop("inner/block_0002.npz")
    store.write_json(d / "manifest.json", man)
    restale(d / "inner" / "block_0002.npz")          # this one is not the block the run would write
    fasttrap.open_run(d)                               # unrecorded files are not an error: they are not read
    r = run_cmd(["--resume", str(d), "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "inner/block_0003.npz: recomputed to the bytes of the file found there unrecorded" in r.stderr
    assert "inner/block_0002.npz: recomputed; the unrecorded file found there had other bytes" in r.stderr
    got = arrays(d)
    assert {k: v for k, v in got.items()} == ref_arrays
    kept = [p.relative_to(d / "damaged").as_posix() for p in (d / "damaged").rglob("*.npz")]
    assert len(kept) == 1 and kept[0].endswith("inner/block_0002.npz")


@pytest.mark.parametrize("edit,words", [
    (lambda t: t.replace("lr = [0.1, 0.01]", "lr = [0.05, 0.01]", 1), ["inner.lr", "[0.05, 0.01]", "[0.1, 0.01]"]),
    (lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("epochs")), ["inner.epochs", "missing"]),
    (lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("widths")), ["model.widths", "missing"]),
], ids=["changed-lr", "deleted-epochs", "deleted-widths"])
def test_edited_settings_are_refused_by_name(ref, tmp_path, edit, words):
    d = copy_of(ref, tmp_path)
    text = (d / "config.toml").read_text()
    new = edit(text)
    assert new != text
    (d / "config.toml").write_text(new)
    with pytest.raises(IntegrityError) as exc:
        fasttrap.open_run(d)
    assert "config.toml" in str(exc.value) and all(w in str(exc.value) for w in words), str(exc.value)
    before = arrays(d)
    r = run_cmd(["--resume", str(d), "--no-progress"])
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    assert "config.toml" in r.stderr and all(w in r.stderr for w in words) and "Traceback" not in r.stderr
    assert arrays(d) == before                      # nothing was written


@pytest.mark.parametrize("how", ["truncate", "empty", "not-a-dict", "no-stages"])
def test_a_damaged_manifest_is_refused_by_name(ref, tmp_path, how):
    d = copy_of(ref, tmp_path)
    m = d / "manifest.json"
    if how == "truncate":
        truncate(m)
    elif how == "empty":
        m.write_text("")
    elif how == "not-a-dict":
        m.write_text("[1, 2]")
    else:
        m.write_text(json.dumps({"seeds": [0, 1]}))
    with pytest.raises(IntegrityError, match="manifest.json"):
        fasttrap.open_run(d)
    r = run_cmd(["--resume", str(d), "--no-progress"])
    assert r.returncode == 3 and "manifest.json" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def legacy(ref: Path, tmp_path: Path) -> Path:
    """A copy of the run as a run made before the ledger: no "files", no "settings" in its manifest."""
    d = copy_of(ref, tmp_path)
    man = store.read_json(d / "manifest.json")
    for k in ("files", "settings", "settings_sha256"):
        man.pop(k)
    store.write_json(d / "manifest.json", man)
    return d


def rewrite(p: Path, **change) -> None:
    z = store.read_npz(p)
    for k, v in change.items():
        if v is None:
            z.pop(k)
        else:
            z[k] = v(z[k])
    np.savez(p, **z)


@pytest.mark.parametrize("change,words", [
    ({"theta": lambda t: np.where(np.arange(t.shape[1]) == 3, np.nan, t)}, "non-finite θ but the status"),
    ({"status": None}, "lacks ['status']"),
    ({"theta": lambda t: t[:, :-1]}, "parameters, the other blocks'"),
    ({"theta": lambda t: t[:3], "status": lambda s: s[:3]}, "endpoints, the block covers"),
], ids=["nan-theta", "no-status", "other-P", "other-rows"])
def test_runs_without_a_ledger_still_refuse_a_block_that_cannot_be_theirs(ref, tmp_path, change, words):
    d = legacy(ref, tmp_path)
    assert fasttrap.open_run(d).integrity.startswith("unverified")
    rewrite(d / "inner" / "block_0001.npz", **change)
    with pytest.raises(store.DamagedFileError, match="block_0001.npz") as exc:
        fasttrap.open_run(d)
    assert words in str(exc.value)


def test_a_legacy_run_adopts_its_files_on_resume_and_is_checked_from_then_on(ref, ref_arrays, tmp_path):
    d = legacy(ref, tmp_path)
    r = run_cmd(["--resume", str(d), "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "made before fasttrap kept a ledger" in r.stderr
    assert arrays(d) == ref_arrays
    assert fasttrap.open_run(d).integrity == "verified"
    truncate(d / "certify" / "seed_0.npz")
    with pytest.raises(IntegrityError, match="certify/seed_0.npz"):
        fasttrap.open_run(d)


@pytest.mark.parametrize("rel", ["inner/block_0000.npz", "traps.json", "certify/seed_0.npz"])
def test_a_damaged_file_of_a_run_without_a_ledger_is_named(ref, tmp_path, rel):
    """Where no ledger can say what a file should be, a file that cannot be read is still named."""
    d = legacy(ref, tmp_path)
    truncate(d / rel)
    with pytest.raises((store.DamagedFileError, RunError), match=rel.split("/")[-1].replace(".", r"\.")):
        fasttrap.open_run(d)
