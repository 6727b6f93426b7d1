"""report.md, swap.json and the figures of a swap study: is training faster with swaps, and how sure is it?

Every condition is compared with the baseline seed by seed (same initial weights, same batch order):
steps to each target, the speed-up T̄_b/T̄_p with its expanded bootstrap interval over seeds
(:func:`fasttrap.analysis.speedup.speedup`), and at the end a plain verdict per condition at the
primary target, the last of ``swap.target_acc``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...analysis.speedup import speedup
from ...common import store
from .. import plots
from .common import fmt, stage_table


def _targets(cfg: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(key in the condition files, label, level) of every target, accuracies first."""
    return ([(f"to_acc_{a:g}", f"train acc ≥ {a:g}", a) for a in cfg["swap.target_acc"]]
            + [(f"to_loss_{L:g}", f"train loss ≤ {L:g}", L) for L in cfg["swap.target_loss"]])


def load_conditions(run: Any, conds: list[dict[str, Any]]) -> list[dict[str, np.ndarray]]:
    return [store.read_npz(run.dir / "swap" / f"cond_{i:03d}.npz") for i in range(len(conds))]


def summarise(cfg: dict[str, Any], conds: list[dict[str, Any]], data: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Everything swap.json holds: per condition the speed-up at every target, the primary verdict,
    acceptance, ΔL quantiles, final losses and accuracies, and the per-seed steps to every target."""
    base = data[0]
    primary = _targets(cfg)[len(cfg["swap.target_acc"]) - 1]
    out: dict[str, Any] = {"primary_target": primary[1], "seeds": cfg["swap.seeds"], "protocols": {}}
    for i, (c, z) in enumerate(zip(conds, data)):
        row: dict[str, Any] = {"kind": c["kind"], "pairs": c["pairs"], "every": c["every"], "targets": {},
                               "steps_to_target": {}}
        for key, label, _ in _targets(cfg):
            row["steps_to_target"][label] = z[key].tolist()
            if i:
                row["targets"][label] = speedup(base[key], z[key], n_boot=cfg["swap.n_bootstrap"], seed=i,
                                                budget=cfg["swap.steps"])
        if i:
            p = row["targets"][primary[1]]
            row["speedup"] = {"estimate": p["estimate"], "ci": p["ci"]}
            row["verdict"] = {"faster": "faster", "slower": "slower"}.get(p["verdict"], p["verdict"]
                                                                          if p["verdict"] == "not measurable"
                                                                          else "no difference")
        for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
            row[f"final_{k}"] = float(np.nanmean(z[k][:, -1])) if np.isfinite(z[k][:, -1]).any() else float("nan")
        if "diverged_step" in z:
            row["diverged"] = {"step": int(z["diverged_step"]), "seeds": z["diverged_seeds"].tolist()}
        if "move_proposed" in z:
            prop, acc = int(z["move_proposed"].sum()), int(z["move_accepted"].sum())
            row["acceptance"] = acc / prop if prop else float("nan")
            row["proposed"] = prop
            d = z.get("move_delta_0", np.zeros((0, 4)))
            row["delta_L"] = ({"n": int(d.shape[0]), "median": float(np.median(d[:, 2])),
                               "q10": float(np.quantile(d[:, 2], 0.1)), "q90": float(np.quantile(d[:, 2], 0.9))}
                              if d.shape[0] else {"n": 0})
        out["protocols"][c["label"]] = row
    return out


def write_swap_report(run: Any, conds: list[dict[str, Any]]) -> str:
    """Figures, swap.json and report.md of a swap study; returns the short summary printed at the end."""
    cfg, d, man = run.cfg, run.dir, run.manifest
    data = load_conditions(run, conds)
    res = summarise(cfg, conds, data)
    store.write_json(d / "swap.json", res)
    fig = d / "figures"
    plots.swap_curves(conds, data, fig / "swap_curves")
    plots.swap_speedups(res, fig / "swap_speedup")
    if any(r.get("delta_L", {}).get("n") for r in res["protocols"].values()):
        plots.swap_delta(conds, data, fig / "swap_delta_L")

    S, prim = cfg["swap.seeds"], res["primary_target"]
    mv = (f"Metropolis at T = {cfg['swap.temperature']:g} on the minibatch loss" if cfg["swap.metropolis"]
          else "every move accepted" + (f" (ΔL measured every {cfg['swap.measure_every']} steps, for the record)"
                                        if cfg["swap.measure_every"] else ""))
    lines = ["# fasttrap swap report", "",
             f"Profile **{cfg['profile']}**: the {'-'.join(map(str, cfg['model.widths']))} {cfg['model.activation']} "
             f"net on {man['data']['name']} ({man['data']['normalize']} inputs), SGD lr {cfg['outer.lr']}, batch "
             f"{cfg['outer.batch_size']}, {cfg['swap.steps']:,} steps, {S} seeds "
             f"({cfg['outer.seed_offset']}–{cfg['outer.seed_offset'] + S - 1}); curves every {cfg['swap.eval_every']} "
             f"steps on {cfg['swap.eval_rows'] or 'all'} rows of each set. Moves: {mv}; weight moves in layer "
             f"{cfg['swap.layer']}; data moves on {'every image' if not cfg['swap.images'] else str(cfg['swap.images']) + ' image(s)'} of each minibatch. "
             f"Backend: {man.get('backend_resolved')}. fasttrap {man['versions']['fasttrap']}.", "",
             "Design: every condition trains the same seeds from the same initial weights with the same batch "
             "order as the baseline (the moves draw from a stream of their own), so each seed is a paired "
             "comparison. Speed-up = mean steps of the baseline / mean steps of the protocol to reach a target "
             "(> 1: faster), with a 95% expanded bootstrap interval over seeds (coverage 0.94 at 10 and 20 seeds "
             "on synthetic studies, `benchmarks/results/speedup_coverage.txt`). Steps are counted at the "
             f"evaluation grid ({cfg['swap.eval_every']} steps). `paired` is an exact symmetry of the network, the "
             "negative control: its curves must equal the baseline's.", "",
             f"## Speed-up at the primary target ({prim})", "",
             "| condition | acceptance | ΔL median [10%, 90%] | steps (baseline → this) | speed-up [95% CI] | verdict |",
             "|---|---:|---:|---:|---:|---|"]
    base_key = [k for k, label, _ in _targets(cfg) if label == prim][0]
    b_mean = np.nanmean(data[0][base_key]) if np.isfinite(data[0][base_key]).any() else float("nan")
    for c, z in zip(conds[1:], data[1:]):
        r = res["protocols"][c["label"]]
        dl = r.get("delta_L", {})
        dls = f"{fmt(dl['median'])} [{fmt(dl['q10'])}, {fmt(dl['q90'])}]" if dl.get("n") else "–"
        p = r["targets"][prim]
        ci = f"{fmt(p['estimate'])} [{fmt(p['ci'][0])}, {fmt(p['ci'][1])}]" if np.isfinite(p["estimate"]) else "–"
        if p.get("bound") == "upper" and np.isfinite(p["estimate"]):
            ci = "≤ " + ci
        if "diverged" in r:
            dls += f" (training diverged at step {r['diverged']['step']})"
        lines.append(f"| {c['label']} | {fmt(r.get('acceptance'))} | {dls} | {fmt(b_mean)} → "
                     f"{fmt(np.nanmean(z[base_key]) if np.isfinite(z[base_key]).any() else np.nan)} | {ci} | "
                     f"{r['verdict']}{' (' + p['reason'] + ')' if 'reason' in p else ''} |")
    lines += ["", "![speed-up](figures/swap_speedup.png)", "", "## Every target", "",
              "| condition | " + " | ".join(label for _, label, _ in _targets(cfg)) + " |",
              "|---|" + "---:|" * len(_targets(cfg))]
    for c in conds[1:]:
        r = res["protocols"][c["label"]]
        cells = []
        for _, label, _ in _targets(cfg):
            p = r["targets"][label]
            cells.append(f"{fmt(p['estimate'])} [{fmt(p['ci'][0])}, {fmt(p['ci'][1])}]"
                         if np.isfinite(p["estimate"]) else p["verdict"])
        lines.append(f"| {c['label']} | " + " | ".join(cells) + " |")
    lines += ["", "## Final losses and accuracies (seed means)", "",
              "| condition | train loss | train acc | test loss | test acc |", "|---|---:|---:|---:|---:|"]
    for c in conds:
        r = res["protocols"][c["label"]]
        if "diverged" in r:
            lines.append(f"| {c['label']} | diverged at step {r['diverged']['step']} (seeds "
                         f"{', '.join(map(str, r['diverged']['seeds']))}) | | | |")
            continue
        lines.append(f"| {c['label']} | {fmt(r['final_train_loss'], 4)} | {fmt(r['final_train_acc'], 4)} | "
                     f"{fmt(r['final_test_loss'], 4)} | {fmt(r['final_test_acc'], 4)} |")
    lines += ["", "Training curves (seed mean and the range over seeds):", "", "![curves](figures/swap_curves.png)", ""]
    if (fig / "swap_delta_L.png").exists():
        lines += ["ΔL of the moves on their minibatch (positive: the move raised the loss):", "",
                  "![delta L](figures/swap_delta_L.png)", ""]
    lines += ["## Stages", "", *stage_table(man), "", "## Verdict", "",
              f"At 95% confidence, steps to {prim}, {S} paired seeds:", ""]
    verdicts = []
    for c in conds[1:]:
        r = res["protocols"][c["label"]]
        p = r["targets"][prim]
        if r["verdict"] == "faster":
            w = f"**faster**, {fmt(p['estimate'])}× [{fmt(p['ci'][0])}, {fmt(p['ci'][1])}]"
        elif r["verdict"] == "slower":
            w = f"**slower**, {fmt(p['estimate'])}× [{fmt(p['ci'][0])}, {fmt(p['ci'][1])}]"
            if p.get("bound"):
                w += f" at most ({p['reason']})"
        elif r["verdict"] == "not measurable":
            w = f"not measurable ({p.get('reason', '')})"
        else:
            w = f"no detectable difference ({fmt(p['estimate'])}× [{fmt(p['ci'][0])}, {fmt(p['ci'][1])}])"
        lines.append(f"- {c['label']}: {w}")
        verdicts.append(f"{c['label']}: {r['verdict']}")
    store.write_text(d / "report.md", "\n".join(lines) + "\n")
    return "\n".join([f"fasttrap swap ({prim}, {S} seeds): " + "; ".join(verdicts), f"report: {d / 'report.md'}"])
