"""report.md and the figures of a trapping-time run, one function per section.

Everything is read back through the public readers of :mod:`fasttrap.run.rundir`, never from the
stages, so a report can be rewritten from a run directory alone. Science readings (regimes of the
training curve, power-law verdicts) come from :mod:`fasttrap.analysis`; this module only writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...analysis.curves import regimes
from ...analysis.powerlaw import PowerLawFit
from ...common import store
from .. import config as cfgmod, plots, rundir
from .common import fmt, stage_table


@dataclass
class _Inputs:
    """What the sections read, loaded once."""

    cfg: dict[str, Any]
    manifest: dict[str, Any]
    seeds: list[int]
    curves: dict[str, np.ndarray]          # step [C]; train_loss, … [S, C]
    steps: np.ndarray                      # [N] outer step of every start point
    start_seeds: np.ndarray                # [N]
    inner: dict[str, np.ndarray]           # as rundir.inner_results
    status: np.ndarray                     # [N] str
    traps_json: dict[str, Any]
    traps_npz: dict[str, np.ndarray]
    fits: dict[str, Any]                   # stats.json
    groups: dict[str, np.ndarray]          # complete trapping times: all, early, late
    certs: dict[int, dict[str, np.ndarray]]  # per seed, as rundir.certificates (empty: none)


def _load(run: rundir.Run) -> _Inputs:
    cfg, d = run.cfg, run.dir
    outs = {s: store.read_npz(d / "outer" / f"seed_{s}.npz") for s in run.seeds}
    curves = {"step": outs[run.seeds[0]]["curve_steps"]}
    for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
        curves[k] = np.stack([outs[s][k] for s in run.seeds])
    _, steps, seeds = rundir.start_points(run)
    inn = rundir.inner_results(run)
    tz = store.read_npz(d / "traps.npz")
    split_idx = int(np.searchsorted(rundir.load_indicators(run, run.seeds[0]).steps, cfg["traps.split"]))
    ok = ~tz["censored"] & ~tz["flagged"]
    groups = {"all": tz["lengths"][ok], "early": tz["lengths"][ok & (tz["starts"] < split_idx)],
              "late": tz["lengths"][ok & (tz["starts"] >= split_idx)]}
    return _Inputs(cfg=cfg, manifest=run.manifest, seeds=run.seeds, curves=curves, steps=steps, start_seeds=seeds,
                   inner=inn, status=inn["status"].astype(str), traps_json=store.read_json(d / "traps.json"),
                   traps_npz=tz, fits=store.read_json(d / "stats.json"), groups=groups,
                   certs={s: c for s in run.seeds if (c := rundir.certificates(run, s)) is not None})


def figures(run: rundir.Run, x: _Inputs) -> None:
    """Every figure of the run, each with the arrays it shows."""
    cfg, fig = x.cfg, run.dir / "figures"
    plots.training_curves(x.curves, fig / "training_curves", window=(cfg["window.start"], cfg["window.stop"]))
    first = x.seeds[0]
    m0 = x.start_seeds == first
    plots.G_start_end(x.steps[m0], x.inner["G_start"][m0], x.inner["train_G"][m0], x.status[m0],
                      fig / f"G_start_end_seed{first}", title=f"inner runs of seed {first}: G at start and end")
    plots.G_traces(x.inner["trace_steps"], x.inner["G_trace"][m0], x.steps[m0], fig / f"G_traces_seed{first}")
    for s in x.seeds[:3]:
        ind = rundir.load_indicators(run, s)
        b = x.traps_npz[f"boundaries_{s}"]
        plots.indicators(ind, b, fig / f"indicators_seed{s}",
                         title=f"seed {s}: {len(b)} trap boundaries in steps {ind.steps[0]}–{ind.steps[-1]}")
    for s in list(x.certs)[:3]:
        c = x.certs[s]
        plots.certificates(c["steps"], c, x.traps_npz[f"boundary_steps_{s}"], fig / f"certificates_seed{s}",
                           grad_tol=cfg["certify.grad_tol"], title=f"seed {s}: what the endpoints are")
    fits = {k: PowerLawFit(**{f: v[f] for f in PowerLawFit.__dataclass_fields__ if f in v}) for k, v in x.fits.items()
            if "skipped" not in v}
    plots.trapping_times(x.groups, fits, fig / "trapping_times",
                         title=f"trapping times, {len(x.seeds)} seed(s); early/late split at step {cfg['traps.split']}")


def section_header(x: _Inputs) -> list[str]:
    """Title, data, model, versions, and the time each stage took (executed model-steps/s)."""
    cfg, man = x.cfg, x.manifest
    lines = ["# fasttrap report", "",
             f"Profile **{cfg['profile']}**, {len(x.seeds)} seed(s) ({', '.join(map(str, x.seeds))}), "
             f"{man['data']['name']} ({man['data']['train'][0]:,} training images), "
             f"MLP {'-'.join(map(str, cfg['model.widths']))} ({cfg['model.activation']}, {cfg['model.loss']}). "
             f"Backend: {man.get('backend_resolved')}. fasttrap {man['versions']['fasttrap']}, torch {man['versions']['torch']}.",
             "", *stage_table(man)]
    ist = man["stages"].get("inner", {})
    if ist.get("model_steps_per_s"):
        lines += ["", f"Inner stage: {ist.get('models')} start points × {ist.get('n_steps')} steps scheduled; "
                      f"{ist.get('model_steps', 0):,} model-steps executed (models stop when they converge or fail), "
                      f"{ist['model_steps_per_s']:,.0f} executed model-steps/s."]
    return lines


def section_training(x: _Inputs) -> list[str]:
    """The outer path: settings, regimes of the loss, the curve table and figure."""
    cfg, c = x.cfg, x.curves
    reg = regimes(c["step"], np.nanmean(c["train_loss"], axis=0))
    lines = ["", "## Training", "",
             f"Outer SGD, lr {cfg['outer.lr']}, batch {cfg['outer.batch_size']}, {cfg['outer.steps']} steps. "
             f"Trap window: outer steps {cfg['window.start']}–{cfg['window.stop']} (every {cfg['window.every']}).", ""]
    if reg.get("fast_until") is not None:
        lines += [f"Regimes: the training loss falls fastest around step {reg['peak_rate_at']:.0f} "
                  f"({reg['peak_rate']:.2f} per decade of steps); the fast phase ends near step {reg['fast_until']:.0f}, "
                  f"after which it falls at {reg['final_rate']:.2f} per decade.", ""]
    lines += ["| step | train loss | test loss | train acc | test acc |", "|---:|---:|---:|---:|---:|"]
    for i, s in enumerate(c["step"]):
        lines.append(f"| {int(s)} | {np.nanmean(c['train_loss'][:, i]):.4f} | {np.nanmean(c['test_loss'][:, i]):.4f} | "
                     f"{np.nanmean(c['train_acc'][:, i]):.3f} | {np.nanmean(c['test_acc'][:, i]):.3f} |")
    return lines + ["", "![training curves](figures/training_curves.png)"]


def section_inner(x: _Inputs) -> list[str]:
    """The inner descents: settings, statuses by regime, G and loss at the valid endpoints."""
    cfg, status, inn = x.cfg, x.status, x.inner
    reg1 = x.steps <= cfg["inner.regime_split"]
    lines = ["", "## Inner runs", "",
             f"{len(status)} inner descents on G, {cfg['inner.epochs']:g} epochs each "
             f"({cfg['inner.method']}, batch {cfg['inner.batch_size']}, {cfg['inner.batches']} batches), "
             f"lr {cfg['inner.lr'][0]} for outer steps ≤ {cfg['inner.regime_split']}"
             + (f" and {cfg['inner.lr'][-1]} after." if len(cfg['inner.lr']) > 1 else "."), "",
             "| status | all | steps ≤ regime split | later |", "|---|---:|---:|---:|"]
    for n, c in zip(*np.unique(status, return_counts=True)):
        lines.append(f"| {n} | {c} | {int(((status == n) & reg1).sum())} | {int(((status == n) & ~reg1).sum())} |")
    if "lambda_max" in inn:
        lam, lr, bad = inn["lambda_max"], inn["lr"], inn["lr_unstable"].astype(bool)
        rule = ("set to " + f"{cfg['inner.lr_c']:g}/λ_max² per run (`inner.lr_rule = \"auto\"`)"
                if cfg["inner.lr_rule"] == "auto" else "fixed")
        lines += ["", f"Stability (λ_max(H) at each start point by 20 Lanczos steps on {cfg['inner.lr_rows']:,} rows; "
                      f"descent on G is linearly stable only for lr < 2/λ_max²): lr {rule}; median λ_max "
                      f"{fmt(np.median(lam[reg1])) if reg1.any() else '–'} for outer steps ≤ {cfg['inner.regime_split']}, "
                      f"{fmt(np.median(lam[~reg1])) if (~reg1).any() else '–'} after; **{int(bad.sum())} of {bad.size} runs "
                      f"have lr·λ_max² > 2** ({int((bad & reg1).sum())} and {int((bad & ~reg1).sum())}), "
                      f"median lr·λ_max² {fmt(np.median(lr * lam ** 2))}."]
    valid = np.isin(status, ["max_steps", "converged"])
    if valid.any():
        lines += ["", f"At the valid endpoints: median G {np.nanmedian(inn['train_G'][valid]):.3g} "
                      f"(from a median {np.nanmedian(inn['G_start'][valid]):.3g} at the start), median loss "
                      f"{np.nanmedian(inn['train_loss'][valid]):.4f}, median accuracy {np.nanmedian(inn['train_acc'][valid]):.3f}."]
    first = x.seeds[0]
    return lines + ["", f"![G at start and end](figures/G_start_end_seed{first}.png)", "",
                    f"![G along inner runs](figures/G_traces_seed{first}.png)"]


def section_certificates(x: _Inputs) -> list[str]:
    """What the endpoints are: kinds per regime, the distributions behind them, the figure."""
    cfg = x.cfg
    lines = ["", "## What the endpoints are", ""]
    if not x.certs:
        return lines + ["The endpoints were not certified (`certify.enabled = false`): nothing here says whether "
                        "they are critical points. Read them as **budget-defined endpoints**: where a fixed budget of "
                        "descent stopped."]
    c = {k: np.concatenate([v[k] for v in x.certs.values()]) for k in next(iter(x.certs.values()))}
    n_all = int(sum(np.isfinite(x.inner["theta"][x.start_seeds == s]).all(1).sum() for s in x.certs))
    lines += [f"{c['kind'].size} of {n_all} finite endpoints certified (every {cfg['certify.every']} of each window), on "
              f"the full-batch loss of the first {cfg['certify.rows'] or 'all'} training rows, float64: ‖∇L‖², the "
              f"extreme Hessian eigenvalues and the index by Lanczos ({cfg['certify.lanczos_steps']} steps), the "
              f"gradient-flat residual ‖Hp + g‖/‖g‖ of MINRES (the index counts the Ritz values below −ε·λ_max: a "
              f"lower bound by interlacing unless Lanczos spans the whole space). Rule (`fasttrap.certify`): a critical point needs "
              f"‖∇L‖² < {cfg['certify.grad_tol']:g}; it is a minimum when no eigenvalue lies below "
              f"−{cfg['certify.eps']:g}·λ_max, else a saddle; a non-critical endpoint is gradient-flat when the "
              f"residual is ≥ {cfg['certify.gf_cut']:g}, else not converged.", "",
              "| regime | certified | minimum | saddle | gradient-flat | not converged | median ‖∇L‖² | median λ_min | median index (≥) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    split = cfg["inner.regime_split"]
    crit_share = {}
    for name, m in ((f"steps ≤ {split}", c["steps"] <= split), (f"steps > {split}", c["steps"] > split),
                    ("all", np.ones(c["steps"].size, bool))):
        n = int(m.sum())
        if n == 0:
            continue
        cnt = {k: int((c["kind"][m] == k).sum()) for k in ("minimum", "saddle", "gradient_flat", "not_converged")}
        crit_share[name] = (cnt["minimum"] + cnt["saddle"]) / n
        cells = " | ".join(f"{v} ({100 * v / n:.0f}%)" for v in cnt.values())
        lines.append(f"| {name} | {n} | {cells} | {fmt(np.median(c['grad_sq'][m]))} | {fmt(np.median(c['lambda_min'][m]))} | "
                     f"{fmt(np.median(c['index'][m]))} |")
    segk = x.traps_json.get("segments_by_certificate", {})
    if segk:
        lines += ["", "Traps (segments) by what their certified endpoints are: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(segk.items())) + "."]
    if crit_share.get("all", 0) < 0.5:
        lines += ["", f"**Only {100 * crit_share.get('all', 0):.0f}% of the certified endpoints are critical points.** "
                      "The endpoints below are therefore **budget-defined endpoints** — where a fixed budget of descent on G "
                      "stopped — not traps in the sense of critical points of the loss; the trapping times are those of "
                      "these endpoints."]
    for s in list(x.certs)[:3]:
        lines += ["", f"![certificates, seed {s}](figures/certificates_seed{s}.png)"]
    return lines


def section_traps(x: _Inputs) -> list[str]:
    """Boundaries per seed and the trapping-time summary (complete, censored, flagged)."""
    cfg, tz, tj = x.cfg, x.traps_npz, x.traps_json
    lines = ["", "## Traps", "",
             "Boundaries by the rule of `fasttrap.traps` with "
             + ", ".join(f"{k}={v}" for k, v in rundir.thresholds(cfg).items()) + ".", "",
             "| seed | traps (segments) | boundaries at outer steps |", "|---:|---:|---|"]
    for s in x.seeds:
        bs = tz[f"boundary_steps_{s}"]
        shown = ", ".join(map(str, bs[:25].tolist())) + (" …" if len(bs) > 25 else "")
        lines.append(f"| {s} | {tj['traps_per_seed'][str(s)]} | {shown or '–'} |")
    lines += ["", "Trapping times (outer steps; complete segments only: the first and last of each window are "
                  "censored, segments of diverged/non-finite endpoints are flagged and excluded):", "",
              "| group | complete | censored | flagged | mean | variance | median | max |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for g in ("all", "early", "late"):
        v = tj["summary"].get(g, {})
        lines.append(f"| {g} | {v.get('n', 0)} | {v.get('n_censored', 0)} | {v.get('n_flagged', 0)} | {fmt(v.get('mean'))} | "
                     f"{fmt(v.get('var'))} | {fmt(v.get('median'))} | {fmt(v.get('max'))} |")
    lines += ["", f"Early: segments starting before outer step {cfg['traps.split']}; late: the others.", ""]
    for s in x.seeds[:3]:
        lines += [f"![indicators, seed {s}](figures/indicators_seed{s}.png)", ""]
    return lines


def section_power_law(x: _Inputs) -> list[str]:
    """The CSN fits of each group, their comparisons and verdicts."""
    lines = ["## Power law", "",
             "Discrete power-law MLE with x_min by KS distance (Clauset, Shalizi & Newman 2009), its standard error "
             "from the observed Fisher information of the discrete likelihood, bootstrap "
             f"goodness-of-fit p ({x.cfg['stats.n_bootstrap']} synthetic sets; p ≥ 0.1: plausible), and likelihood-ratio "
             "tests against alternatives (R > 0 favours the power law; p < 0.1: significant). A tail with fewer than "
             "5 distinct values, or spanning less than a decade above x_min, is *not testable*: no p-value can "
             "tell a power law there from anything else.", "",
             "| group | α | x_min | tail / n | distinct in tail | decades | KS | bootstrap p | vs exponential R (p) | vs lognormal R (p) | vs truncated R (p) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for g in ("all", "early", "late"):
        v = x.fits.get(g, {})
        if "skipped" in v:
            lines.append(f"| {g} | – | – | – | – | – | – | – | – | – | {v['skipped']} |")
            continue
        c = v["comparisons"]
        cmp = " | ".join(f"{fmt(c[a]['R'])} ({fmt(c[a]['p'], 2)})" for a in ("exponential", "lognormal", "truncated_power_law"))
        lines.append(f"| {g} | {v['alpha']:.2f} ± {v['alpha_err']:.2f} | {v['xmin']:g} | {v['n_tail']}/{v['n']} | "
                     f"{v.get('tail_distinct', '–')} | {fmt(v.get('tail_decades'), 2)} | {v['ks']:.3f} | "
                     f"{fmt(v['p_value'], 2)} | {cmp} |")
        verdicts.append(f"- **{g}**: {v['verdict']}")
    return lines + ["", *verdicts, "", "![trapping times](figures/trapping_times.png)"]


def section_settings(x: _Inputs) -> list[str]:
    """The resolved settings, as TOML."""
    return ["", "## Settings", "", "```toml", cfgmod.to_toml(x.cfg).rstrip(), "```", ""]


def summary(d: Path, x: _Inputs) -> str:
    """The few lines printed at the end of the run."""
    a = x.traps_json["summary"]["all"]
    fa = x.fits.get("all", {})
    st_names, st_counts = np.unique(x.status, return_counts=True)
    return "\n".join([f"run directory: {d}",
                      "inner runs: " + ", ".join(f"{c} {n}" for n, c in zip(st_names, st_counts)),
                      f"traps: {sum(x.traps_json['traps_per_seed'].values())} segments over {len(x.seeds)} seed(s); "
                      f"{a['n']} complete trapping times (mean {fmt(a.get('mean'))}, max {fmt(a.get('max'))})",
                      "power law (all): " + (fa["verdict"] if "verdict" in fa else fa.get("skipped", "–")),
                      f"report: {d / 'report.md'}"])


def write_report(run: rundir.Run) -> str:
    """Figures and report.md of a trapping-time run; returns the summary printed at the end."""
    x = _load(run)
    figures(run, x)
    lines = (section_header(x) + section_training(x) + section_inner(x) + section_certificates(x) + section_traps(x)
             + section_power_law(x) + section_settings(x))
    store.write_text(run.dir / "report.md", "\n".join(lines))
    return summary(run.dir, x)
