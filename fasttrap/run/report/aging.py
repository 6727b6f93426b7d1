"""report.md and the figures of an aging run (the readings come from :mod:`fasttrap.analysis.aging`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...analysis.aging import AgingResult, aging_verdict, seed_mean, timescales, timescales_per_seed
from ...common import store
from .. import config as cfgmod, plots
from .common import fmt, stage_table


def write_aging_report(run: Any, nets: dict[str, Any]) -> str:
    """Figures and report.md of an aging run; returns the short summary printed at the end."""
    cfg, d, man = run.cfg, run.dir, run.manifest
    fig = d / "figures"
    res = {name: AgingResult.from_arrays(store.read_npz(d / "aging" / f"net_{name}.npz")) for name in nets}
    plots.aging_family(res, fig / "aging")
    plots.gradient_noise(res, fig / "gradient_noise")
    plots.aging_curves(res, fig / "training_curves")

    steps = cfg["aging.steps"]
    lines = ["# fasttrap aging report", "",
             f"Profile **{cfg['profile']}**, {len(run.seeds)} seed(s) ({', '.join(map(str, run.seeds))}), "
             f"{man['data']['name']} ({man['data']['train'][0]:,} training images); SGD lr {cfg['outer.lr']}, batch "
             f"{cfg['outer.batch_size']}, {steps:,} steps; {cfgmod.model_label(cfg)}. "
             f"Backend: {man.get('backend_resolved')}. fasttrap {man['versions']['fasttrap']}, torch {man['versions']['torch']}.",
             "", *stage_table(man)]
    lines += ["", "Δ(t_w, t_w+t) = (1/N) Σ_i (w_i(t_w+t) − w_i(t_w))² over all N weights and biases, "
                  "α₂ = Δ₄ / (3Δ²) − 1 (0 for Gaussian displacements). τ(t_w) is the lag at which the seed-mean Δ "
                  "reaches a common level (the geometric mean of all measured Δ of that network); μ is the slope of "
                  "log τ against log t_w (1: simple aging, 0: none), over all waiting times and over their first and "
                  "second halves; the per-seed range is μ of each seed alone at the same level. Reading rule: a half counts as aging where μ > 0.2; aging whose second-half μ falls below 0.2 "
                  "or below half its first-half μ is read as interrupted.", "",
              "| network | parameters | final train loss | final test acc | μ | μ per seed (min–max) | μ first half | "
              "μ second half | reading |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    summary = []
    details = []
    for name, r in res.items():
        ts = timescales(r.two_time)
        verdict = aging_verdict(ts)
        P = r.theta_final.shape[1]
        fin = np.nanmean(r.train_loss[:, -1]), np.nanmean(r.test_acc[:, -1])
        per = timescales_per_seed(r.two_time, ts["level"])["mu"]
        per = per[np.isfinite(per)]
        spread = f"{fmt(per.min())}–{fmt(per.max())}" if per.size > 1 else "–"
        lines.append(f"| {name} | {P:,} | {fmt(fin[0], 4)} | {fmt(fin[1])} | {fmt(ts['mu'])} | {spread} | "
                     f"{fmt(ts['mu_early'])} | {fmt(ts['mu_late'])} | {verdict} |")
        summary.append(f"{name}: {verdict} (μ = {fmt(ts['mu'])}, first half {fmt(ts['mu_early'])}, "
                       f"second half {fmt(ts['mu_late'])})")
        tt = r.two_time
        msd = seed_mean(tt.msd)
        common = tt.lags[(tt.lags > 0) & (tt.lags <= steps - tt.t_w[-1])]
        lag_ref = int(common[-1]) if common.size else None
        details += ["", f"### {name}", "", f"τ at the level Δ = {fmt(ts['level'])}" +
                    (f"; Δ at the common lag t = {lag_ref} (the longest every t_w reaches):" if lag_ref else ":"), "",
                    "| t_w | τ(t_w) | Δ(t_w, t_w+t) | α₂ there |", "|---:|---:|---:|---:|"]
        for w, tw in enumerate(tt.t_w):
            last = tt.lags[np.isfinite(msd[w])].max(initial=0)
            tau = f"> {last}" if ts["tau_beyond"][w] else fmt(ts["tau"][w])
            if lag_ref is not None:
                j = int(np.flatnonzero(tt.lags == lag_ref)[0])
                a2 = seed_mean(tt.non_gaussian[:, w, j:j + 1])[0]
                details.append(f"| {tw} | {tau} | {fmt(msd[w, j])} | {fmt(a2)} |")
            else:
                details.append(f"| {tw} | {tau} | – | – |")
        if ts["tau_beyond"].any():
            details += ["", "\"> t\": Δ stays below the level at every lag measured, so τ is longer than the run "
                            "allows; the slopes μ leave these waiting times out and understate the slowing there."]
        D = seed_mean(r.noise_D)
        i_max = int(np.nanargmax(D)) if np.isfinite(D).any() else 0
        details += ["", f"Gradient noise D(t) over {cfg['aging.noise_rows'] or 'all'} training rows: "
                        f"{fmt(D[0])} at step 0, peak {fmt(D[i_max])} at step {int(r.curve_steps[i_max])}, "
                        f"{fmt(D[-1])} at step {int(r.curve_steps[-1])} (‖∇L‖² there: "
                        f"{fmt(np.nanmean(r.noise_grad_sq[:, -1]))})."]
    lines += details
    lines += ["", "## Figures", "", "Δ against the lag, one curve per waiting time (seed mean), and α₂ below:", "",
              "![aging](figures/aging.png)", "", "Gradient noise D(t) (thin: single seeds) and ‖∇L‖²:", "",
              "![gradient noise](figures/gradient_noise.png)", "", "Training curves:", "",
              "![training curves](figures/training_curves.png)", ""]
    store.write_text(d / "report.md", "\n".join(lines) + "\n")
    return "\n".join(["fasttrap aging: " + s for s in summary] + [f"report: {d / 'report.md'}"])
