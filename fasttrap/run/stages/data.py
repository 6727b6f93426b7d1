"""The first stage of every analysis: load and check the data set named by the settings."""

from __future__ import annotations

from typing import Any

from ...model import data as datamod
from ...model.mlp import MLP
from .. import rundir
from ..rundir import Run


def load_dataset(cfg: dict[str, Any]) -> datamod.Dataset:
    """The data set the settings name, normalised as they say."""
    try:
        return datamod.load(cfg["data.name"], normalize=cfg["data.normalize"])
    except datamod.DataError as exc:
        raise rundir.RunError(f"data: {exc}") from None


def stage_data(run: Run) -> datamod.Dataset:
    cfg = run.cfg
    ds = load_dataset(cfg)
    w = cfg["model.widths"]
    if cfg.get("analysis", "traps") in ("traps", "spectra"):  # the aging nets take their widths from the data
        if w[0] != ds.n_features:
            raise rundir.RunError(f"model.widths starts with {w[0]} inputs but {ds.name} has {ds.n_features} features")
        if w[-1] < ds.n_classes:
            raise rundir.RunError(f"model.widths ends with {w[-1]} outputs but {ds.name} has {ds.n_classes} classes")
    run.manifest["data"] = {"name": ds.name, "train": list(ds.X_train.shape), "test": list(ds.X_test.shape),
                            "classes": ds.n_classes, "normalize": ds.normalize, "mean": ds.info.get("mean"),
                            "std": ds.info.get("std")}
    return ds


def mlp_of(cfg: dict[str, Any]) -> MLP:
    return MLP(cfg["model.widths"], cfg["model.activation"], cfg["model.loss"], cfg["model.output"])

