"""Settings of a run: one schema, two profiles, TOML files and ``--set key=value`` overrides.

Every setting has a dotted name (``inner.epochs``), a type, a default, and (where it is a choice)
its valid values; :func:`describe` prints them all for ``--help``. A setting can come from the
profile, then a TOML file (``[inner]`` / ``epochs = 10``), then ``--set``, later ones winning. An
unknown key or a bad value is rejected with a message that lists what is valid.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..dynamics import solvers

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A setting is unknown or has an invalid value (the message lists the valid choices)."""


@dataclass(frozen=True)
class Setting:
    type: str                      # int | float | bool | str | ints | floats
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    empty: bool = False            # a list setting that may be empty


S = Setting
SCHEMA: dict[str, Setting] = {
    # data
    "data.name": S("str", "mnist", "data set: 'mnist' (embedded), 'fashion-mnist' (Debian's package) or a directory of IDX files"),
    "data.normalize": S("str", "default", "input normalisation", ("default", "mnist", "fashion-mnist", "standardize", "none")),
    "data.train_rows": S("int", 0, "use the first this-many training images (0: all); normalisation statistics come "
                         "from the whole set", min=0),
    "data.test_rows": S("int", 0, "use the first this-many test images (0: all)", min=0),
    # model
    "model.arch": S("str", "mlp", "network: 'mlp' (fasttrap.MLP with model.widths, the compiled core), 'toy' (one hidden "
                    "ReLU layer, sigmoid output, MSE: an MLP), 'smallnet' (two conv + two dense layers) or 'resnet18' "
                    "(GroupNorm; small-image stem); the conv nets are torch modules on the torch path",
                    ("mlp", "toy", "smallnet", "resnet18")),
    "model.compile": S("bool", False, "torch.compile the per-sample gradients of a conv net (model.arch smallnet or "
                       "resnet18) for the gradient noise D(t): 1.45-3.4x faster after a compile of 18-22 s"),
    "model.widths": S("ints", [784, 100, 100, 10], "layer widths n0, ..., nL (n0 must match the data, nL its classes)"),
    "model.activation": S("str", "relu", "hidden activation", ("relu", "tanh", "sigmoid", "linear")),
    "model.loss": S("str", "nll", "loss", ("nll", "mse")),
    "model.output": S("str", "identity", "output map before mse", ("identity", "sigmoid")),
    # outer SGD
    "outer.seeds": S("int", 1, "number of seeds (independent outer runs)", min=1),
    "outer.seed_offset": S("int", 0, "first seed; seeds are seed_offset, seed_offset+1, ...", min=0),
    "outer.lr": S("float", 0.1, "outer SGD learning rate", min=0),
    "outer.batch_size": S("int", 128, "outer SGD minibatch size", min=1),
    "outer.steps": S("int", 150, "outer SGD steps (the training curve runs this far)", min=1),
    "outer.curve_points": S("int", 30, "log-spaced steps at which full train/test loss and accuracy are computed", min=2),
    # the window of outer points analysed
    "window.start": S("int", 1, "first outer step analysed", min=0),
    "window.stop": S("int", 100, "last outer step analysed (inclusive)", min=1),
    "window.every": S("int", 1, "analyse every this-many outer steps", min=1),
    # inner descent
    "inner.epochs": S("float", 100.0, "inner epochs per outer point", min=0),
    "inner.lr": S("floats", [0.1, 0.01], "inner learning rate: one value, or one per regime (see inner.regime_split)"),
    "inner.regime_split": S("int", 50, "outer steps <= this use inner.lr[0], later ones inner.lr[1]", min=0),
    "inner.lr_rule": S("str", "fixed", "'fixed': inner.lr; 'auto': each run's lr = inner.lr_c / lambda_max(H)^2 at its "
                       "start point (descent on G is linearly stable for lr < 2/lambda_max^2)", ("fixed", "auto")),
    "inner.lr_c": S("float", 1.0, "the constant c of inner.lr_rule = 'auto' (1: half the stability limit)", min=0),
    "inner.lr_rows": S("int", 2048, "training rows of the Hessian whose lambda_max sets or checks each run's lr", min=1),
    "inner.batch_size": S("int", 128, "inner minibatch size", min=1),
    "inner.batches": S("str", "shared", "minibatch order: 'shared' (common random numbers) or 'independent'", ("shared", "independent")),
    "inner.method": S("str", "sgd", "inner solver (fasttrap.dynamics.solvers): 'sgd' (minibatch G), 'gd' (full-batch "
                      "G), 'newton_mr' (Newton-MR on the full-batch loss, float64; inner.epochs counts iterations) "
                      "or 'sgd+newton_mr' (SGD, then inner.newton_mr.polish_steps Newton-MR iterations); its "
                      "settings are inner.<solver>.*", tuple(solvers.SOLVERS)),
    "inner.block": S("int", 0, "start points per block, the unit of saving and resuming (0: all of them on a GPU, 25 on a CPU)", min=0),
    "inner.G_tol": S("float", 5e-11, "converged when G < G_tol (5e-11 is |grad L|^2 < 1e-10)", min=0),
    "inner.growth": S("float", 1e8, "diverged when G > growth x G(start); 0 disables", min=0),
    "inner.blowup": S("float", 1e3, "a run whose recorded G rose above this multiple of its start is flagged 'blowup' "
                      "and not counted, even if it came back", min=1),
    "inner.norm_growth": S("float", 10.0, "a run whose weight norm grew by more than this factor is flagged 'blowup'", min=1),
    "inner.dtype": S("str", "float32", "precision of the inner descent", ("float32", "float64")),
    "inner.eval_rows": S("int", 0, "training rows used to evaluate loss, G and accuracy at the endpoints (0: all)", min=0),
    "inner.checkpoints": S("floats", [0.25, 0.5, 0.75], "fractions of the inner budget at which every endpoint's loss, "
                           "G and distances are also kept, at no extra descent: the report shows whether each trap "
                           "change is already there at each fraction ([] for none)", empty=True),
    "inner.record_every": S("int", 0, "record minibatch G every this many inner steps (0: about 200 points)", min=0),
    # every solver's own settings, inner.<solver>.* (declared on the solver: fasttrap.dynamics.solvers)
    **{k: S(v["type"], v["default"], v["help"], min=v["min"]) for k, v in solvers.run_settings().items()},
    # segmentation
    "traps.dist_ratio": S("float", 2.0, "boundary when |θ*_t - θ*_t-1| exceeds this multiple of the outer step", min=0),
    "traps.peak_window": S("int", 0, "a boundary must be the largest distance ratio within +-this many points", min=0),
    "traps.confirm": S("bool", True, "require a step in the endpoint loss or G to confirm a boundary"),
    "traps.loss_step": S("float", 1e-3, "relative step in the endpoint loss that confirms a boundary", min=0),
    "traps.G_step": S("float", 0.1, "step in ln G at the endpoint that confirms a boundary", min=0),
    "traps.adaptive": S("bool", True, "raise the distance threshold to Otsu's split when the window's log-ratios are clearly bimodal"),
    "traps.bimodality": S("float", 0.8, "share of the log-ratio variance Otsu's split must explain to adapt", min=0, max=1),
    "traps.split": S("int", 80, "outer step splitting early from late trapping times", min=0),
    "traps.rule": S("str", "ledge", "the trapping times reported: 'ledge' (a trap changes where the endpoint distance and "
                    "the endpoint-loss step both stand clear of their rerun noise, fasttrap.analysis.ledges), "
                    "'cluster' (endpoints clustered at a multiple of the within-trap scale, the rule of earlier "
                    "versions) or 'consecutive' (the consecutive-jump rule above)", ("ledge", "cluster", "consecutive")),
    # the ledge rule (fasttrap.analysis.ledges): signals in units of the rerun noise
    "ledges.threshold": S("float", 3.0, "a step is a trap change when it exceeds this many units of its rerun noise "
                          "(the noise unit: the identity.quantile of the rerun differences)", min=0),
    "ledges.min_gap": S("float", 1.5, "separation: the empty interval between within-trap and between-trap steps must "
                        "span at least this ratio", min=1),
    "ledges.max_share": S("float", 0.5, "refuse when more than this share of the steps are trap changes (every step moves)",
                          min=0, max=1),
    "ledges.max_spread": S("float", 10.0, "a window with no trap change is one trap only if its endpoint loss spans at most "
                           "this many noise units (each trap's drift is reported)",
                           min=0),
    "ledges.max_disputed": S("float", 0.1, "refuse when more than this share of the trap changes are seen by only one of "
                             "the distance and the loss", min=0, max=1),
    # trap identity by clustering (fasttrap.analysis.identity)
    "identity.multiple": S("float", 3.0, "the clustering cut, in units of the measured within-trap scale", min=0),
    "identity.quantile": S("float", 0.9, "the within-trap scale is this quantile of the distances between endpoints "
                           "that must be one trap (another batch seed, half the budget)", min=0, max=1),
    "identity.linkage": S("str", "average", "hierarchical clustering linkage", ("average", "single", "complete")),
    # sensitivity: real reruns of the inner stage with another batch seed and with half the budget
    "sensitivity.enabled": S("bool", True, "rerun the inner stage with batch seed run.seed+1 at every sensitivity.every-th "
                             "start point: the reruns measure the noise of every endpoint signal at the same budget"),
    "sensitivity.every": S("int", 4, "the reruns start from every this-many start points of a window", min=1),
    "sensitivity.half": S("bool", False, "also rerun every start point with half the epochs (what runs made before the "
                          "checkpoints did; the checkpoints give the same evidence at no extra descent)"),
    "sensitivity.seeds": S("int", 0, "the reruns cover the first this-many seeds (0: all)", min=0),
    "sensitivity.n_bootstrap": S("int", 100, "bootstrap sets of the goodness-of-fit p in each row of the table", min=0),
    "sensitivity.seed_bootstrap": S("int", 1000, "resamples of the seeds for the confidence intervals", min=0),
    # regime 1, analysed apart (the reference study found a single trap there)
    "regime1.seeds": S("int", 0, "seeds whose regime-1 window (regime1.start-regime1.stop) is analysed apart, in "
                       "<run>/regime1 (0: none)", min=0),
    "regime1.start": S("int", 1, "first outer step of the regime-1 window", min=0),
    "regime1.stop": S("int", 50, "last outer step of the regime-1 window", min=1),
    # certification of the endpoints (fasttrap.certify): what each inner endpoint is
    "certify.enabled": S("bool", True, "certify the inner endpoints: minimum, saddle, gradient-flat or not converged"),
    "certify.every": S("int", 1, "certify every this-many endpoints of each seed's window", min=1),
    "certify.rows": S("int", 10000, "training rows of the full-batch loss the certificates use (0: all)", min=0),
    "certify.grad_tol": S("float", 1e-10, "critical point when |grad L|^2 on those rows is below this", min=0),
    "certify.rule": S("str", "bound", "sign rule: 'bound' (negative beyond the solver's own error bound) or 'eps' "
                      "(below -eps x lambda_max: the rule of runs made before 'bound'; it calls shallow saddles minima)",
                      choices=("bound", "eps")),
    "certify.safety": S("float", 10.0, "rule 'bound': the factor on the measured rounding of the products", min=1),
    "certify.eps": S("float", 1e-4, "rule 'eps' only: eigenvalues below -eps x lambda_max count as negative", min=0),
    "certify.gf_cut": S("float", 0.9, "gradient-flat when the MINRES residual |Hp+g|/|g| reaches this", min=0, max=1),
    "certify.lanczos_steps": S("int", 40, "Lanczos steps for lambda_min, lambda_max and the index", min=2),
    "certify.k": S("int", 8, "smallest Ritz values first inspected for the index", min=1),
    "certify.k_max": S("int", 16, "the index search doubles k up to this (a larger index is reported as capped)", min=1),
    "certify.slq_probes": S("int", 1, "SLQ probe vectors for the negative fraction (0: none)", min=0),
    "certify.minres_iters": S("int", 40, "MINRES steps for the gradient-flat residual", min=1),
    "certify.krylov": S("str", "one", "'one': the index search continues the first Lanczos run and that run is the "
                        "first SLQ probe; 'separate': a fresh run per doubling of k and SLQ probes of their own (the "
                        "certificates of runs made before 'one')", choices=("one", "separate")),
    "certify.products": S("str", "float32", "dtype of the Hessian-vector products of the Lanczos, SLQ and MINRES runs "
                          "(the sign margin tau is measured from their own rounding; the gradient and loss are float64; "
                          "runs made before this setting used float64)", choices=("float32", "float64")),
    # sharpness along the outer path (off by default): the Hessian at the outer points, beside the traps
    "sharpness.every": S("int", 0, "record the full-batch Hessian's top eigenvalues and SLQ density at every "
                         "this-many outer points of each seed's window, to read beside the trap changes (0: off)", min=0),
    "sharpness.rows": S("int", 5000, "training rows of the full-batch loss (0: all)", min=0),
    "sharpness.k": S("int", 3, "top Hessian eigenvalues per point (Lanczos)", min=1),
    "sharpness.probes": S("int", 2, "SLQ probes per point for the density and the trace", min=1),
    "sharpness.steps": S("int", 40, "Lanczos steps per SLQ probe", min=2),
    # statistics
    "stats.n_bootstrap": S("int", 200, "bootstrap sets for the power-law goodness-of-fit p (0: skip)", min=0),
    "stats.min_samples": S("int", 10, "fewest complete trapping times for which a fit is attempted", min=10),
    # aging and diffusion (python -m fasttrap.run --analysis aging); the outer SGD settings
    # outer.seeds, outer.seed_offset, outer.lr, outer.batch_size and outer.curve_points apply
    "aging.hidden": S("str", "100-100,5-5", "hidden widths of the networks compared, comma-separated (input and "
                      "output widths come from the data), e.g. '100-100,5-5'"),
    "aging.steps": S("int", 10000, "SGD steps of each aging run", min=2),
    "aging.n_tw": S("int", 6, "number of waiting times t_w (log-spaced in [aging.tw_min, aging.steps/2])", min=1),
    "aging.tw_min": S("int", 10, "smallest waiting time", min=1),
    "aging.n_lags": S("int", 40, "number of lags t (log-spaced in [1, aging.steps - aging.tw_min])", min=1),
    "aging.noise_rows": S("int", 0, "training rows over which the gradient noise D(t) is computed (0: all)", min=0),
    "aging.eval_rows": S("int", 0, "rows of each set for the loss/accuracy curves (0: all)", min=0),
    "aging.checkpoint_every": S("int", 0, "SGD steps between checkpoints of an aging run (0: 20 per run)", min=0),
    "aging.dtype": S("str", "float32", "precision of the aging runs", ("float32", "float64")),
    # run
    # spectral densities (python -m fasttrap.run --analysis spectra): real against random labels
    "spectra.train_rows": S("int", 2000, "training images the nets are trained on until they memorise them (the "
                            "first ones; the random labels are drawn once for these, from run.seed)", min=10),
    "spectra.esd_rows": S("int", 2000, "inputs of every ESD: the first this-many of the training subset, and of the "
                          "test set", min=1),
    "spectra.target_loss": S("float", 0.01, "both label kinds are trained to this training loss ('end'); 'mid' is the "
                             "first check below sqrt(initial loss x target)", min=0),
    "spectra.max_steps": S("int", 100000, "SGD steps at most; a seed that has not reached the target by then is "
                           "flagged in the report", min=1),
    "spectra.check_every": S("int", 100, "SGD steps between evaluations of the training loss", min=1),
    "spectra.spikes": S("int", -1, "top eigenvalues counted as class spikes, fitted with and without (-1: the number "
                        "of classes)", min=-1),
    "spectra.hessian_k": S("int", 5, "top Hessian eigenvalues by Lanczos at every checkpoint", min=1),
    "spectra.hessian_probes": S("int", 4, "SLQ probes of the Hessian density", min=1),
    "spectra.hessian_steps": S("int", 60, "Lanczos steps per SLQ probe", min=2),
    # swap moves (python -m fasttrap.run --analysis swap), and a move inside the other analyses' SGD
    "swap.protocols": S("str", "auto", "comma-separated protocols: baseline and any of pixels, channels, rows, "
                        "columns, paired, kick ('auto': baseline and every move the data allows)"),
    "swap.seeds": S("int", 10, "seeds of the swap study (paired: the same seeds, initial weights and batch order "
                    "for every protocol)", min=1),
    "swap.pairs": S("ints", [1, 8], "intensities: exchanges per move (per image for data moves)"),
    "swap.every": S("ints", [1], "frequencies: a move every this-many steps"),
    "swap.images": S("int", 0, "images of each minibatch a data move touches (0: all)", min=0),
    "swap.layer": S("int", 1, "the layer weight moves act on (1-based; paired needs a hidden layer)", min=1),
    "swap.metropolis": S("bool", False, "accept moves by Metropolis on the minibatch loss at swap.temperature "
                         "(false: accept every move)"),
    "swap.temperature": S("float", 0.01, "Metropolis temperature T (accept with min(1, exp(-dL/T)))", min=0),
    "swap.measure_every": S("int", 10, "without Metropolis, measure dL of the moves every this-many steps for the "
                            "record (0: never)", min=0),
    "swap.steps": S("int", 1500, "SGD steps of every run of the swap study", min=1),
    "swap.eval_every": S("int", 50, "steps between evaluations of the training and test curves", min=1),
    "swap.eval_rows": S("int", 2000, "rows of each set the curves are evaluated on (0: all)", min=0),
    "swap.target_acc": S("floats", [0.8, 0.9], "training accuracies whose steps-to-target are compared (the last "
                         "is the primary endpoint of the verdicts)"),
    "swap.target_loss": S("floats", [0.5, 0.3], "training losses whose steps-to-target are compared"),
    "swap.n_bootstrap": S("int", 2000, "bootstrap resamples of the speed-up intervals", min=10),
    "swap.apply": S("str", "", "a move inside the outer SGD of the traps and aging analyses: '' (none) or one of "
                    "pixels, channels, rows, columns, paired, kick, with swap.layer, the first of swap.pairs and of "
                    "swap.every, swap.images, swap.metropolis and swap.temperature"),
    "run.backend": S("str", "auto", "compute backend", ("auto", "cpu", "cuda", "torch")),
    "run.threads": S("int", 0, "CPU threads of the compiled core (0: all available)", min=0),
    "run.seed": S("int", 0, "seed of the inner batch order and of the bootstrap", min=0),
    "run.executor": S("str", "local", "where the blocks run: 'local' (this process) or 'dask' (tasks on a Dask "
                      "cluster: run.scheduler, or a new one of cluster.kind; pip install \"fasttrap[dask]\")",
                      ("local", "dask")),
    "run.scheduler": S("str", "", "address of a running Dask scheduler (tcp://host:port) for run.executor = 'dask' "
                       "('': start a cluster of cluster.kind)"),
    # a cluster started for run.executor = "dask" (dask distributed; dask-jobqueue for the batch systems)
    "cluster.kind": S("str", "local", "'local' (worker processes on this machine) or a batch system through "
                      "dask-jobqueue", ("local", "slurm", "pbs", "sge", "lsf")),
    "cluster.workers": S("int", 2, "worker processes (local) or jobs of one worker each (batch systems)", min=1),
    "cluster.threads": S("int", 1, "threads per worker (the compiled core uses them)", min=1),
    "cluster.cores": S("int", 0, "cores per batch job (0: cluster.threads)", min=0),
    "cluster.memory": S("str", "8GB", "memory per batch job"),
    "cluster.walltime": S("str", "02:00:00", "wall-time limit per batch job"),
    "cluster.queue": S("str", "", "queue / partition of the batch jobs ('': the system's default)"),
    "cluster.account": S("str", "", "account / project the batch jobs are charged to"),
    "cluster.job_extra": S("str", "", "extra scheduler directives, ';'-separated (e.g. '--gres=gpu:1;--constraint=a100')"),
    "cluster.python": S("str", "", "the Python the batch jobs start workers with ('': this one)"),
    "cluster.adaptive_max": S("int", 0, "scale adaptively up to this many jobs instead of cluster.workers (0: fixed)", min=0),
}

ANALYSES = ("traps", "aging", "spectra", "swap")

PROFILES: dict[str, dict[str, Any]] = {
    # The smallest miniature of the thesis protocol (below) whose traps pass the ledge rule: the
    # same outer path (raw pixels, lr 0.1, batch 128, seed 0), every outer step of 60-73 (the stretch
    # of regime 2 where the reference path changes trap at 63, 66, 69 and 73), 25 inner epochs at
    # lr 0.01 with independent batch orders (the smallest measured budget whose trap changes agree
    # with 100 epochs: docs/recorded/thesis-subwindow-100ep), reruns at every 4th point, loss and G
    # on 10,000 rows. About 3 minutes on a 2-core CPU (docs/recorded/quick).
    "quick": {
        "data.normalize": "none",
        "outer.seeds": 1,
        "outer.steps": 73,
        "window.start": 60,
        "window.stop": 73,
        "window.every": 1,
        "regime1.seeds": 0,
        "inner.epochs": 25.0,
        "inner.lr": [0.1, 0.01],
        "inner.regime_split": 50,
        "inner.batches": "independent",
        "inner.block": 25,
        "inner.eval_rows": 10000,
        "stats.n_bootstrap": 100,
        "traps.split": 67,
        "certify.every": 7,
        "certify.rows": 5000,
    },
    # The reference protocol as the reference study ran it (DESIGN §1):
    #  * raw [0, 1] pixels. The study does not say how it preprocessed MNIST, but its phases do:
    #    little improvement over steps 1-50, then a rapid one over 51-150. That is the raw-pixel path
    #    (full training loss 2.31 / 1.83 / 0.57 at steps 0 / 51 / 150, docs/recorded/thesis-cpu);
    #    standardised inputs give 2.31 / 0.57 / 0.33 and a sharper Hessian, where inner lr 0.1 is
    #    past the stability limit 2/lambda_max^2 (the `thesis-standardized` profile keeps that
    #    variant: the comparison is itself a finding);
    #  * trapping times from regime 2 (outer steps 51-150, 9 seeds), regime 1 (steps 1-50, 3 seeds)
    #    apart, where the study found a single trap;
    #  * inner lr 0.1 up to step 50 and 0.01 after, 100 epochs of batch 128, each inner run with its
    #    own batch order ("the same hyper-parameters as the outer SGD");
    #  * early/late split at trap start 80 within regime 2.
    # Certificates: every endpoint on 10,000 rows; the reruns on the first 3 seeds.
    "thesis": {
        "data.normalize": "none",
        "outer.seeds": 9,
        "outer.steps": 150,
        "window.start": 51,
        "window.stop": 150,
        "regime1.seeds": 3,
        "inner.epochs": 100.0,
        "inner.lr": [0.1, 0.01],
        "inner.regime_split": 50,
        "inner.batches": "independent",
        "inner.block": 0,
        "stats.n_bootstrap": 1000,
        "traps.split": 80,
        "certify.rows": 10000,
        "sensitivity.seeds": 3,
    },
}
# The thesis protocol on fasttrap's default standardised inputs (the variant of earlier versions).
PROFILES["thesis-standardized"] = PROFILES["thesis"] | {"data.normalize": "default"}

# Profiles of the aging analysis (python -m fasttrap.run --analysis aging --profile ...).
AGING_PROFILES: dict[str, dict[str, Any]] = {
    # 100-100 against 5-5 on the embedded MNIST, 2 seeds, 10^4 SGD steps of batch 100 at lr 0.1:
    # a few minutes on a 2-core CPU.
    "quick": {
        "outer.seeds": 2,
        "outer.lr": 0.1,
        "outer.batch_size": 100,
        "outer.curve_points": 30,
        "aging.hidden": "100-100,5-5",
        "aging.steps": 10000,
        "aging.n_tw": 6,
        "aging.n_lags": 40,
    },
    # Ten times longer, more seeds and waiting times: the late regime where the two nets part.
    "long": {
        "outer.seeds": 5,
        "outer.lr": 0.1,
        "outer.batch_size": 100,
        "outer.curve_points": 40,
        "aging.hidden": "100-100,5-5",
        "aging.steps": 100000,
        "aging.n_tw": 8,
        "aging.n_lags": 50,
    },
    # The aging paper's settings (Baity-Jesi et al. 2018). Its fully connected net on MNIST at batch 128
    # and lr 0.01: 100-100 against 5-5 (NLL), 10^5 steps, 3 seeds.
    "paper-fc": {
        "outer.seeds": 3,
        "outer.lr": 0.01,
        "outer.batch_size": 128,
        "outer.curve_points": 40,
        "aging.hidden": "100-100,5-5",
        "aging.steps": 100000,
        "aging.n_tw": 8,
        "aging.n_lags": 50,
    },
    # Its toy model (one hidden ReLU layer, sigmoid output, MSE) at batch 100 and lr 0.1. The paper ran it
    # on CIFAR-10; here on MNIST (set data.name to a CIFAR-10 directory to follow it): hidden width 100
    # (P = 79,510 > N = 60,000, over-parametrised) against width 4 (P = 3,190, under-parametrised).
    "paper-toy": {
        "model.arch": "toy",
        "model.loss": "mse",
        "model.output": "sigmoid",
        "outer.seeds": 3,
        "outer.lr": 0.1,
        "outer.batch_size": 100,
        "outer.curve_points": 40,
        "aging.hidden": "100,4",
        "aging.steps": 100000,
        "aging.n_tw": 8,
        "aging.n_lags": 50,
    },
    # The small conv net (two conv + two dense layers, torch.func path) on Fashion-MNIST, 2 seeds, 3,000
    # steps of batch 100 at lr 0.1, the curves and D(t) on 2,000 rows: a few minutes on 2 cores.
    "smallnet": {
        "model.arch": "smallnet",
        "data.name": "fashion-mnist",
        "outer.seeds": 2,
        "outer.lr": 0.1,
        "outer.batch_size": 100,
        "outer.curve_points": 20,
        "aging.steps": 3000,
        "aging.n_tw": 6,
        "aging.n_lags": 30,
        "aging.noise_rows": 2000,
        "aging.eval_rows": 2000,
    },
}


# Profiles of the spectra analysis (python -m fasttrap.run --analysis spectra --profile ...): the
# reference net on MNIST trained to the same training loss on real and on (fixed) random labels.
SPECTRA_PROFILES: dict[str, dict[str, Any]] = {
    # 5 paired seeds, 2,000 training images (memorised in ~1,000-2,000 steps), ESDs on 2,000 train
    # and 2,000 test inputs (the 2,000 x 2,000 Gram side): minutes on a 2-core CPU.
    "quick": {
        "outer.seeds": 5,
        "outer.lr": 0.1,
        "outer.batch_size": 100,
        "spectra.train_rows": 2000,
        "spectra.esd_rows": 2000,
        "spectra.check_every": 50,
        "spectra.hessian_probes": 2,
        "spectra.hessian_steps": 40,
    },
    # 10 paired seeds, 10,000 training images, ESDs on 10,000 inputs (the 7,840 x 7,840 JᵀJ side,
    # as in the draft), the Hessian density with 4 probes of 80 steps.
    "full": {
        "outer.seeds": 10,
        "outer.lr": 0.1,
        "outer.batch_size": 100,
        "spectra.train_rows": 10000,
        "spectra.esd_rows": 10000,
        "spectra.max_steps": 300000,
        "spectra.check_every": 250,
        "spectra.hessian_probes": 4,
        "spectra.hessian_steps": 80,
    },
}

# Profiles of the swap study (python -m fasttrap.run --analysis swap --profile ...): the reference net
# on MNIST, every protocol against the baseline on the same seeds.
SWAP_PROFILES: dict[str, dict[str, Any]] = {
    # 10 paired seeds, intensities 1 and 8 exchanges per move at every step, 1,500 steps: minutes on 2 cores.
    # Baseline: train acc 0.9 at ~200 steps, 0.95 at ~600, on the 2,000 evaluated rows.
    "quick": {"outer.lr": 0.1, "outer.batch_size": 128, "swap.seeds": 10, "swap.pairs": [1, 8], "swap.every": [1],
              "swap.steps": 1500, "swap.eval_every": 25, "swap.eval_rows": 2000, "swap.target_acc": [0.9, 0.95],
              "swap.target_loss": [0.3, 0.15]},
    # 20 paired seeds, intensities 1, 8 and 32 at every step and every 10th, 3,000 steps, curves on 5,000 rows.
    "full": {"outer.lr": 0.1, "outer.batch_size": 128, "swap.seeds": 20, "swap.pairs": [1, 8, 32],
             "swap.every": [1, 10], "swap.steps": 3000, "swap.eval_every": 50, "swap.eval_rows": 5000,
             "swap.target_acc": [0.9, 0.95, 0.97], "swap.target_loss": [0.3, 0.15, 0.1]},
}

ALL_PROFILES = {"traps": PROFILES, "aging": AGING_PROFILES, "spectra": SPECTRA_PROFILES, "swap": SWAP_PROFILES}


def profiles(analysis: str) -> dict[str, dict[str, Any]]:
    """The profiles of an analysis ('traps', 'aging' or 'spectra')."""
    if analysis not in ANALYSES:
        raise ConfigError(f"unknown analysis {analysis!r}; valid analyses: {', '.join(ANALYSES)}")
    return ALL_PROFILES[analysis]


def model_label(cfg: dict[str, Any]) -> str:
    """The network of the settings in words, for reports."""
    arch = cfg["model.arch"]
    if arch == "mlp":
        return f"MLP ({cfg['model.activation']}, {cfg['model.loss']})"
    if arch == "toy":
        return "toy model (one hidden ReLU layer, sigmoid output, MSE)"
    what = "two conv + two dense layers" if arch == "smallnet" else "ResNet-18, GroupNorm"
    return f"{arch} ({what}; {cfg['model.loss']}; torch.func path)"


def hidden_widths(cfg: dict[str, Any]) -> list[list[int]]:
    """aging.hidden parsed: one list of hidden widths per network ('100-100,5-5' -> [[100, 100], [5, 5]])."""
    nets = []
    for part in str(cfg["aging.hidden"]).split(","):
        part = part.strip()
        try:
            w = [int(x) for x in part.split("-")] if part else []
        except ValueError:
            w = []
        if not w or min(w) < 1:
            raise ConfigError(f"aging.hidden: cannot read {part!r} as hidden widths like '100-100' "
                              f"(got {cfg['aging.hidden']!r}; e.g. '100-100,5-5')")
        nets.append(w)
    return nets


def _coerce(key: str, s: Setting, v: Any) -> Any:
    def bad(what: str) -> ConfigError:
        msg = f"{key}: {what}"
        if s.choices:
            msg += f"; valid choices: {', '.join(map(str, s.choices))}"
        return ConfigError(msg + f" ({s.help})")

    t = s.type
    try:
        if t == "int":
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise bad(f"expected an integer, got {v!r}")
            v = int(v)
        elif t == "float":
            if isinstance(v, bool):
                raise bad(f"expected a number, got {v!r}")
            v = float(v)
            if v != v or v in (float("inf"), float("-inf")):
                raise bad(f"expected a finite number, got {v!r}")
        elif t == "bool":
            if isinstance(v, str):
                if v.lower() in ("true", "1", "yes", "on"):
                    v = True
                elif v.lower() in ("false", "0", "no", "off"):
                    v = False
                else:
                    raise bad(f"expected true or false, got {v!r}")
            elif not isinstance(v, bool):
                raise bad(f"expected true or false, got {v!r}")
        elif t == "str":
            if not isinstance(v, str):
                raise bad(f"expected a string, got {v!r}")
        elif t in ("ints", "floats"):
            if isinstance(v, str):
                v = [x for x in v.replace("[", "").replace("]", "").split(",") if x.strip()]
            if not isinstance(v, (list, tuple)) or (not v and not s.empty):
                raise bad(f"expected a non-empty list, got {v!r}")
            conv = int if t == "ints" else float
            out = []
            for x in v:
                if isinstance(x, bool):
                    raise bad(f"expected numbers, got {x!r}")
                xv = conv(x) if not isinstance(x, str) else conv(x.strip())
                if t == "ints" and isinstance(x, float) and not x.is_integer():
                    raise bad(f"expected integers, got {x!r}")
                out.append(xv)
            v = out
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise bad(f"cannot read {v!r} as {t}") from None
    if s.choices is not None and key != "data.name" and v not in s.choices:
        raise bad(f"invalid value {v!r}")
    vals = v if isinstance(v, list) else [v]
    for x in vals:
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            if s.min is not None and x < s.min:
                raise bad(f"must be >= {s.min:g}, got {x!r}")
            if s.max is not None and x > s.max:
                raise bad(f"must be <= {s.max:g}, got {x!r}")
    return v


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _check_key(key: str) -> Setting:
    if key not in SCHEMA:
        import difflib

        close = difflib.get_close_matches(key, SCHEMA, n=3)
        if close:
            raise ConfigError(f"unknown setting {key!r} (did you mean {', '.join(close)}?); "
                              "python -m fasttrap.run --help lists every setting")
        sec = key.split(".", 1)[0]
        same = [k for k in SCHEMA if k.startswith(sec + ".")]
        raise ConfigError(f"unknown setting {key!r}; " + (f"the {sec}.* settings are {', '.join(same)}" if same else
                          f"the sections are {', '.join(sorted({k.split('.')[0] for k in SCHEMA}))}")
                          + "; python -m fasttrap.run --help lists every setting")
    return SCHEMA[key]


def resolve(profile: str = "quick", toml_path: str | Path | None = None, overrides: list[str] | None = None,
            analysis: str = "traps") -> dict[str, Any]:
    """The full flat configuration: schema defaults < profile < TOML file < ``key=value`` overrides."""
    profs = profiles(analysis)
    if profile not in profs:
        raise ConfigError(f"unknown profile {profile!r} for the {analysis} analysis; valid profiles: {', '.join(profs)}")
    cfg = {k: copy.deepcopy(s.default) for k, s in SCHEMA.items()}
    for k, v in profs[profile].items():
        cfg[k] = _coerce(k, _check_key(k), v)
    if toml_path is not None:
        p = Path(toml_path)
        try:
            data = tomllib.loads(p.read_bytes().decode())
        except OSError as exc:
            raise ConfigError(f"--config {p}: cannot be read ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--config {p}: not a TOML file (it is not UTF-8 text; binary?)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {p}: not valid TOML ({exc})") from None
        for k, v in _flatten(data).items():
            cfg[k] = _coerce(k, _check_key(k), v)
    cfg["analysis"] = analysis          # before the checks: some depend on the analysis
    cfg = apply_overrides(cfg, overrides or [])
    cfg["profile"] = profile
    return cfg


def is_execution_setting(key: str) -> bool:
    """Settings that say where a run executes, not what it computes (they may change on --resume)."""
    return key in ("run.executor", "run.scheduler", "run.threads") or key.startswith("cluster.")


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``cfg`` with ``key=value`` overrides applied and checked (a copy)."""
    cfg = dict(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set inner.epochs=5")
        k, v = item.split("=", 1)
        k = k.strip()
        s = _check_key(k)
        raw: Any = v.strip()
        if s.type in ("int", "float") and raw.lower() in ("true", "false"):
            raise ConfigError(f"{k}: expected a number, got {raw!r}")
        cfg[k] = _coerce(k, s, raw)
    validate(cfg)
    return cfg


def validate(cfg: dict[str, Any]) -> None:
    """Checks that involve several settings."""
    if cfg["window.stop"] < cfg["window.start"]:
        raise ConfigError(f"window.stop ({cfg['window.stop']}) is before window.start ({cfg['window.start']})")
    if cfg["window.stop"] > cfg["outer.steps"]:
        raise ConfigError(f"window.stop ({cfg['window.stop']}) is beyond outer.steps ({cfg['outer.steps']})")
    if len(cfg["inner.lr"]) not in (1, 2):
        raise ConfigError("inner.lr: give one learning rate, or two (before and after inner.regime_split)")
    if any(x <= 0 for x in cfg["inner.lr"]):
        raise ConfigError("inner.lr: learning rates must be > 0")
    if cfg["outer.lr"] <= 0:
        raise ConfigError("outer.lr: must be > 0")
    if 0 < cfg["inner.growth"] <= 1:
        raise ConfigError("inner.growth: must be > 1, or 0 to disable")
    ck = cfg["inner.checkpoints"]
    if any(not 0 < f < 1 for f in ck) or any(b <= a for a, b in zip(ck, ck[1:])):
        raise ConfigError(f"inner.checkpoints: expected increasing fractions in (0, 1), e.g. [0.25, 0.5, 0.75]; got {ck}")
    try:         # the solver checks its own settings (the lr it gets per block is checked in inner.lr above)
        solvers.from_settings(cfg, lr=cfg["inner.lr"][0])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"inner.{cfg['inner.method']}: {exc}") from None
    if ck and not solvers.SOLVERS[cfg["inner.method"]].checkpoints:
        ok = [k for k, c in solvers.SOLVERS.items() if c.checkpoints]
        raise ConfigError(f"inner.checkpoints: inner.method {cfg['inner.method']!r} keeps no checkpoints; give "
                          f"inner.checkpoints=[] or an inner.method that does ({', '.join(ok)})")
    if len(cfg["model.widths"]) < 2 or min(cfg["model.widths"]) < 1:
        raise ConfigError("model.widths: need at least two widths, each >= 1")
    if cfg["model.loss"] == "nll" and cfg["model.output"] != "identity":
        raise ConfigError("model.output: loss 'nll' needs output 'identity'")
    hidden_widths(cfg)
    arch, analysis = cfg["model.arch"], cfg.get("analysis", "traps")
    if arch in ("smallnet", "resnet18") and analysis in ("spectra", "swap"):
        raise ConfigError(f"model.arch: the {analysis} analysis runs fasttrap.MLP networks ('mlp' or 'toy'); "
                          f"{arch!r} is a torch module (the {analysis} kernels are the MLP core's)")
    if arch == "toy" and analysis != "aging" and len(cfg["model.widths"]) != 3:
        raise ConfigError(f"model.widths: the toy model has one hidden layer, so three widths [n0, h, C]; got "
                          f"{cfg['model.widths']}")
    if arch == "toy" and analysis == "aging" and any(len(h) != 1 for h in hidden_widths(cfg)):
        raise ConfigError(f"aging.hidden: the toy model has one hidden layer; give one width per network, e.g. "
                          f"'100,4' (got {cfg['aging.hidden']!r})")
    rows = cfg["data.train_rows"]
    for key in ("outer.batch_size", "inner.batch_size"):
        if rows and cfg[key] > rows:
            raise ConfigError(f"{key} = {cfg[key]} is larger than the training set data.train_rows = {rows}; "
                              f"give data.train_rows >= {cfg[key]} or a smaller {key}")
    if cfg["certify.k_max"] < cfg["certify.k"]:
        raise ConfigError(f"certify.k_max ({cfg['certify.k_max']}) must be >= certify.k ({cfg['certify.k']})")
    if cfg["regime1.seeds"]:
        if cfg["regime1.stop"] < cfg["regime1.start"]:
            raise ConfigError(f"regime1.stop ({cfg['regime1.stop']}) is before regime1.start ({cfg['regime1.start']})")
        if cfg["regime1.stop"] > cfg["outer.steps"]:
            raise ConfigError(f"regime1.stop ({cfg['regime1.stop']}) is beyond outer.steps ({cfg['outer.steps']})")
    if not cfg["swap.pairs"] or min(cfg["swap.pairs"]) < 1:
        raise ConfigError("swap.pairs: give at least one intensity, each >= 1")
    if not cfg["swap.every"] or min(cfg["swap.every"]) < 1:
        raise ConfigError("swap.every: give at least one frequency, each >= 1")
    if not cfg["swap.target_acc"] or not all(0 < a <= 1 for a in cfg["swap.target_acc"]):
        raise ConfigError("swap.target_acc: give at least one training accuracy, each in (0, 1]")
    if any(x <= 0 for x in cfg["swap.target_loss"]):
        raise ConfigError("swap.target_loss: training losses must be > 0")
    kinds = ("pixels", "channels", "rows", "columns", "paired", "kick")
    if cfg["swap.apply"] and cfg["swap.apply"] not in kinds:
        raise ConfigError(f"swap.apply: expected '' or one of {', '.join(kinds)}, got {cfg['swap.apply']!r}")
    if cfg["swap.protocols"] != "auto":
        bad = [p for p in str(cfg["swap.protocols"]).split(",") if p.strip() not in ("baseline", *kinds)]
        if bad:
            raise ConfigError(f"swap.protocols: unknown {', '.join(map(repr, bad))}; valid: 'auto', or comma-separated "
                              f"baseline, {', '.join(kinds)}")
    if cfg["spectra.esd_rows"] > cfg["spectra.train_rows"]:
        raise ConfigError(f"spectra.esd_rows ({cfg['spectra.esd_rows']}) must be <= spectra.train_rows "
                          f"({cfg['spectra.train_rows']}): the training-input ESD uses the first rows of that subset")
    if cfg["aging.tw_min"] >= cfg["aging.steps"]:
        raise ConfigError(f"aging.tw_min ({cfg['aging.tw_min']}) must be below aging.steps ({cfg['aging.steps']})")


def regime1_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings of the regime-1 companion run (``<run>/regime1``): the same protocol on the first
    ``regime1.seeds`` seeds and the window ``regime1.start``–``regime1.stop``."""
    sub = dict(cfg)
    # the early/late split of the main window means nothing in regime 1: split regime 1 at its middle
    sub.update({"outer.seeds": cfg["regime1.seeds"], "window.start": cfg["regime1.start"],
                "window.stop": cfg["regime1.stop"], "regime1.seeds": 0,
                "traps.split": (cfg["regime1.start"] + cfg["regime1.stop"] + 1) // 2,
                "profile": f"{cfg.get('profile', '?')} (regime 1)"})
    sub["inner.lr"] = list(cfg["inner.lr"])
    validate(sub)
    return sub


def window_steps(cfg: dict[str, Any]) -> list[int]:
    return list(range(cfg["window.start"], cfg["window.stop"] + 1, cfg["window.every"]))


def to_toml(cfg: dict[str, Any]) -> str:
    """The resolved configuration as TOML (grouped by section)."""
    sections: dict[str, list[str]] = {}
    for k, v in cfg.items():
        if "." not in k:
            continue
        sec, name = k.split(".", 1)
        sections.setdefault(sec, []).append(f"{name} = {_toml_value(v)}")
    lines = ["# fasttrap run configuration: every setting, resolved", f"analysis = {_toml_value(cfg.get('analysis', 'traps'))}",
             f"profile = {_toml_value(cfg.get('profile', '?'))}"]
    for sec, items in sections.items():
        lines += ["", f"[{sec}]", *items]
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def describe() -> str:
    """Every setting, its default, choices and meaning (for --help)."""
    out = ["settings (give with --set key=value, or in a TOML file with [section] tables):"]
    for k, s in SCHEMA.items():
        ch = f" {{{', '.join(map(str, s.choices))}}}" if s.choices and k != "data.name" else ""
        out.append(f"  {k:<22} {s.type:<6} default {s.default!r}{ch}")
        out.append(f"      {s.help}")
    out.append("")
    for analysis in ANALYSES:
        out.append(f"profiles of --analysis {analysis} (the settings they change):")
        for name, p in profiles(analysis).items():
            out.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in p.items()))
    return "\n".join(out)


NEUTRAL_LATER = ("model.arch", "model.compile", "data.train_rows", "data.test_rows", "ledges.threshold",
                 "ledges.min_gap", "ledges.max_share", "ledges.max_disputed", "ledges.max_spread", "certify.safety",
                 *solvers.run_settings())
# settings added later whose *old* behaviour is a value other than the default: a run made before
# them gets the value that reproduces what it computed
AS_MADE_BEFORE = {"inner.checkpoints": [], "sensitivity.every": 1, "sensitivity.half": True, "certify.rule": "eps",
                  "certify.krylov": "separate", "certify.products": "float64"}


def keys_in(path: str | Path) -> set[str]:
    """The dotted keys written in a saved ``config.toml`` (to tell a missing line from a default)."""
    data = _read_toml(Path(path))
    data.pop("profile", None)
    return set(_flatten(data)) | ({"analysis"} if "analysis" in data else set())


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode())
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a TOML file (it is not UTF-8 text; binary?)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def from_saved(path: str | Path, fill_missing: bool = False) -> dict[str, Any]:
    """The settings of a run directory's ``config.toml``, checked as a fresh resolve would check them.

    ``fill_missing`` gives settings added since the run was made their defaults (for reading an
    older run; resuming one refuses instead, since its later stages would change).

    Raises:
        ConfigError: the file is missing, names an unknown analysis or key, or lacks a setting.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path.parent}: no config.toml there (is it a fasttrap run directory?)")
    data = _read_toml(path)
    profile = data.pop("profile", None)
    analysis = data.pop("analysis", "traps")
    if analysis not in ANALYSES:
        raise ConfigError(f"{path.parent}: config.toml names an unknown analysis {analysis!r}")
    cfg = {k: _coerce(k, _check_key(k), v) for k, v in _flatten(data).items()}
    # settings added later whose defaults compute exactly what runs made before them computed: an
    # older run resumes with them
    for k in NEUTRAL_LATER:
        cfg.setdefault(k, copy.deepcopy(SCHEMA[k].default))
    for k, v in AS_MADE_BEFORE.items():
        cfg.setdefault(k, copy.deepcopy(v))
    missing = set(SCHEMA) - set(cfg)
    if missing and fill_missing:
        cfg |= {k: copy.deepcopy(SCHEMA[k].default) for k in missing}
    elif missing:
        raise ConfigError(f"{path.parent}: config.toml lacks {sorted(missing)} (made by an older fasttrap?)")
    cfg["analysis"] = analysis
    validate(cfg)
    cfg["profile"] = profile or "?"
    return cfg
