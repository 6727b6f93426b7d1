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
from ...common.kinds import CRITICAL_KINDS, KINDS
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
    identity: dict[str, Any]               # identity.json
    identity_npz: dict[str, np.ndarray]    # within distances, cluster labels per seed
    sensitivity: dict[str, Any] | None     # sensitivity.json
    ledges: dict[str, Any]                 # ledges.json (empty for the other rules)

    @property
    def rule(self) -> str:
        return self.traps_json.get("rule_used", "consecutive")

    @property
    def refused(self) -> bool:
        """The reported rule has a separation test (ledge, cluster), and it failed."""
        return self.rule in ("cluster", "ledge") and not self.traps_json.get("separable", True)

    def refusal(self) -> str:
        """Why the trapping times are not clean, in one line."""
        if self.rule == "ledge":
            why = sorted({w for v in self.ledges.get("per_seed", {}).values() for w in v.get("why", [])})
            return "; ".join(why) or "the ledge rule refused"
        return "no gap between within- and between-trap distances"


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
                   certs={s: c for s in run.seeds if (c := rundir.certificates(run, s)) is not None},
                   identity=store.read_json(d / "identity.json") if (d / "identity.json").exists() else {},
                   identity_npz=store.read_npz(d / "identity.npz") if (d / "identity.npz").exists() else {},
                   sensitivity=store.read_json(d / "sensitivity.json") if (d / "sensitivity.json").exists() else None,
                   ledges=store.read_json(d / "ledges.json") if (d / "ledges.json").exists() else {})


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
        every = f" (every {cfg['window.every']})" if cfg["window.every"] > 1 else ""
        span = f"seed {s}, outer steps {ind.steps[0]}–{ind.steps[-1]}{every}"
        if x.rule == "ledge":
            ps = x.ledges["per_seed"].get(str(s), {})
            lab = _point_labels(ps, len(ind)) if ps.get("lengths") else None
            what = (f"{len(b)} trap changes, {ps.get('distinct')} traps" if ps.get("separable")
                    else "ledge rule refused")
            plots.indicators(ind, b, fig / f"indicators_seed{s}", labels=lab, boundary_label="trap change (ledge rule)",
                             title=f"{span}: {what}")
            ser = rundir.ledge_series(run, s)
            if ser is not None:
                plots.ledge_signals(ser, ps, fig / f"ledges_seed{s}", title=f"{span}: steps in units of the rerun noise")
            continue
        lab = x.identity_npz.get(f"labels_{s}")
        ps = x.identity.get("per_seed", {}).get(str(s))
        extra = f"; {ps['distinct']} clusters, {ps['visits']} visits" if ps else ""
        plots.indicators(ind, b, fig / f"indicators_seed{s}", labels=lab,
                         title=f"{span}: {len(b)} consecutive-rule boundaries{extra}")
    if x.identity.get("within_scale") is not None:
        cons = np.concatenate([np.diag(rundir.pairwise_distances(run, s), 1) for s in x.seeds])
        within = {k[len("within_"):]: v for k, v in x.identity_npz.items() if k.startswith("within_")}
        plots.distance_histogram(cons, within, x.identity["cut"], fig / "distances",
                                 title="distances between consecutive endpoints, and within one trap")
    for s in x.seeds[:3]:
        h = rundir.sharpness(run, s)
        if h is not None:
            plots.sharpness(h, x.traps_npz[f"boundary_steps_{s}"], fig / f"sharpness_seed{s}",
                            title=f"seed {s}: the Hessian at the outer points (grey: trap boundaries)")
    for s in list(x.certs)[:3]:
        c = x.certs[s]
        plots.certificates(c["steps"], c, x.traps_npz[f"boundary_steps_{s}"], fig / f"certificates_seed{s}",
                           grad_tol=cfg["certify.grad_tol"], title=f"seed {s}: what the endpoints are")
    fits = {k: PowerLawFit(**{f: v[f] for f in PowerLawFit.__dataclass_fields__ if f in v}) for k, v in x.fits.items()
            if "skipped" not in v}
    plots.trapping_times(x.groups, fits, fig / "trapping_times",
                         title=f"trapping times, {len(x.seeds)} seed(s); early/late split at step {cfg['traps.split']}")


def _point_labels(ps: dict[str, Any], T: int) -> np.ndarray:
    """The trap of every point [T] from a seed's ledge result (−1 on flagged visits)."""
    lab = np.full(T, -1, np.int64)
    t = 0
    for n, tr in zip(ps["lengths"], ps["visit_trap"]):
        lab[t:t + n] = tr
        t += n
    return lab


def section_header(x: _Inputs) -> list[str]:
    """Title, data, model, versions, and the time each stage took (executed model-steps/s)."""
    cfg, man = x.cfg, x.manifest
    lines = ["# fasttrap report", "",
             f"Profile **{cfg['profile']}**, {len(x.seeds)} seed(s) ({', '.join(map(str, x.seeds))}), "
             f"{man['data']['name']} ({man['data']['train'][0]:,} training images), "
             + (f"MLP {'-'.join(map(str, cfg['model.widths']))} ({cfg['model.activation']}, {cfg['model.loss']}). "
                if cfg.get("model.arch", "mlp") == "mlp" else f"{cfgmod.model_label(cfg)}. ") +
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
        parts = []
        if reg1.any():
            parts.append(f"{fmt(np.median(lam[reg1]))} for outer steps ≤ {cfg['inner.regime_split']}")
        if (~reg1).any():
            parts.append(f"{fmt(np.median(lam[~reg1]))} for later ones")
        where = []
        if reg1.any() and (~reg1).any():
            where = [f"{int((bad & reg1).sum())} at outer steps ≤ {cfg['inner.regime_split']}, "
                     f"{int((bad & ~reg1).sum())} later"]
        lines += ["", f"Stability (λ_max(H) at each start point by 20 Lanczos steps on {cfg['inner.lr_rows']:,} rows; "
                      f"descent on G is linearly stable only for lr < 2/λ_max²): lr {rule}; median λ_max "
                      + " and ".join(parts) + f"; **{int(bad.sum())} of {bad.size} runs have lr·λ_max² > 2**"
                      + (f" ({where[0]})" if where else "") + f", median lr·λ_max² {fmt(np.median(lr * lam ** 2))}."]
    valid = np.isin(status, ["max_steps", "converged"])
    if valid.any():
        lines += ["", f"At the valid endpoints: median G {np.nanmedian(inn['train_G'][valid]):.3g} "
                      f"(from a median {np.nanmedian(inn['G_start'][valid]):.3g} at the start), median loss "
                      f"{np.nanmedian(inn['train_loss'][valid]):.4f}, median accuracy {np.nanmedian(inn['train_acc'][valid]):.3f}."]
    first = x.seeds[0]
    return lines + ["", f"![G at start and end](figures/G_start_end_seed{first}.png)", "",
                    f"![G along inner runs](figures/G_traces_seed{first}.png)"]


def section_sharpness(run: rundir.Run, x: _Inputs) -> list[str]:
    """The Hessian along the outer path, next to the trap boundaries (only when recorded)."""
    hs = {s: h for s in x.seeds if (h := rundir.sharpness(run, s)) is not None}
    if not hs:
        return []
    cfg = x.cfg
    lines = ["", "## Sharpness along the outer path", "",
             f"The full-batch Hessian on the first {cfg['sharpness.rows'] or 'all'} training rows at every "
             f"{cfg['sharpness.every']}-th outer point: top {cfg['sharpness.k']} eigenvalues by Lanczos, the trace by "
             f"SLQ ({cfg['sharpness.probes']} probes × {cfg['sharpness.steps']} steps). λ_max at the points within one "
             "window step of a trap boundary is set beside λ_max elsewhere (medians).", "",
             "| seed | points | λ_max median (min–max) | tr H median | λ_max near a boundary | λ_max elsewhere |",
             "|---:|---:|---:|---:|---:|---:|"]
    every = cfg["window.every"]
    for s, h in hs.items():
        lam = h["top"][:, 0]
        b = np.asarray(x.traps_npz[f"boundary_steps_{s}"])
        near = np.array([b.size > 0 and np.abs(b - t).min() <= every for t in h["steps"]], dtype=bool)
        lines.append(f"| {s} | {lam.size} | {fmt(np.median(lam))} ({fmt(lam.min())}–{fmt(lam.max())}) | "
                     f"{fmt(np.median(h['trace']))} | {fmt(np.median(lam[near])) if near.any() else '–'} | "
                     f"{fmt(np.median(lam[~near])) if (~near).any() else '–'} |")
    for s in list(hs)[:3]:
        lines += ["", f"![sharpness, seed {s}](figures/sharpness_seed{s}.png)"]
    return lines


def _sign_rule_text(cfg: dict[str, Any]) -> str:
    """The certification rule in words, as the run applied it."""
    head = (f"Rule (`fasttrap.certify`): a critical point needs ‖∇L‖² < {cfg['certify.grad_tol']:g}; a non-critical "
            f"endpoint is gradient-flat when the residual is ≥ {cfg['certify.gf_cut']:g}, else not converged. ")
    if cfg.get("certify.rule", "eps") == "eps":
        return head + (f"A critical point is a minimum when no Ritz value lies below −{cfg['certify.eps']:g}·λ_max, else a "
                       "saddle (the rule of runs made before the error-bound rule: it can call a shallow saddle a minimum).")
    return head + (f"An eigenvalue counts as negative when its Ritz value lies below −τ, τ the solver's own error bound "
                   f"({cfg['certify.safety']:g} × the measured rounding of the products, plus, at critical points, how far "
                   "the spectrum moves over the Newton correction to the critical point): a lower bound on the index by "
                   "interlacing. A critical point is a saddle when one is, a minimum when none is and none lies within "
                   "its error of zero, and a degenerate minimum when some do (flat directions).")


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
              f"gradient-flat residual ‖Hp + g‖/‖g‖ of MINRES. " + _sign_rule_text(cfg), "",
              "| regime | certified | minimum | degenerate minimum | saddle | gradient-flat | not converged | median ‖∇L‖² | "
              "median λ_min | median index (≥) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    split = cfg["inner.regime_split"]
    crit_share = {}
    for name, m in ((f"steps ≤ {split}", c["steps"] <= split), (f"steps > {split}", c["steps"] > split),
                    ("all", np.ones(c["steps"].size, bool))):
        n = int(m.sum())
        if n == 0:
            continue
        cnt = {k: int((c["kind"][m] == k).sum()) for k in KINDS}
        crit_share[name] = sum(cnt[k] for k in CRITICAL_KINDS) / n
        cells = " | ".join(f"{v} ({100 * v / n:.0f}%)" for v in cnt.values())
        lines.append(f"| {name} | {n} | {cells} | {fmt(np.median(c['grad_sq'][m]))} | {fmt(np.median(c['lambda_min'][m]))} | "
                     f"{fmt(np.median(c['index'][m]))} |")
    segk = x.traps_json.get("segments_by_certificate", {})
    if segk:
        lines += ["", "Traps (segments) by what their certified endpoints are: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(segk.items())) + "."]
    if crit_share.get("all", 0) < 0.5:
        n_c = int(round(crit_share.get("all", 0) * c["kind"].size))
        head = (f"None of the {c['kind'].size} certified endpoints is a critical point." if n_c == 0 else
                f"Only {n_c} of the {c['kind'].size} certified endpoints are critical points.")
        lines += ["", f"**{head}** "
                      "The endpoints below are therefore **budget-defined endpoints** — where a fixed budget of descent on G "
                      "stopped — not traps in the sense of critical points of the loss; the trapping times are those of "
                      "these endpoints."]
    for s in list(x.certs)[:3]:
        lines += ["", f"![certificates, seed {s}](figures/certificates_seed{s}.png)"]
    return lines


def section_traps(x: _Inputs) -> list[str]:
    """Boundaries per seed and the trapping-time summary (complete, censored, flagged)."""
    cfg, tz, tj = x.cfg, x.traps_npz, x.traps_json
    rule = tj.get("rule_used", "consecutive")
    if rule == "ledge":
        lines = ["", "## Traps", "", "Trapping times are the lengths of the **visits of traps by the ledge rule** (see "
                 "*Trap identity*): runs of consecutive outer points between trap changes.", "",
                 "| seed | visits | trap changes at outer steps |", "|---:|---:|---|"]
        for s in x.seeds:
            bs = tz[f"boundary_steps_{s}"]
            shown = ", ".join(map(str, bs[:25].tolist())) + (" …" if len(bs) > 25 else "")
            lines.append(f"| {s} | {tj['traps_per_seed'][str(s)]} | {shown or '–'} |")
    else:
        lines = []
    lines += [] if rule == "ledge" else ["", "## Traps", "",
             ("Trapping times are the lengths of the **visits of clusters** (see *Trap identity*)."
              if rule == "cluster" else
              "Trapping times are the segments of the **consecutive-jump rule**"
              + (" (clustering needs a measured within-trap scale, and this run has none)." if cfg["traps.rule"] == "cluster" else ".")),
             "The consecutive-jump rule of `fasttrap.analysis.traps` (" + ", ".join(f"{k}={v}" for k, v in rundir.thresholds(cfg).items())
             + ") is shown beside it.", "",
             "| seed | trapping segments | consecutive-rule boundaries at outer steps |", "|---:|---:|---|"]
    for s in ([] if rule == "ledge" else x.seeds):
        bs = tz[f"boundary_steps_{s}"]
        shown = ", ".join(map(str, bs[:25].tolist())) + (" …" if len(bs) > 25 else "")
        lines.append(f"| {s} | {tj['traps_per_seed'][str(s)]} | {shown or '–'} |")
    if x.refused:
        lines += ["", f"**No trapping times are printed here as results.** The trap identity test failed: "
                      f"{x.refusal()} (see *Trap identity*), so where one trap ends and the next begins is not "
                      "determined by the data. The numbers are kept in `traps.json`, `stats.json` and the sensitivity "
                      "table for the record, not as findings.", ""]
        for s in x.seeds[:3]:
            lines += [f"![indicators, seed {s}](figures/indicators_seed{s}.png)", ""]
        return lines
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


def section_ledges(x: _Inputs) -> list[str]:
    """Trap identity by the ledge rule: noise units, the joint separation, agreement, budget stability."""
    cfg, lj = x.cfg, x.ledges
    st = lj.get("settings", {})
    lines = ["", "## Trap identity (ledge rule)", "",
             f"A trap changes between consecutive outer points where the endpoint distance ‖θ*_(t+1) − θ*_t‖ **and** the "
             f"endpoint-loss step |ℓ_(t+1) − ℓ_t| both stand clear of their noise. The noise is measured at the same "
             f"budget: every {cfg['sensitivity.every']}th start point's inner descent was rerun with batch seed "
             f"{cfg['run.seed'] + 1}, and the noise unit of each signal is the {st.get('quantile', 0.9):g}-quantile of "
             "|main − rerun| (a rerun that landed in another trap, far off in both, is left out and counted). A step's "
             "evidence is the smaller of its two z (steps in noise units); the steps separate when they leave an empty "
             f"interval (a, b) with b ≥ {st.get('threshold', 3):g} and b/a ≥ {st.get('min_gap', 1.5):g}, and the steps "
             "above it are the trap changes. Refused: no such interval (a drift), more than "
             f"{100 * st.get('max_share', 0.5):.0f}% of the steps changing, an endpoint loss that drifts by more than "
             "max_spread noise units with no change at all, or steps where one signal moves as much as at the changes "
             "and the other not; each trap's drift of the endpoint loss is shown, in loss-noise units (`fasttrap.analysis.ledges`; the same function as `fasttrap.traps_from_endpoints`).", "",
             "| seed | reruns (elsewhere) | distance noise | loss noise | empty interval (a, b) | changes | traps | returns | loss drift within a trap, median (max) | verdict |",
             "|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for s, v in lj.get("per_seed", {}).items():
        sig = v.get("signals", {})
        if not sig:
            lines.append(f"| {s} | 0 | – | – | – | – | – | – | – | {v['verdict']} |")
            continue
        dr = [d["loss_drift"] for d in v.get("drift", [])]
        drift = f"{fmt(np.median(dr))} ({fmt(max(dr))})" if dr else "–"
        jg = sig.get("joint", {})
        a_, b_ = jg.get("gap", [None, None])
        gap = ("none" if not jg.get("separable") else
               "no step ≥ threshold" if b_ is None or not np.isfinite(b_) else f"({fmt(a_)}, {fmt(b_)})")
        lines.append(f"| {s} | {v.get('n_reruns', '–')} ({v.get('reruns_elsewhere', 0)}) | {fmt(sig['distance']['noise'])} | "
                     f"{fmt(sig['loss']['noise'])} | {gap} | {len(v['boundaries'])} | {v['distinct']} | {v['returns']} | "
                     f"{drift} | {'clean' if v['separable'] else '**refused**'} |")
    refused = {s: v for s, v in lj.get("per_seed", {}).items() if not v["separable"]}
    for s, v in refused.items():
        lines += ["", f"Seed {s} refused: " + "; ".join(v["why"]) + "."]
    # agreement at each change, first seed
    for s, v in list(lj.get("per_seed", {}).items())[:1]:
        ag = v.get("agreement", [])
        if ag:
            lines += ["", f"Seed {s}, every step where a signal reaches the threshold (z: the step in noise units; "
                          "which signals agree at each change):", "",
                      "| outer step | z distance | z loss | z log G | at or above the threshold | trap change | disputed |",
                      "|---:|---:|---:|---:|---|---|---|"]
            for a in ag:
                lines.append(f"| {a['step']} | {fmt(a.get('z_distance'))} | {fmt(a.get('z_loss'))} | {fmt(a.get('z_G'))} | "
                             f"{', '.join(a['marked_by']) or '–'} | {'**yes**' if a.get('change') else 'no'} | "
                             f"{'**yes**' if a['disputed'] else 'no'} |")
    lines += _budget_lines(x)
    for s in x.seeds[:3]:
        lines += ["", f"![ledge signals, seed {s}](figures/ledges_seed{s}.png)"]
    return lines


def _budget_lines(x: _Inputs) -> list[str]:
    """Budget stability: whether each trap change is already there at each checkpoint fraction."""
    cfg = x.cfg
    out: list[str] = []
    for s, v in x.ledges.get("per_seed", {}).items():
        bt = v.get("budget")
        if not bt:
            continue
        fr = bt["fractions"]
        head = " | ".join(f"{f:g} ({f * cfg['inner.epochs']:g} ep.)" for f in fr)
        if not out:
            out += ["", "### Budget stability", "",
                    "The main descents kept their endpoints at fractions of the budget (no extra descent); the same rule, "
                    "with the reruns' checkpoints as noise, finds the changes at each fraction. A change that is there "
                    "from a small fraction on is a property of the landscape, not of the budget."]
        out += ["", f"Seed {s}: "
                + ("every change is already there, and nothing else, from fraction "
                   f"**{bt['stable_from']:g}** ({bt['stable_from'] * cfg['inner.epochs']:g} epochs) on."
                   if bt["stable_from"] is not None else "**the changes are not the same at any checkpoint fraction**."),
                "", f"| at fraction | {head} |", "|---|" + "---:|" * len(fr)]
        per = bt["per_fraction"]
        out.append("| clean | " + " | ".join("yes" if per[f"{f:g}"]["separable"] else "**no**" for f in fr) + " |")
        out.append("| changes found | " + " | ".join(str(per[f"{f:g}"]["changes"]) for f in fr) + " |")
        out.append("| of the final ones | " + " | ".join(f"{per[f'{f:g}']['shared']}/{len(bt['rows'])}" for f in fr) + " |")
        out.append("| extra (outer steps) | " + " | ".join(", ".join(map(str, per[f"{f:g}"]["extra"])) or "–" for f in fr) + " |")
    return out


def section_identity(x: _Inputs) -> list[str]:
    """Trap identity: the measured within-trap scale, the cut, clusters, visits and returns, the gap test."""
    if x.rule == "ledge":
        return section_ledges(x)
    idn = x.identity
    lines = ["", "## Trap identity", ""]
    if idn.get("within_scale") is None:
        return lines + [f"No within-trap scale was measured ({idn.get('why_not', 'no identity stage')}), so endpoints "
                        "were not clustered."]
    w = idn["within"]
    cfg = x.cfg
    lines += [f"Endpoints that must be one trap: each start point rerun with batch seed {cfg['run.seed'] + 1} "
              f"({w.get('seed', {}).get('n', 0)} pairs, median distance {fmt(w.get('seed', {}).get('median'))}) and the "
              f"same descent at half the budget ({w.get('half', {}).get('n', 0)} pairs, median "
              f"{fmt(w.get('half', {}).get('median'))}). The within-trap scale is the {idn['quantile']:g}-quantile of both: "
              f"**{fmt(idn['within_scale'])}**; endpoints are clustered ({idn['linkage']} linkage) at "
              f"{idn['multiple']:g} × that, a cut of **{fmt(idn['cut'])}**. A visit is a run of consecutive outer "
              "points in one cluster; a visit to a cluster seen before is a return.", "",
              "| seed | distinct traps | visits | returns | consecutive distances in the band cut/2–2·cut | median jump | drift boundaries | gap? |",
              "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s, v in idn["per_seed"].items():
        ev = v["evidence"]
        lines.append(f"| {s} | {v['distinct']} | {v['visits']} | {v['returns']} | {100 * ev['share_in_band']:.0f}% | "
                     f"{fmt(ev['jump_median'])} | {ev.get('drift_boundaries', '–')} | {'yes' if v['separable'] else '**no**'} |")
    lines += ["", "A gap needs at most 10% of the consecutive distances in the band around the cut, the within-trap "
                  "scale below half the median jump between clusters, and no *drift boundary* — a change of cluster "
                  "where the path made no jump (consecutive distance below cut/2), i.e. the linkage cutting a continuous "
                  "drift into pieces (`fasttrap.analysis.identity.gap`)."]
    if not idn["separable"]:
        bad = [s for s, v in idn["per_seed"].items() if not v["separable"]]
        lines += ["", f"**No gap in seed(s) {', '.join(bad)}:** within-trap and between-trap distances overlap, or the "
                      "clusters change where the path made no jump, so the trap of an endpoint is not determined by the "
                      "data, and trapping times are not reported as clean."]
    return lines + ["", "![distances](figures/distances.png)"]


def section_sensitivity(x: _Inputs) -> list[str]:
    """Every statistic with bootstrap intervals over seeds, under each change of the protocol."""
    sen = x.sensitivity
    if not sen:
        return []
    lines = ["", "## Sensitivity", "",
             f"Each row recomputes the statistics after one change. Intervals: 95% expanded percentile bootstrap over seeds "
             f"({x.cfg['sensitivity.seed_bootstrap']} resamples; none with one seed). Early/late: trap start before/after "
             f"outer step {sen['split_step']}. "
             + ("The threshold rows rerun the ledge rule at half and twice the threshold; the budget rows run it on the "
                "endpoints the main descents kept at those fractions of the budget (their reruns' checkpoints as noise)."
                if sen.get("rule") == "ledge" else
                "The reruns (other batch seed, half budget) are real inner descents, stored in `inner_seed/` and "
                "`inner_half/`.") + (" **Not findings: the trapping times are not clean.**"
                                                              if x.refused else ""), "",
             "| change | seeds | n | mean | variance | median | early mean | late mean | late/early | α | p | power law |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]

    def ci(r: dict[str, Any], k: str) -> str:
        lo, hi = r["ci"][k]            # None (JSON's null) where there is no interval
        return fmt(r.get(k)) + (f" [{fmt(lo)}, {fmt(hi)}]" if fmt(lo) != "–" else "")

    for r in sen["rows"]:
        pl = r["power_law"]
        a = f"{pl['alpha']:.2f} ± {pl['alpha_err']:.2f}" if "alpha" in pl else "–"
        lines.append(f"| {r['name']} | {r['seeds']} | {r['n']} | {ci(r, 'mean')} | {ci(r, 'var')} | {ci(r, 'median')} | "
                     f"{ci(r, 'early_mean')} | {ci(r, 'late_mean')} | {ci(r, 'late_over_early')} | {a} | "
                     f"{fmt(pl.get('p_value'), 2)} | {pl['category']} |")
    fl = sen["flips"]
    if fl:
        lines += ["", "**The conclusions flip across this table:** "
                  + "; ".join(f"{k.replace('_', ' ')} reads {' / '.join(v)}" for k, v in fl.items())
                  + ". Neither reading is a property of the landscape until it survives these changes."]
    else:
        read = [r["conclusions"] for r in sen["rows"]
                if r["conclusions"]["late_vs_early"] != "unknown" or r["conclusions"]["power_law"] != "no fit"]
        if not read:
            lines += ["", "No row has enough complete trapping times to read a conclusion from (late against early, "
                          "or a power law)."]
        elif len(x.seeds) < 2:
            lines += ["", "With one seed there are no intervals, and no conclusion is read from this table: the seeds "
                          "are the independent replicates, and one replicate allows none."]
        else:
            c = read[0]
            lines += ["", f"No conclusion flips across the rows that allow one ({len(read)} of {len(sen['rows'])}): "
                          f"{c['late_vs_early']}; power law: {c['power_law']}."]
    return lines


def section_regime1(run: rundir.Run, x: _Inputs) -> list[str]:
    """The regime-1 companion run: traps per seed there, what its endpoints are."""
    d = run.dir / "regime1"
    if not x.cfg["regime1.seeds"] or not (d / "traps.json").exists():
        return []
    tj = store.read_json(d / "traps.json")
    idn = store.read_json(d / "identity.json") if (d / "identity.json").exists() else {}
    if not idn and (d / "ledges.json").exists():
        idn = store.read_json(d / "ledges.json")      # same per-seed keys: distinct, visits, separable
    sub = rundir.Run(d, cfgmod.regime1_config(x.cfg))
    inn = rundir.inner_results(sub)
    st = inn["status"].astype(str)
    ok = np.isin(st, ["converged", "max_steps"])
    lines = ["", f"## Regime 1 (outer steps {x.cfg['regime1.start']}–{x.cfg['regime1.stop']})", "",
             f"Analysed apart, on {x.cfg['regime1.seeds']} seed(s), with the same protocol (full report: "
             f"[regime1/report.md](regime1/report.md)). {int(ok.sum())} of {st.size} inner runs valid; endpoint loss "
             f"median {fmt(np.nanmedian(inn['train_loss'][ok])) if ok.any() else '–'} (range "
             f"{fmt(np.nanmin(inn['train_loss'][ok])) if ok.any() else '–'}–{fmt(np.nanmax(inn['train_loss'][ok])) if ok.any() else '–'}).", "",
             "| seed | distinct traps | visits | segments | clean? |", "|---:|---:|---:|---:|---|"]
    tz = store.read_npz(d / "traps.npz")
    for s in sub.seeds:
        ps = idn.get("per_seed", {}).get(str(s), {})
        n_cons = int(tz[f"boundaries_{s}"].size) + 1
        lines.append(f"| {s} | {ps.get('distinct', '–')} | {ps.get('visits', '–')} | {n_cons} | "
                     f"{('yes' if ps['separable'] else 'no') if ps else '–'} |")
    if ok.any():
        acc = np.nanmedian(inn["train_acc"][ok])
        chance = 1.0 / x.cfg["model.widths"][-1]
        if acc < 1.5 * chance:
            lines += ["", f"**The inner descents end at chance level**: median endpoint accuracy {acc:.3f} (chance "
                          f"{chance:.2f}), loss {fmt(np.nanmedian(inn['train_loss'][ok]))}. The descent on G = ½‖∇L‖² "
                          "found the flat, near-uniform-output region of the loss (where ∇L vanishes because the "
                          "network predicts the class frequencies), not a trap near the outer path."]
    kinds = tj.get("segments_by_certificate", {})
    if kinds:
        lines += ["", "Its segments by certificate: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + "."]
    return lines


def section_power_law(x: _Inputs) -> list[str]:
    """The CSN fits of each group, their comparisons and verdicts."""
    if x.refused:
        return ["## Power law", "", "Not fitted as a finding: the trapping times are not clean (no gap, see above). "
                "The fits, for the record, are in `stats.json` and in the sensitivity table.", ""]
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
            lines.append(f"| {g} | not fitted: {v['skipped']} | – | – | – | – | – | – | – | – | – |")
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
                      + (f"no trapping times reported — the trap identity test refused: {x.refusal()} (see the report)"
                         if x.refused else
                         f"{a['n']} complete trapping times (mean {fmt(a.get('mean'))}, max {fmt(a.get('max'))})"),
                      "power law (all): " + ("not fitted as a finding (no clean trapping times)" if x.refused else
                                             fa["verdict"] if "verdict" in fa else fa.get("skipped", "–")),
                      f"report: {d / 'report.md'}"])


def write_report(run: rundir.Run) -> str:
    """Figures and report.md of a trapping-time run; returns the summary printed at the end."""
    x = _load(run)
    figures(run, x)
    lines = (section_header(x) + section_training(x) + section_inner(x) + section_certificates(x) + section_identity(x)
             + section_traps(x) + section_sharpness(run, x) + section_power_law(x) + section_sensitivity(x) + section_regime1(run, x)
             + section_settings(x))
    store.write_text(run.dir / "report.md", "\n".join(lines))
    return summary(run.dir, x)
