"""report.md and the figures of a run, from what the stages stored."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import config as cfgmod, plots, store, traps
from .stats import PowerLawFit


def regimes(steps: np.ndarray, loss: np.ndarray) -> dict[str, Any]:
    """Where the training loss stops falling fast.

    The loss's decrease per decade of steps, d(loss)/d(log10 step), is computed between the
    log-spaced curve points; the fast phase ends at the last point where that rate is still at
    least a quarter of its maximum. Returns the boundary step and the rates (a reading, not a fit).
    """
    s = np.asarray(steps, float)
    L = np.asarray(loss, float)
    keep = (s > 0) & np.isfinite(L)
    s, L = s[keep], L[keep]
    if s.size < 4:
        return {"fast_until": None, "note": "too few curve points"}
    rate = -np.diff(L) / np.diff(np.log10(s))
    mid = np.sqrt(s[1:] * s[:-1])
    peak = int(np.nanargmax(rate))
    fast = np.flatnonzero(rate >= 0.25 * rate[peak])
    end = int(fast[fast >= peak].max()) if fast.size else peak
    return {"fast_until": float(s[end + 1]), "peak_rate_at": float(mid[peak]), "peak_rate": float(rate[peak]),
            "final_rate": float(rate[-1])}


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if not np.isfinite(x):
        return "–"
    return f"{x:.{nd}g}"


def write_report(run: Any) -> str:
    from .pipeline import _inner_results, _load_indicators, _start_points, thresholds

    cfg, d = run.cfg, run.dir
    fig = d / "figures"
    man = run.manifest
    # ---- training curves
    outs = {s: store.read_npz(d / "outer" / f"seed_{s}.npz") for s in run.seeds}
    o0 = outs[run.seeds[0]]
    curves = {"step": o0["curve_steps"]}
    for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
        curves[k] = np.stack([outs[s][k] for s in run.seeds])
    plots.training_curves(curves, fig / "training_curves", window=(cfg["window.start"], cfg["window.stop"]))
    reg = regimes(curves["step"], np.nanmean(curves["train_loss"], axis=0))
    # ---- inner runs
    theta0, steps, seeds = _start_points(run)
    inn = _inner_results(run)
    status = inn["status"].astype(str)
    first = run.seeds[0]
    m0 = seeds == first
    plots.G_start_end(steps[m0], inn["G_start"][m0], inn["train_G"][m0], status[m0], fig / f"G_start_end_seed{first}",
                      title=f"inner runs of seed {first}: G at start and end")
    plots.G_traces(inn["trace_steps"], inn["G_trace"][m0], steps[m0], fig / f"G_traces_seed{first}")
    # ---- traps
    tj = store.read_json(d / "traps.json")
    tz = store.read_npz(d / "traps.npz")
    for s in run.seeds[:3]:
        ind = _load_indicators(run, s)
        plots.indicators(ind, tz[f"boundaries_{s}"], fig / f"indicators_seed{s}",
                         title=f"seed {s}: {len(tz[f'boundaries_{s}'])} trap boundaries in steps {ind.steps[0]}–{ind.steps[-1]}")
    fits_json = store.read_json(d / "stats.json")
    fits = {k: PowerLawFit(**{f: v[f] for f in PowerLawFit.__dataclass_fields__}) for k, v in fits_json.items()
            if "skipped" not in v}
    split_idx = int(np.searchsorted(_load_indicators(run, first).steps, cfg["traps.split"]))
    ok = ~tz["censored"] & ~tz["flagged"]
    groups = {"all": tz["lengths"][ok], "early": tz["lengths"][ok & (tz["starts"] < split_idx)],
              "late": tz["lengths"][ok & (tz["starts"] >= split_idx)]}
    plots.trapping_times(groups, fits, fig / "trapping_times",
                         title=f"trapping times, {len(run.seeds)} seed(s); early/late split at step {cfg['traps.split']}")

    # ---- the text
    summ = tj["summary"]
    st_names, st_counts = np.unique(status, return_counts=True)
    reg1 = steps <= cfg["inner.regime_split"]
    lines = [f"# fasttrap report", "",
             f"Profile **{cfg['profile']}**, {len(run.seeds)} seed(s) ({', '.join(map(str, run.seeds))}), "
             f"{man['data']['name']} ({man['data']['train'][0]:,} training images), "
             f"MLP {'-'.join(map(str, cfg['model.widths']))} ({cfg['model.activation']}, {cfg['model.loss']}). "
             f"Backend: {man.get('backend_resolved')}. fasttrap {man['versions']['fasttrap']}, torch {man['versions']['torch']}.",
             "", "| stage | seconds |", "|---|---:|"]
    for k, v in man["stages"].items():
        lines.append(f"| {k} | {v.get('seconds', 0):.1f} |")
    ist = man["stages"].get("inner", {})
    if ist.get("model_steps_per_s"):
        lines += ["", f"Inner stage: {ist.get('models')} start points × {ist.get('n_steps')} steps; "
                      f"{ist['model_steps_per_s']:,.0f} model-steps/s."]
    lines += ["", "## Training", "",
              f"Outer SGD, lr {cfg['outer.lr']}, batch {cfg['outer.batch_size']}, {cfg['outer.steps']} steps. "
              f"Trap window: outer steps {cfg['window.start']}–{cfg['window.stop']} (every {cfg['window.every']}).", ""]
    if reg.get("fast_until") is not None:
        lines.append(f"Regimes: the training loss falls fastest around step {reg['peak_rate_at']:.0f} "
                     f"({reg['peak_rate']:.2f} per decade of steps); the fast phase ends near step {reg['fast_until']:.0f}, "
                     f"after which it falls at {reg['final_rate']:.2f} per decade.")
        lines.append("")
    lines += ["| step | train loss | test loss | train acc | test acc |", "|---:|---:|---:|---:|---:|"]
    for i, s in enumerate(curves["step"]):
        lines.append(f"| {int(s)} | {np.nanmean(curves['train_loss'][:, i]):.4f} | {np.nanmean(curves['test_loss'][:, i]):.4f} | "
                     f"{np.nanmean(curves['train_acc'][:, i]):.3f} | {np.nanmean(curves['test_acc'][:, i]):.3f} |")
    lines += ["", "![training curves](figures/training_curves.png)", "", "## Inner runs", "",
              f"{len(status)} inner descents on G, {cfg['inner.epochs']:g} epochs each "
              f"({cfg['inner.method']}, batch {cfg['inner.batch_size']}, {cfg['inner.batches']} batches), "
              f"lr {cfg['inner.lr'][0]} for outer steps ≤ {cfg['inner.regime_split']}"
              + (f" and {cfg['inner.lr'][-1]} after." if len(cfg['inner.lr']) > 1 else "."), "",
              "| status | all | steps ≤ regime split | later |", "|---|---:|---:|---:|"]
    for n, c in zip(st_names, st_counts):
        lines.append(f"| {n} | {c} | {int(((status == n) & reg1).sum())} | {int(((status == n) & ~reg1).sum())} |")
    valid = np.isin(status, ["max_steps", "converged"])
    if valid.any():
        lines += ["", f"At the valid endpoints: median G {np.nanmedian(inn['train_G'][valid]):.3g} "
                      f"(from a median {np.nanmedian(inn['G_start'][valid]):.3g} at the start), median loss "
                      f"{np.nanmedian(inn['train_loss'][valid]):.4f}, median accuracy {np.nanmedian(inn['train_acc'][valid]):.3f}."]
    lines += ["", f"![G at start and end](figures/G_start_end_seed{first}.png)", "",
              f"![G along inner runs](figures/G_traces_seed{first}.png)", "", "## Traps", "",
              "Boundaries by the rule of `fasttrap.traps` with " + ", ".join(f"{k}={v}" for k, v in thresholds(cfg).items()) + ".", "",
              "| seed | traps (segments) | boundaries at outer steps |", "|---:|---:|---|"]
    for s in run.seeds:
        bs = tz[f"boundary_steps_{s}"]
        shown = ", ".join(map(str, bs[:25].tolist())) + (" …" if len(bs) > 25 else "")
        lines.append(f"| {s} | {tj['traps_per_seed'][str(s)]} | {shown or '–'} |")
    lines += ["", "Trapping times (outer steps; complete segments only: the first and last of each window are "
                  "censored, segments of diverged/non-finite endpoints are flagged and excluded):", "",
              "| group | complete | censored | flagged | mean | variance | median | max |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for g in ("all", "early", "late"):
        x = summ.get(g, {})
        lines.append(f"| {g} | {x.get('n', 0)} | {x.get('n_censored', 0)} | {x.get('n_flagged', 0)} | {_fmt(x.get('mean'))} | "
                     f"{_fmt(x.get('var'))} | {_fmt(x.get('median'))} | {_fmt(x.get('max'))} |")
    lines += ["", f"Early: segments starting before outer step {cfg['traps.split']}; late: the others.", ""]
    for s in run.seeds[:3]:
        lines.append(f"![indicators, seed {s}](figures/indicators_seed{s}.png)")
        lines.append("")
    lines += ["## Power law", "",
              "Discrete power-law MLE with x_min by KS distance (Clauset, Shalizi & Newman 2009), bootstrap "
              f"goodness-of-fit p ({cfg['stats.n_bootstrap']} synthetic sets; p ≥ 0.1: plausible), and likelihood-ratio "
              "tests against alternatives (R > 0 favours the power law; p < 0.1: significant).", "",
              "| group | α | x_min | tail / n | KS | bootstrap p | vs exponential R (p) | vs lognormal R (p) | vs truncated R (p) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for g in ("all", "early", "late"):
        v = fits_json.get(g, {})
        if "skipped" in v:
            lines.append(f"| {g} | – | – | – | – | – | – | – | {v['skipped']} |")
            continue
        c = v["comparisons"]
        cmp = " | ".join(f"{_fmt(c[a]['R'])} ({_fmt(c[a]['p'], 2)})" for a in ("exponential", "lognormal", "truncated_power_law"))
        lines.append(f"| {g} | {v['alpha']:.2f} ± {v['alpha_err']:.2f} | {v['xmin']:g} | {v['n_tail']}/{v['n']} | {v['ks']:.3f} | "
                     f"{_fmt(v['p_value'], 2)} | {cmp} |")
        verdicts.append(f"- **{g}**: {v['verdict']}")
    lines += ["", *verdicts, "", "![trapping times](figures/trapping_times.png)", "", "## Settings", "", "```toml",
              cfgmod.to_toml(cfg).rstrip(), "```", ""]
    store.write_text(d / "report.md", "\n".join(lines))

    # ---- the summary printed at the end
    a = summ["all"]
    fa = fits_json.get("all", {})
    sm = [f"run directory: {d}",
          f"inner runs: " + ", ".join(f"{c} {n}" for n, c in zip(st_names, st_counts)),
          f"traps: {sum(tj['traps_per_seed'].values())} segments over {len(run.seeds)} seed(s); "
          f"{a['n']} complete trapping times (mean {_fmt(a.get('mean'))}, max {_fmt(a.get('max'))})",
          "power law (all): " + (fa["verdict"] if "verdict" in fa else fa.get("skipped", "–")),
          f"report: {d / 'report.md'}"]
    return "\n".join(sm)


# ------------------------------------------------------------------------------- aging ------
def aging_verdict(ts: dict[str, Any], threshold: float = 0.2) -> str:
    """A one-line reading of :func:`fasttrap.aging.timescales` (the rule is stated in the report).

    τ growing at least like t_w^threshold over a half of the waiting times counts as aging there;
    aging in the first half that drops below both the threshold and half its early slope in the
    second half is read as interrupted.
    """
    e, l = ts["mu_early"], ts["mu_late"]
    if not (np.isfinite(e) and np.isfinite(l)):
        return "undetermined (too few waiting times reach the reference level)"
    if e > threshold and l > threshold and l >= 0.5 * e:
        return "aging throughout: the older the network, the slower it moves, up to the last waiting time"
    if e > threshold and l < max(threshold, 0.5 * e):
        return "interrupted aging: slows with age at first, then its motion stops depending on t_w"
    if e <= threshold and l > threshold:
        return "aging sets in late: little t_w dependence early, slowing with age later"
    return "no aging: the motion does not slow with t_w"


def write_aging_report(run: Any, nets: dict[str, Any]) -> str:
    """Figures and report.md of an aging run; returns the short summary printed at the end."""
    from .aging import AgingResult, seed_mean, timescales, timescales_per_seed

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
             f"{cfg['outer.batch_size']}, {steps:,} steps; {cfg['model.activation']}, {cfg['model.loss']}. "
             f"Backend: {man.get('backend_resolved')}. fasttrap {man['versions']['fasttrap']}, torch {man['versions']['torch']}.",
             "", "| stage | seconds |", "|---|---:|"]
    for k, v in man["stages"].items():
        lines.append(f"| {k} | {v.get('seconds', 0):.1f} |")
    lines += ["", "Δ(t_w, t_w+t) = (1/N) Σ_i (w_i(t_w+t) − w_i(t_w))² over all N weights and biases, "
                  "α₂ = Δ₄ / (3Δ²) − 1 (0 for Gaussian displacements). τ(t_w) is the lag at which the seed-mean Δ "
                  "reaches a common level (the geometric mean of all measured Δ of that network); μ is the slope of "
                  "log τ against log t_w (1: simple aging, 0: none), over all waiting times and over their first and "
                  "second halves; the per-seed range is μ of each seed alone at the same level. Reading rule: a half counts as aging where μ > 0.2; aging that drops below 0.2 and "
                  "below half its early slope in the second half is read as interrupted.", "",
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
        spread = f"{_fmt(per.min())}–{_fmt(per.max())}" if per.size > 1 else "–"
        lines.append(f"| {name} | {P:,} | {_fmt(fin[0], 4)} | {_fmt(fin[1])} | {_fmt(ts['mu'])} | {spread} | "
                     f"{_fmt(ts['mu_early'])} | {_fmt(ts['mu_late'])} | {verdict} |")
        summary.append(f"{name}: {verdict} (μ = {_fmt(ts['mu'])}, first half {_fmt(ts['mu_early'])}, "
                       f"second half {_fmt(ts['mu_late'])})")
        tt = r.two_time
        msd = seed_mean(tt.msd)
        common = tt.lags[(tt.lags > 0) & (tt.lags <= steps - tt.t_w[-1])]
        lag_ref = int(common[-1]) if common.size else None
        details += ["", f"### {name}", "", f"τ at the level Δ = {_fmt(ts['level'])}" +
                    (f"; Δ at the common lag t = {lag_ref} (the longest every t_w reaches):" if lag_ref else ":"), "",
                    "| t_w | τ(t_w) | Δ(t_w, t_w+t) | α₂ there |", "|---:|---:|---:|---:|"]
        for w, tw in enumerate(tt.t_w):
            last = tt.lags[np.isfinite(msd[w])].max(initial=0)
            tau = f"> {last}" if ts["tau_beyond"][w] else _fmt(ts["tau"][w])
            if lag_ref is not None:
                j = int(np.flatnonzero(tt.lags == lag_ref)[0])
                a2 = seed_mean(tt.non_gaussian[:, w, j:j + 1])[0]
                details.append(f"| {tw} | {tau} | {_fmt(msd[w, j])} | {_fmt(a2)} |")
            else:
                details.append(f"| {tw} | {tau} | – | – |")
        if ts["tau_beyond"].any():
            details += ["", "\"> t\": Δ stays below the level at every lag measured, so τ is longer than the run "
                            "allows; the slopes μ leave these waiting times out and understate the slowing there."]
        D = seed_mean(r.noise_D)
        i_max = int(np.nanargmax(D)) if np.isfinite(D).any() else 0
        details += ["", f"Gradient noise D(t) over {cfg['aging.noise_rows'] or 'all'} training rows: "
                        f"{_fmt(D[0])} at step 0, peak {_fmt(D[i_max])} at step {int(r.curve_steps[i_max])}, "
                        f"{_fmt(D[-1])} at step {int(r.curve_steps[-1])} (‖∇L‖² there: "
                        f"{_fmt(np.nanmean(r.noise_grad_sq[:, -1]))})."]
    lines += details
    lines += ["", "## Figures", "", "Δ against the lag, one curve per waiting time (seed mean), and α₂ below:", "",
              "![aging](figures/aging.png)", "", "Gradient noise D(t) (thin: single seeds) and ‖∇L‖²:", "",
              "![gradient noise](figures/gradient_noise.png)", "", "Training curves:", "",
              "![training curves](figures/training_curves.png)", ""]
    store.write_text(d / "report.md", "\n".join(lines) + "\n")
    return "\n".join(["fasttrap aging: " + s for s in summary] + [f"report: {d / 'report.md'}"])
