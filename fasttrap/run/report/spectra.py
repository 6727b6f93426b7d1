"""report.md and the figures of a spectra run: does the Jacobian ESD separate real from random labels?

The numbers come from the stored spectra and their metrics (:mod:`fasttrap.run.stages.spectra`,
:mod:`fasttrap.analysis.esd`); every comparison is paired by seed (same initial weights and batch
order), with a Student-t interval over seeds (:func:`fasttrap.analysis.esd.paired_difference`).

**Primary endpoint**, fixed before any run: α of the Jacobian ESD with the class spikes removed, on
test inputs, at the end of training (the draft's question is whether α separates the two). The
other metrics, inputs and checkpoints are reported beside it; with ~20 secondary comparisons at 95%,
about one is expected to "separate" by chance, which the report says.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...analysis.esd import paired_difference, seed_interval
from ...common import store
from ...model.data import Dataset
from .. import plots
from .common import fmt, stage_table

# The design of the study, shared with its stage (fasttrap.run.stages.spectra imports them from here).
LABELS = ("real", "random")
CHECKPOINTS = ("init", "mid", "end")
INPUTS = ("train", "test")


def n_spikes(cfg: dict[str, Any], ds: Dataset) -> int:
    """How many top eigenvalues count as class spikes: ``spectra.spikes``, or the number of classes."""
    return ds.n_classes if cfg["spectra.spikes"] < 0 else cfg["spectra.spikes"]

# (key in the metrics, what the report calls it, how to read it from one ESD's metrics dict)
JAC_METRICS = [
    ("alpha_no_spikes", "α (spikes removed)", lambda m: m["fit_no_spikes"]["alpha"]),
    ("alpha", "α (all eigenvalues)", lambda m: m["fit"]["alpha"]),
    ("lambda_max", "λ_max", lambda m: m["lambda_max"]),
    ("stable_rank", "stable rank Σλ/λ_max", lambda m: m["stable_rank"]),
    ("hard_rank", "hard rank", lambda m: m["hard_rank"]),
    ("entropy", "matrix entropy", lambda m: m["entropy"]),
]
HESS_METRICS = [
    ("lambda_max", "Hessian λ_max", lambda h: h["lambda_max"]),
    ("trace", "Hessian trace (Hutchinson)", lambda h: h["trace"]),
]
PRIMARY = ("test", "end", "alpha_no_spikes")


def load_metrics(run: Any) -> dict[str, list[dict[str, Any]]]:
    """{label: [metrics json of each seed, in seed order]}."""
    return {lab: [store.read_json(run.dir / "spectra" / f"esd_{lab}_seed{s}.json") for s in run.seeds]
            for lab in LABELS}


def per_seed(metrics: dict[str, list[dict[str, Any]]], label: str, ck: str, what: str, inputs: str | None,
             read: Any) -> np.ndarray:
    """[S] one metric of every seed: the Jacobian ESD on ``inputs`` or, with inputs None, the Hessian
    (NaN where it could not be computed, e.g. too few non-zero eigenvalues for a tail fit)."""
    out = []
    for m in metrics[label]:
        row = m["checkpoints"][ck]
        v = read(row[f"jacobian_{inputs}"] if inputs else row["hessian"])
        out.append(float("nan") if v is None else float(v))          # NaN is stored as JSON null
    return np.asarray(out)


def comparisons(metrics: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every paired comparison, real − random: {(inputs | 'hessian', checkpoint, metric): paired_difference}."""
    out = {}
    for ck in CHECKPOINTS:
        for inp in INPUTS:
            for key, _, read in JAC_METRICS:
                out[(inp, ck, key)] = paired_difference(per_seed(metrics, "real", ck, key, inp, read),
                                                        per_seed(metrics, "random", ck, key, inp, read))
        for key, _, read in HESS_METRICS:
            out[("hessian", ck, key)] = paired_difference(per_seed(metrics, "real", ck, key, None, read),
                                                          per_seed(metrics, "random", ck, key, None, read))
    return out


def _ci(d: dict[str, float], nd: int = 3) -> str:
    if d["n"] < 2 or not np.isfinite(d["lo"]):
        return fmt(d["mean"], nd)
    return f"{fmt(d['mean'], nd)} [{fmt(d['lo'], nd)}, {fmt(d['hi'], nd)}]"


def _verdict_word(c: dict[str, Any]) -> str:
    if c["diff"]["n"] < 2:
        return "too few seeds"
    if c["diff"]["sd"] == 0 and c["diff"]["mean"] == 0:
        return "identical (same weights)"
    return ("**separated**: real > random" if c["direction"] == "a > b" else "**separated**: real < random") \
        if c["separated"] else "no detectable difference"


def answer(cmp: dict[tuple[str, str, str], dict[str, Any]]) -> tuple[str, list[str]]:
    """The plain answer to the draft's question, from the primary endpoint; and the secondary metrics
    (Jacobian, end of training) that separate."""
    c = cmp[PRIMARY]
    d = c["diff"]
    if d["n"] < 2:
        head = "Not answerable with fewer than 2 seeds."
    elif c["separated"]:
        head = (f"**Yes.** α of the Jacobian ESD (class spikes removed, test inputs, end of training) separates real "
                f"from random labels at 95% confidence: real − random = {_ci(d)} over {d['n']} paired seeds "
                f"(real {_ci(c['a'])}, random {_ci(c['b'])}; {fmt(100 * c['relative'], 2)}% of the random-label "
                f"value; {fmt(abs(c['effect']), 2)} standard deviations of the per-seed difference).")
    else:
        head = (f"**No detectable separation** by α of the Jacobian ESD (class spikes removed, test inputs, end of "
                f"training): real − random = {_ci(d)} over {d['n']} paired seeds, an interval that contains 0 "
                f"(real {_ci(c['a'])}, random {_ci(c['b'])}).")
    sec = []
    for (inp, ck, key), v in cmp.items():
        if ck == "end" and inp != "hessian" and (inp, ck, key) != PRIMARY and v["separated"]:
            name = dict((k, n) for k, n, _ in JAC_METRICS)[key]
            sec.append(f"{name} on {inp} inputs: real − random = {_ci(v['diff'])} "
                       f"({fmt(100 * v['relative'], 2)}% of the random-label value)")
    return head, sec


def write_spectra_report(run: Any, ds: Dataset) -> str:
    """Figures and report.md of a spectra run; returns the short summary printed at the end."""
    cfg, d, man = run.cfg, run.dir, run.manifest
    fig = d / "figures"
    metrics = load_metrics(run)
    train = {lab: store.read_npz(d / "spectra" / f"train_{lab}.npz") for lab in LABELS}
    cmp = comparisons(metrics)
    S = len(run.seeds)
    spikes = n_spikes(cfg, ds)

    # figures
    s0 = run.seeds[0]
    esd = {lab: {k[4:]: v for k, v in store.read_npz(d / "spectra" / f"esd_{lab}_seed{s0}.npz").items()
                 if k.startswith("jac_")} for lab in LABELS}
    fits = {lab: {f"{inp}_{ck}": metrics[lab][0]["checkpoints"][ck][f"jacobian_{inp}"]["fit_no_spikes"]
                  for inp in INPUTS for ck in CHECKPOINTS} for lab in LABELS}
    plots.spectra_esd(esd, fits, fig / "jacobian_esd", title=f"Jacobian ESD, seed {s0} (dashed: power-law fit of the "
                                                                f"tail, {spikes} top eigenvalues removed)")
    panels: dict[str, Any] = {}
    for inp in INPUTS:
        for key, name, read in [JAC_METRICS[0], JAC_METRICS[2], JAC_METRICS[3], JAC_METRICS[5]]:
            panels[f"{name}, {inp} inputs"] = {lab: {ck: seed_interval(per_seed(metrics, lab, ck, key, inp, read))
                                                     for ck in CHECKPOINTS} for lab in LABELS}
    for key, name, read in HESS_METRICS:
        panels[name] = {lab: {ck: seed_interval(per_seed(metrics, lab, ck, key, None, read)) for ck in CHECKPOINTS}
                        for lab in LABELS}
    plots.spectra_metrics(panels, fig / "spectra_metrics", title=f"seed means and 95% intervals ({S} seeds)")
    dens = {}
    for lab in LABELS:
        z = store.read_npz(d / "spectra" / f"esd_{lab}_seed{s0}.npz")
        dens[lab] = (z["hess_nodes_end"], z["hess_weights_end"])
    plots.spectra_hessian(dens, fig / "hessian_density", title=f"Hessian SLQ density at the end of training, seed {s0}")
    plots.spectra_training({lab: {"steps": t["curve_steps"], "loss": t["curve_loss"], "acc": t["curve_acc"]}
                            for lab, t in train.items()}, cfg["spectra.target_loss"], fig / "training")

    head, sec = answer(cmp)
    n_tr, m = cfg["spectra.train_rows"], cfg["spectra.esd_rows"]
    kd = cfg["model.widths"][0] * cfg["model.widths"][-1]
    C, n1 = cfg["model.widths"][-1], cfg["model.widths"][1]
    rank_cap = min(m, kd, C * n1)
    lines = ["# fasttrap spectra report", "",
             f"Profile **{cfg['profile']}**: the {'-'.join(map(str, cfg['model.widths']))} {cfg['model.activation']} net "
             f"({cfg['model.loss']}) trained by SGD (lr {cfg['outer.lr']}, batch {cfg['outer.batch_size']}) on the "
             f"first {n_tr:,} training images of {man['data']['name']} ({man['data']['normalize']} inputs), once with "
             f"their real labels and once with fixed random labels, from the same initial weights and batch order "
             f"for each of {S} seeds ({', '.join(map(str, run.seeds))}), to training loss "
             f"{cfg['spectra.target_loss']}. Backend: {man.get('backend_resolved')}. fasttrap "
             f"{man['versions']['fasttrap']}, torch {man['versions']['torch']}.", "",
             "## The answer", "", head, ""]
    if sec:
        lines += ["Other Jacobian metrics that separate the two at the end of training (secondary; with about 20 "
                  "secondary comparisons at 95%, one may separate by chance):", ""] + [f"- {s}" for s in sec] + [""]
    else:
        lines += ["No other Jacobian metric separates the two at the end of training.", ""]
    lines += ["The Jacobian is the per-sample input→output Jacobian J_i = ∂f(x_i)/∂x_i of the logits; 𝒥 stacks "
              f"vec J_i as rows ({m:,} × {kd:,}) and the ESD is that of 𝒥ᵀ𝒥 (computed on the smaller of 𝒥ᵀ𝒥 and "
              "𝒥𝒥ᵀ, which share their non-zero eigenvalues). Metrics follow WeightWatcher's definitions "
              "(`fasttrap.analysis.esd`): α by the continuous CSN fit of the `powerlaw` package with λ_min by KS "
              f"distance, fitted on every non-zero eigenvalue and with the top {spikes} (the class spikes) removed; "
              "stable rank Σλ/λ_max; hard rank above λ_max·dim·ε; matrix entropy −Σp ln p / ln(rank). Intervals: "
              "95% Student-t over seeds; differences are paired by seed. At *init* the two conditions have the "
              "same weights, so every difference there is exactly 0: the control.", "",
              f"The rank of 𝒥 is at most min(N, C·n_1) = {rank_cap:,} here: J_i = A_i W_1 with A_i = ∂f/∂h_1 of size "
              f"C × n_1, so every vec J_i lies in one {C * n1:,}-dimensional subspace. The hard rank is therefore "
              "structural unless it falls below that bound, and α is fitted on at most that many eigenvalues.", ""]

    # training
    lines += ["## Training", "", "| labels | seeds at target | steps to mid | steps to end | train loss (end) | "
              "train acc (end) | test acc (end) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for lab, t in train.items():
        st = t["step"]
        lines.append(f"| {lab} | {int(t['reached'].sum())}/{S} | {_ci(seed_interval(st[:, 1]))} | "
                     f"{_ci(seed_interval(st[:, 2]))} | {_ci(seed_interval(t['train_loss'][:, 2]))} | "
                     f"{_ci(seed_interval(t['train_acc'][:, 2]))} | {_ci(seed_interval(t['test_acc'][:, 2]))} |")
    miss = [lab for lab, t in train.items() if not t["reached"].all()]
    if miss:
        lines += ["", f"**Not every seed reached the target** on {', '.join(miss)} labels within "
                      f"{cfg['spectra.max_steps']:,} steps: their *end* is their last point, at a higher loss, so the "
                      "comparison there is not at equal training loss."]
    lines += ["", "![training](figures/training.png)", ""]

    # the tables
    for inp in INPUTS:
        lines += [f"## Jacobian ESD on {inp} inputs ({m:,} {inp} images)", "",
                  "| metric | checkpoint | real labels | random labels | real − random | reading |",
                  "|---|---|---:|---:|---:|---|"]
        for key, name, _ in JAC_METRICS:
            for ck in CHECKPOINTS:
                c = cmp[(inp, ck, key)]
                star = " (primary)" if (inp, ck, key) == PRIMARY else ""
                nd = 6 if key == "hard_rank" else 3
                lines.append(f"| {name}{star} | {ck} | {_ci(c['a'], nd)} | {_ci(c['b'], nd)} | {_ci(c['diff'], nd)} | "
                             f"{_verdict_word(c)} |")
        lines.append("")
    lines += ["## Hessian of the training loss", "",
              f"Top {cfg['spectra.hessian_k']} eigenvalues by Lanczos (largest residual reported in the metrics), "
              f"density by SLQ ({cfg['spectra.hessian_probes']} probes × {cfg['spectra.hessian_steps']} steps), on "
              f"the {n_tr:,} training images with the labels each net was trained on.", "",
              "| metric | checkpoint | real labels | random labels | real − random | reading |", "|---|---|---:|---:|---:|---|"]
    for key, name, _ in HESS_METRICS:
        for ck in CHECKPOINTS:
            c = cmp[("hessian", ck, key)]
            lines.append(f"| {name} | {ck} | {_ci(c['a'])} | {_ci(c['b'])} | {_ci(c['diff'])} | {_verdict_word(c)} |")
    lines += ["", "## Figures", "", f"The Jacobian ESDs of seed {s0} with their fitted tails:", "",
              "![Jacobian ESD](figures/jacobian_esd.png)", "", "The metrics along training:", "",
              "![metrics](figures/spectra_metrics.png)", "", "The Hessian density at the end of training:", "",
              "![Hessian density](figures/hessian_density.png)", "", "## Stages", "", *stage_table(man), ""]
    store.write_json(d / "spectra.json", {
        "primary": {"inputs": PRIMARY[0], "checkpoint": PRIMARY[1], "metric": PRIMARY[2], **cmp[PRIMARY]},
        "comparisons": [{"inputs": k[0], "checkpoint": k[1], "metric": k[2], **v} for k, v in cmp.items()],
        "reached": {lab: t["reached"].tolist() for lab, t in train.items()},
        "steps": {lab: t["step"].tolist() for lab, t in train.items()}})
    store.write_text(d / "report.md", "\n".join(lines) + "\n")
    return "\n".join(["fasttrap spectra: " + head.replace("**", ""), f"report: {d / 'report.md'}"])
