"""The first stage of every analysis: load and check the data set named by the settings."""

from __future__ import annotations

import functools
from typing import Any

from ...model import data as datamod
from ...model import zoo
from ...model.mlp import MLP
from .. import rundir
from ..rundir import Run


def load_dataset(cfg: dict[str, Any]) -> datamod.Dataset:
    """The data set the settings name, normalised as they say."""
    try:
        ds = datamod.load(cfg["data.name"], normalize=cfg["data.normalize"])
    except datamod.DataError as exc:
        raise rundir.RunError(f"data: {exc}") from None
    n_tr, n_te = cfg.get("data.train_rows", 0), cfg.get("data.test_rows", 0)
    if n_tr or n_te:
        ds = ds.subset(n_tr or None, n_te or None)
    return ds


def stage_data(run: Run) -> datamod.Dataset:
    cfg = run.cfg
    ds = load_dataset(cfg)
    w = cfg["model.widths"]
    # the aging nets take their widths from the data, the conv nets their image shape
    if cfg.get("analysis", "traps") in ("traps", "spectra", "swap") and cfg["model.arch"] in ("mlp", "toy"):
        if w[0] != ds.n_features:
            raise rundir.RunError(f"model.widths starts with {w[0]} inputs but {ds.name} has {ds.n_features} features")
        if w[-1] < ds.n_classes:
            raise rundir.RunError(f"model.widths ends with {w[-1]} outputs but {ds.name} has {ds.n_classes} classes")
    run.manifest["data"] = {"name": ds.name, "train": list(ds.X_train.shape), "test": list(ds.X_test.shape),
                            "classes": ds.n_classes, "normalize": ds.normalize, "mean": ds.info.get("mean"),
                            "std": ds.info.get("std")}
    return ds


def mlp_of(cfg: dict[str, Any], ds: datamod.Dataset | None = None) -> Any:
    """The network the settings name (``model.arch``): a :class:`fasttrap.MLP` for ``mlp`` and ``toy``
    (the toy model is the MLP ``model.widths`` with ReLU, a sigmoid output and MSE), a
    :class:`fasttrap.TorchModel` for the conv nets, whose image shape and classes come from ``ds``."""
    arch = cfg["model.arch"]
    if arch == "mlp":
        return MLP(cfg["model.widths"], cfg["model.activation"], cfg["model.loss"], cfg["model.output"])
    if arch == "toy":
        return MLP(cfg["model.widths"], "relu", "mse", "sigmoid")
    if ds is None:
        raise ValueError(f"ds: model.arch {arch!r} takes its image shape and classes from the data set")
    return module_of(arch, ds.image_shape, ds.n_classes, cfg["model.loss"], cfg["model.output"],
                     bool(cfg.get("model.compile", False)))


@functools.lru_cache(maxsize=8)
def module_of(arch: str, image_shape: tuple[int, int, int], n_classes: int, loss: str, output: str,
              compile: bool = False) -> Any:
    """The conv net ``arch`` as a TorchModel, built once per process. Its construction draws from
    torch's global generator, so it runs inside a forked one (the caller's stream is left as it was);
    the parameters a run uses come from :meth:`TorchModel.init` (seeded), not from the construction."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return zoo.build(arch, tuple(image_shape), n_classes, loss=loss, output=output, compile=compile)

