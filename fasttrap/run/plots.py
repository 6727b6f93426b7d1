"""Figures of a run, with matplotlib's object API (no pyplot, no backend or display needed).

Every figure is saved as PNG and PDF, with the arrays it shows in an .npz beside it, atomically
(see :mod:`fasttrap.common.store`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..analysis.aging import seed_mean
from ..analysis.esd import hard_rank
from ..analysis.traps import log_histogram
from ..common.store import save_figure


def _vlines(ax: Any, xs: Any, **kw: Any) -> None:
    for i, x in enumerate(xs):
        ax.axvline(x, **(kw if i == 0 else {k: v for k, v in kw.items() if k != "label"}))


def indicators(ind: Any, boundaries: Any, stem: str | Path, title: str = "", labels: Any = None,
               boundary_label: str = "consecutive-rule boundary") -> list[Path]:
    """Endpoint loss, endpoint G and the distances against the outer step, traps marked: the
    consecutive rule's boundaries (grey lines) and, given cluster ``labels`` [T], the starts of the
    clusters' visits (red dashes) with each endpoint's loss coloured by its cluster."""
    steps = np.asarray(ind.steps)
    b = np.asarray(boundaries, dtype=np.int64)
    lab = None if labels is None else np.asarray(labels, dtype=np.int64)
    bx = steps[b] if b.size else np.zeros(0)
    inv = np.asarray(ind.invalid, bool)
    loss_v = np.where(inv, np.nan, ind.loss_end)        # invalid endpoints are marked, not drawn
    G_v = np.where(inv, np.nan, ind.G_end)
    fig = Figure(figsize=(9, 8.5))
    axs = fig.subplots(4, 1, sharex=True)
    axs[0].plot(steps, loss_v, ".-", ms=3, lw=0.8, color="C0")
    axs[0].set_ylabel("loss at θ*")
    axs[1].semilogy(steps, np.maximum(G_v, 1e-300), ".-", ms=3, lw=0.8, color="C1")
    axs[1].set_ylabel("G at θ*")
    axs[2].semilogy(steps, ind.end_to_end, ".-", ms=3, lw=0.8, color="C2", label="‖θ*_t − θ*_{t−1}‖")
    axs[2].semilogy(steps, ind.outer_step, "-", lw=0.8, color="0.4", label="‖θ_t − θ_{t−1}‖ (yardstick)")
    axs[2].semilogy(steps, ind.start_to_end, ":", lw=0.8, color="C4", label="‖θ*_t − θ_t‖")
    axs[2].set_ylabel("distance")
    axs[2].legend(fontsize=7, loc="upper right")
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = ind.end_to_end / ind.outer_step
    axs[3].semilogy(steps, ratio, ".-", ms=3, lw=0.8, color="C3")
    axs[3].set_ylabel("end-to-end / yardstick")
    axs[3].set_xlabel("outer step")
    for ax in axs:
        _vlines(ax, bx, color="k", lw=0.5, alpha=0.35, label=boundary_label)
    if lab is not None and lab.size == steps.size and boundary_label.startswith("consecutive"):
        vs = np.r_[0, np.flatnonzero(np.diff(lab) != 0) + 1][1:]
        for ax in axs:
            _vlines(ax, steps[vs], color="C3", lw=0.8, ls="--", alpha=0.6, label="cluster visit starts")
        ok = lab >= 0
        axs[0].scatter(steps[ok], loss_v[ok], c=lab[ok] % 10, cmap="tab10", vmin=0, vmax=9, s=14, zorder=3)
        axs[2].legend(fontsize=7, loc="upper right")
    elif lab is not None and lab.size == steps.size:
        ok = lab >= 0                     # each endpoint's loss coloured by its trap (returns share a colour)
        axs[0].scatter(steps[ok], loss_v[ok], c=lab[ok] % 10, cmap="tab10", vmin=0, vmax=9, s=14, zorder=3)
    if inv.any():
        for ax, ser in zip(axs[:2], (loss_v, G_v)):
            y0 = np.nanmin(ser) if np.isfinite(ser).any() else 1.0
            ax.plot(steps[inv], np.full(inv.sum(), y0), "rx", ms=5, label="diverged / non-finite (not drawn)")
        axs[0].legend(fontsize=7)
    axs[0].set_title(title or f"trap indicators ({len(b)} boundaries)")
    return save_figure(fig, stem, {"steps": steps, "loss_end": ind.loss_end, "G_end": ind.G_end,
                                   "end_to_end": ind.end_to_end, "outer_step": ind.outer_step,
                                   "start_to_end": ind.start_to_end, "invalid": inv, "boundaries": b,
                                   "labels": np.zeros(0, np.int64) if lab is None else lab})


def ledge_signals(series: dict[str, Any], result: dict[str, Any], stem: str | Path, title: str = "") -> list[Path]:
    """The ledge rule's evidence for one window: the distance and loss steps in units of their rerun
    noise, the joint step min(z_distance, z_loss) with the threshold and the empty interval that
    separates within-trap from between-trap steps, and the endpoint loss at each checkpoint fraction of
    the budget beside the final one (grey lines: the trap changes)."""
    steps = np.asarray(series["steps"])
    sig = result.get("signals", {})
    ck = series.get("checkpoints") or []
    fig = Figure(figsize=(9, 9))
    axs = fig.subplots(4, 1, sharex=True)
    thr = result.get("settings", {}).get("threshold", 3.0)
    arrays: dict[str, Any] = {"steps": steps}
    zs = {}
    for ax, name, label, col in ((axs[0], "distance", "‖θ*_(t+1) − θ*_t‖ / noise", "C0"),
                                 (axs[1], "loss", "|Δ loss| / noise", "C1")):
        if name not in sig:
            continue
        raw = np.asarray(series["consecutive"] if name == "distance" else np.abs(np.diff(series["loss"])), float)
        z = raw / sig[name]["noise"]
        zs[name] = z
        arrays[f"z_{name}"] = z
        ax.semilogy(steps[1:], np.maximum(z, 1e-3), ".", ms=4, color=col)
        ax.axhline(thr, color="C3", lw=0.8, ls="--", label=f"threshold {thr:g}")
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    if len(zs) == 2:
        joint = np.fmin(zs["distance"], zs["loss"])
        arrays["z_joint"] = joint
        axs[2].semilogy(steps[1:], np.maximum(joint, 1e-3), ".", ms=4, color="C2")
        axs[2].axhline(thr, color="C3", lw=0.8, ls="--", label=f"threshold {thr:g}")
        a, b = sig.get("joint", {}).get("gap", [None, None])
        if sig.get("joint", {}).get("separable") and a is not None and b is not None and np.isfinite(b):
            axs[2].axhspan(max(a, 1e-3), b, color="C2", alpha=0.15, label="empty interval")
        axs[2].set_ylabel("joint: min of the two", fontsize=8)
        axs[2].legend(fontsize=7, loc="lower right")
    for c in ck:
        axs[3].plot(steps, c["loss"], ".-", ms=2, lw=0.6, alpha=0.8, label=f"budget {c['fraction']:g}")
    axs[3].plot(steps, series["loss"], ".-", ms=3, lw=0.9, color="k", label="budget 1")
    axs[3].set_ylabel("endpoint loss")
    axs[3].set_xlabel("outer step")
    axs[3].legend(fontsize=7, ncol=5, loc="upper right")
    for ax in axs:
        _vlines(ax, result.get("boundary_steps", []), color="k", lw=0.5, alpha=0.35)
    axs[0].set_title(title or "ledge rule")
    return save_figure(fig, stem, arrays)


def distance_histogram(consecutive: Any, within: dict[str, Any], cut: float, stem: str | Path, title: str = "") -> list[Path]:
    """The evidence for (or against) trap identity: the distances between consecutive endpoints against
    the within-trap distances (the same start point rerun), on log-spaced bins, with the cut."""
    cons = np.asarray(consecutive, dtype=np.float64)
    cons = cons[np.isfinite(cons) & (cons > 0)]
    allv = [cons] + [np.asarray(v, dtype=np.float64) for v in within.values()]
    allv = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in allv]) if allv else np.zeros(0)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if allv.size:
        bins = np.logspace(np.log10(allv.min()) - 0.05, np.log10(allv.max()) + 0.05, 40)
        ax.hist(cons, bins=bins, histtype="stepfilled", alpha=0.45, color="C0", label=f"consecutive endpoints ({cons.size})")
        for i, (k, v) in enumerate(within.items()):
            v = np.asarray(v, dtype=np.float64)
            ax.hist(v[v > 0], bins=bins, histtype="step", lw=1.5, color=f"C{i + 1}", label=f"within-trap: {k} ({v.size})")
    if np.isfinite(cut) and cut > 0:
        ax.axvline(cut, color="k", ls="--", lw=1, label=f"cut {cut:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("distance in weight space")
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    ax.set_title(title or "within-trap against consecutive distances")
    return save_figure(fig, stem, {"consecutive": cons, "cut": np.array(cut),
                                   **{f"within_{k}": np.asarray(v) for k, v in within.items()}})


def G_start_end(steps: Any, G_start: Any, G_end: Any, status: Any, stem: str | Path, title: str = "") -> list[Path]:
    """G at the start (minibatch) and end (full training set) of each inner run."""
    steps = np.asarray(steps)
    st = np.asarray(status).astype(str)
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    bad = np.isin(st, ["diverged", "nonfinite", "interrupted"])
    ax.semilogy(steps, np.asarray(G_start), "o", ms=3, mfc="none", label="G at the start (minibatch)")
    ax.semilogy(steps, np.where(bad, np.nan, np.asarray(G_end, float)), ".", ms=4, label="G at the endpoint (training set)")
    if bad.any():
        ax.plot(steps[bad], np.asarray(G_start, float)[bad], "rx", label="run diverged / non-finite (endpoint not drawn)")
    ax.set_xlabel("outer step")
    ax.set_ylabel("G = ½‖∇L‖²")
    ax.legend(fontsize=8)
    ax.set_title(title or "inner runs: G at start and end")
    return save_figure(fig, stem, {"steps": steps, "G_start": np.asarray(G_start, float),
                                   "G_end": np.asarray(G_end, float), "status": st})


def trapping_times(groups: dict[str, np.ndarray], fits: dict[str, Any], stem: str | Path, title: str = "") -> list[Path]:
    """Log-binned trapping-time densities on log-log axes, with the power-law fits (early vs late)."""
    fig = Figure(figsize=(6.5, 5))
    ax = fig.subplots()
    arrays: dict[str, Any] = {}
    for i, (name, x) in enumerate(groups.items()):
        x = np.asarray(x)
        arrays[f"{name}_times"] = x
        if x.size == 0:
            continue
        edges, dens = log_histogram(x)
        centers = np.sqrt(edges[:-1] * np.maximum(edges[1:] - 1, edges[:-1]))
        keep = dens > 0
        ax.loglog(centers[keep], dens[keep], "o-" if name == "all" else "s--", ms=4, color=f"C{i}",
                  label=f"{name} (n = {x.size})")
        arrays[f"{name}_edges"], arrays[f"{name}_density"] = edges, dens
        f = fits.get(name)
        if f is not None and np.isfinite(f.alpha):
            xs = np.logspace(np.log10(max(f.xmin, 1)), np.log10(max(x.max(), f.xmin + 1)), 50)
            frac = f.n_tail / max(f.n, 1)
            from scipy import special

            norm = special.zeta(f.alpha, f.xmin) if f.discrete else (f.alpha - 1) / f.xmin ** (1 - f.alpha)
            pdf = xs ** (-f.alpha) / norm if f.discrete else xs ** (-f.alpha) * norm
            ax.loglog(xs, frac * pdf, "-", lw=1, color=f"C{i}", alpha=0.7,
                      label=f"fit α = {f.alpha:.2f}±{f.alpha_err:.2f}, p = {f.p_value:.2f}")
    ax.set_xlabel("trapping time (outer steps)")
    ax.set_ylabel("probability density")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no complete trapping times", transform=ax.transAxes, ha="center")
    ax.set_title(title or "trapping-time distribution")
    return save_figure(fig, stem, arrays)


def training_curves(curves: dict[str, np.ndarray], stem: str | Path, window: tuple[int, int] | None = None) -> list[Path]:
    """Train/test loss and accuracy against the outer step (per seed)."""
    steps = np.asarray(curves["step"])
    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2)
    x = np.maximum(steps, 0.5)
    for s in range(np.asarray(curves["train_loss"]).shape[0]):
        a1.semilogx(x, curves["train_loss"][s], "-", color="C0", alpha=0.6, label="train" if s == 0 else None)
        a1.semilogx(x, curves["test_loss"][s], "--", color="C1", alpha=0.6, label="test" if s == 0 else None)
        a2.semilogx(x, curves["train_acc"][s], "-", color="C0", alpha=0.6, label="train" if s == 0 else None)
        a2.semilogx(x, curves["test_acc"][s], "--", color="C1", alpha=0.6, label="test" if s == 0 else None)
    for ax in (a1, a2):
        if window:
            ax.axvspan(max(window[0], 0.5), window[1], color="0.9", label="trap window")
        ax.set_xlabel("outer step (0 shown at 0.5)")
        ax.legend(fontsize=8)
    a1.set_ylabel("loss")
    a2.set_ylabel("accuracy")
    return save_figure(fig, stem, {k: np.asarray(v) for k, v in curves.items()})


def G_traces(trace_steps: Any, G_trace: Any, labels: Any, stem: str | Path, max_lines: int = 12) -> list[Path]:
    """G along a few inner runs."""
    G = np.asarray(G_trace, dtype=float)
    idx = np.linspace(0, G.shape[0] - 1, min(max_lines, G.shape[0])).astype(int)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for j, k in enumerate(idx):
        ax.semilogy(np.asarray(trace_steps), G[k], lw=0.8, color=f"C{j % 10}", label=str(np.asarray(labels)[k]))
    ax.set_xlabel("inner step")
    ax.set_ylabel("G (minibatch)")
    ax.legend(fontsize=7, title="outer step", ncol=2)
    return save_figure(fig, stem, {"trace_steps": np.asarray(trace_steps), "G_trace": G[idx], "labels": np.asarray(labels)[idx]})


# ------------------------------------------------------------------------------- aging ------
def aging_family(results: dict[str, Any], stem: str | Path) -> list[Path]:
    """Per network: Δ(t_w, t_w+t) against t, one curve per t_w (log-log), and α₂ below it.

    Args:
        results: network name -> :class:`fasttrap.analysis.aging.AgingResult`.
    """
    import matplotlib

    n = len(results)
    fig = Figure(figsize=(5.2 * n, 8))
    axs = np.asarray(fig.subplots(2, n, squeeze=False))
    arrays: dict[str, np.ndarray] = {}
    for c, (name, r) in enumerate(results.items()):
        tt = r.two_time
        msd, a2 = seed_mean(tt.msd), seed_mean(tt.non_gaussian)
        cmap = matplotlib.colormaps["viridis"]
        for w, tw in enumerate(tt.t_w):
            col = cmap(w / max(len(tt.t_w) - 1, 1))
            ok = (tt.lags > 0) & np.isfinite(msd[w]) & (msd[w] > 0)
            axs[0, c].loglog(tt.lags[ok], msd[w, ok], ".-", ms=3, lw=1, color=col, label=f"t_w = {tw}")
            ok2 = (tt.lags > 0) & np.isfinite(a2[w])
            axs[1, c].semilogx(tt.lags[ok2], a2[w, ok2], ".-", ms=3, lw=1, color=col)
        axs[0, c].set_title(f"{name} ({r.theta_final.shape[1]:,} parameters, {len(r.seeds)} seed(s))")
        axs[0, c].set_ylabel("Δ(t_w, t_w+t)")
        axs[0, c].legend(fontsize=7, loc="upper left")
        axs[1, c].axhline(0, color="0.5", lw=0.6)
        axs[1, c].set_ylabel("α₂ = Δ₄ / (3Δ²) − 1")
        axs[1, c].set_xlabel("lag t (SGD steps)")
        arrays |= {f"{name}_t_w": tt.t_w, f"{name}_lags": tt.lags, f"{name}_msd": tt.msd, f"{name}_m4": tt.m4}
    return save_figure(fig, stem, arrays)


def gradient_noise(results: dict[str, Any], stem: str | Path) -> list[Path]:
    """D(t) = mean_α ‖∇ℓ_α − ∇L‖² and ‖∇L‖² along training, per network (log-log)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    arrays: dict[str, np.ndarray] = {}
    for c, (name, r) in enumerate(results.items()):
        x = np.maximum(np.asarray(r.curve_steps, float), 0.5)
        for s in range(r.noise_D.shape[0]):
            ax.loglog(x, r.noise_D[s], "-", color=f"C{c}", lw=0.5, alpha=0.35)
        ax.loglog(x, seed_mean(r.noise_D), "o-", ms=3, color=f"C{c}", label=f"{name}: D(t)")
        ax.loglog(x, seed_mean(r.noise_grad_sq), "--", color=f"C{c}", lw=1, label=f"{name}: ‖∇L‖²")
        arrays |= {f"{name}_step": r.curve_steps, f"{name}_D": r.noise_D, f"{name}_grad_sq": r.noise_grad_sq,
                   f"{name}_mean_sq": r.noise_mean_sq}
    ax.set_xlabel("SGD step (0 shown at 0.5)")
    ax.set_ylabel("gradient noise over the training set")
    ax.legend(fontsize=8)
    return save_figure(fig, stem, arrays)


def aging_curves(results: dict[str, Any], stem: str | Path) -> list[Path]:
    """Train/test loss and accuracy of each network against the SGD step (seed means)."""
    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2)
    arrays: dict[str, np.ndarray] = {}
    for c, (name, r) in enumerate(results.items()):
        x = np.maximum(np.asarray(r.curve_steps, float), 0.5)
        for ax, key in ((a1, "loss"), (a2, "acc")):
            ax.semilogx(x, seed_mean(getattr(r, f"train_{key}")), "-", color=f"C{c}", label=f"{name} train")
            ax.semilogx(x, seed_mean(getattr(r, f"test_{key}")), "--", color=f"C{c}", label=f"{name} test")
        arrays |= {f"{name}_{k}": np.asarray(v) for k, v in r.curves().items()}
    a1.set_yscale("log")
    a1.set_ylabel("loss")
    a2.set_ylabel("accuracy")
    for ax in (a1, a2):
        ax.set_xlabel("SGD step (0 shown at 0.5)")
        ax.legend(fontsize=7)
    return save_figure(fig, stem, arrays)


KIND_COLOURS = {"minimum": "C2", "degenerate_minimum": "C0", "saddle": "C1", "gradient_flat": "C4", "not_converged": "0.5"}


def certificates(steps: Any, cert: dict[str, Any], boundary_steps: Any, stem: str | Path, grad_tol: float = 1e-10,
                 title: str = "") -> list[Path]:
    """‖∇L‖², the extreme Hessian eigenvalues and the index of the certified endpoints along the
    outer path, coloured by kind, with the trap boundaries."""
    steps = np.asarray(steps)
    kind = np.asarray(cert["kind"]).astype(str)
    fig = Figure(figsize=(9, 7.5), layout="constrained")
    axs = fig.subplots(3, 1, sharex=True)
    for k, c in KIND_COLOURS.items():
        m = kind == k
        if not m.any():
            continue
        axs[0].semilogy(steps[m], np.maximum(cert["grad_sq"][m], 1e-300), "o", ms=4, color=c, label=f"{k} ({m.sum()})")
        axs[1].plot(steps[m], cert["lambda_min"][m], "v", ms=4, color=c)
        axs[1].plot(steps[m], cert["lambda_max"][m], "^", ms=4, color=c)
        axs[2].plot(steps[m], cert["index"][m], "s", ms=4, color=c)
    axs[0].axhline(grad_tol, color="k", ls="--", lw=0.7, label=f"critical: ‖∇L‖² < {grad_tol:g}")
    axs[0].set_ylabel("‖∇L‖² at θ*")
    g = np.asarray(cert["grad_sq"], dtype=np.float64)
    g = g[np.isfinite(g) & (g > 0)]
    if g.size:                                   # room above the highest point for the legend
        axs[0].set_ylim(min(grad_tol, g.min()) / 10, g.max() * 1e3)
    lam = np.concatenate([np.asarray(cert["lambda_min"], float), np.asarray(cert["lambda_max"], float)])
    lam = lam[np.isfinite(lam)]
    if lam.size:                                 # the markers stay inside the frame
        axs[1].set_ylim(min(lam.min() * 2, -1e-3), max(lam.max() * 2, 1e-3))
    axs[1].set_yscale("symlog", linthresh=1e-3)
    axs[1].axhline(0, color="k", lw=0.5)
    axs[1].set_ylabel("λ_min (▼), λ_max (▲)")
    axs[2].set_ylabel("index (≥; Ritz values < −ε·λ_max)")
    axs[2].set_xlabel("outer step")
    bx = np.asarray(boundary_steps)
    for ax in axs:
        _vlines(ax, bx, color="k", lw=0.5, alpha=0.3, label="trap change")
    axs[0].legend(fontsize=7, loc="upper left", ncol=3)
    axs[0].set_title(title or "what the endpoints are")
    return save_figure(fig, stem, {"steps": steps, "kind": kind, "grad_sq": cert["grad_sq"],
                                   "lambda_min": cert["lambda_min"], "lambda_max": cert["lambda_max"],
                                   "index": cert["index"], "gf_residual": cert["gf_residual"],
                                   "boundary_steps": bx})


def sharpness(h: dict[str, Any], boundary_steps: Any, stem: str | Path, title: str = "") -> list[Path]:
    """The Hessian's top eigenvalues and trace at the outer points, with the trap boundaries."""
    steps = np.asarray(h["steps"])
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    a1, a2 = fig.subplots(2, 1, sharex=True)
    for j in range(h["top"].shape[1]):
        a1.plot(steps, h["top"][:, j], "o-" if j == 0 else ".-", ms=3, lw=1 if j == 0 else 0.6,
                color="C0", alpha=1.0 if j == 0 else 0.5, label="λ_max" if j == 0 else (f"λ_2 … λ_{h['top'].shape[1]}" if j == 1 else None))
    a1.set_ylabel("top Hessian eigenvalues")
    a1.legend(fontsize=7)
    a2.plot(steps, h["trace"], "s-", ms=3, color="C1")
    a2.set_ylabel("tr H (Hutchinson)")
    a2.set_xlabel("outer step")
    bx = np.asarray(boundary_steps)
    for ax in (a1, a2):
        _vlines(ax, bx, color="k", lw=0.5, alpha=0.3)
    a1.set_title(title or "sharpness along the outer path (grey: trap boundaries)", fontsize=9)
    return save_figure(fig, stem, {"steps": steps, "top": h["top"], "trace": h["trace"], "boundary_steps": bx})


# ---- the spectra analysis ----------------------------------------------------------------------

LABEL_COLOURS = {"real": "C0", "random": "C3"}


def _log_density(x: np.ndarray, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Histogram density of positive x on log-spaced bins: (bin centres, density)."""
    x = x[x > 0]
    if x.size < 2 or x.max() <= x.min():
        return np.array([]), np.array([])
    edges = np.geomspace(x.min(), x.max() * (1 + 1e-12), bins + 1)
    h, _ = np.histogram(x, edges, density=True)
    c = np.sqrt(edges[:-1] * edges[1:])
    return c[h > 0], h[h > 0]


def spectra_esd(esd: dict[str, dict[str, np.ndarray]], fits: dict[str, dict[str, Any]], stem: str | Path,
                title: str = "") -> list[Path]:
    """The Jacobian ESDs of one seed on log-log axes, real against random labels, with the fitted tails
    (non-zero eigenvalues only: above the hard-rank threshold).

    Args:
        esd: ``{label: {"<inputs>_<checkpoint>": eigenvalues}}``.
        fits: ``{label: {"<inputs>_<checkpoint>": {"alpha", "xmin", "n_tail"} (spikes removed)}}``.
    """
    keys = [k for k in next(iter(esd.values()))]
    inputs = sorted({k.split("_")[0] for k in keys}, key=["train", "test"].index)
    cks = [c for c in ("init", "mid", "end") if any(k.endswith(c) for k in keys)]
    fig = Figure(figsize=(4 * len(cks), 3.4 * len(inputs)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(inputs), len(cks), squeeze=False))
    arrays: dict[str, np.ndarray] = {}
    for i, inp in enumerate(inputs):
        for j, ck in enumerate(cks):
            ax = axes[i, j]
            key = f"{inp}_{ck}"
            for lab, per in esd.items():
                ev = np.asarray(per[key], float)
                ev = ev[: hard_rank(ev)]            # the non-zero eigenvalues (the rest is the null space)
                c, h = _log_density(ev)
                col = LABEL_COLOURS.get(lab, "k")
                ax.loglog(c, h, "o-", ms=2.5, lw=0.8, color=col, label=f"{lab} labels")
                f = fits.get(lab, {}).get(key, {})
                a, xm = f.get("alpha"), f.get("xmin")
                if a and xm and np.isfinite(a) and np.isfinite(xm):
                    pos = ev[ev > 0]
                    frac = (pos >= xm).sum() / max(pos.size, 1)
                    xs = np.geomspace(xm, pos.max(), 20)
                    ax.loglog(xs, frac * (a - 1) / xm * (xs / xm) ** (-a), "--", color=col, lw=1.2,
                              label=f"α = {a:.2f} (λ ≥ {xm:.2g})")
                arrays[f"{lab}_{key}"] = ev
            ax.set_title(f"{inp} inputs, {ck}", fontsize=9)
            ax.set_xlabel("eigenvalue λ of JᵀJ (J stacked)")
            if j == 0:
                ax.set_ylabel("density")
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, stem, arrays)


def spectra_metrics(table: dict[str, dict[str, dict[str, dict[str, float]]]], stem: str | Path,
                    title: str = "") -> list[Path]:
    """Metrics along training (init, mid, end): seed mean and 95% interval per label kind.

    Args:
        table: ``{panel title: {label: {checkpoint: seed_interval dict}}}``.
    """
    n = len(table)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(3.6 * cols, 3.0 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    arrays: dict[str, np.ndarray] = {}
    for ax, (panel, per) in zip(axes, table.items()):
        for o, (lab, cks) in enumerate(per.items()):
            names = list(cks)
            x = np.arange(len(names)) + (o - 0.5) * 0.08
            m = np.array([cks[c]["mean"] for c in names])
            lo = np.array([cks[c]["lo"] for c in names])
            hi = np.array([cks[c]["hi"] for c in names])
            err = np.vstack([np.where(np.isfinite(lo), m - lo, 0), np.where(np.isfinite(hi), hi - m, 0)])
            ax.errorbar(x, m, yerr=err, fmt="o-", ms=4, capsize=3, color=LABEL_COLOURS.get(lab, "k"), label=lab)
            ax.set_xticks(np.arange(len(names)), names)
            arrays[f"{panel}|{lab}"] = np.vstack([m, lo, hi])
        vals = np.concatenate([[c["mean"] for c in cks.values()] for cks in per.values()])
        vals = vals[np.isfinite(vals)]
        if vals.size and vals.min() > 0 and vals.max() / vals.min() > 100:
            ax.set_yscale("log")                # e.g. λ_max, which grows by decades
        ax.set_title(panel, fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, stem, {k.replace("|", "__").replace(" ", "_").replace(",", ""): v for k, v in arrays.items()})


def spectra_hessian(densities: dict[str, Any], stem: str | Path, sigma_rel: float = 0.01,
                    title: str = "") -> list[Path]:
    """The Hessian's SLQ density at the end of training, real against random labels (one seed each).

    Args:
        densities: ``{label: (nodes [probes, m], weights [probes, m])}``.
    """
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    arrays: dict[str, np.ndarray] = {}
    lo = min(float(np.min(n[w > 0])) for n, w in densities.values())
    hi = max(float(np.max(n[w > 0])) for n, w in densities.values())
    sig = max(sigma_rel * (hi - lo), 1e-12)
    grid = np.linspace(lo - 3 * sig, hi + 3 * sig, 800)
    for lab, (nodes, weights) in densities.items():
        z = (grid[None, None, :] - nodes[..., None]) / sig
        dens = (weights[..., None] * np.exp(-0.5 * z * z)).sum(axis=1).mean(axis=0) / (sig * np.sqrt(2 * np.pi))
        ax.semilogy(grid, np.maximum(dens, 1e-12), color=LABEL_COLOURS.get(lab, "k"), label=f"{lab} labels")
        arrays[f"{lab}_density"] = dens
    arrays["grid"] = grid
    ax.set_ylim(bottom=max(1e-8, ax.get_ylim()[0]))
    ax.set_xlabel("Hessian eigenvalue")
    ax.set_ylabel(f"SLQ density (Gaussian width {sig:.2g})")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, stem, arrays)


def spectra_training(curves: dict[str, dict[str, np.ndarray]], target: float, stem: str | Path) -> list[Path]:
    """Training loss and accuracy on the memorised subset, every seed, real against random labels."""
    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2)
    arrays: dict[str, np.ndarray] = {}
    for lab, c in curves.items():
        x = np.maximum(np.asarray(c["steps"], float), 0.5)
        col = LABEL_COLOURS.get(lab, "k")
        for s in range(c["loss"].shape[0]):
            a1.loglog(x, c["loss"][s], "-", color=col, lw=0.8, alpha=0.7, label=f"{lab} labels" if s == 0 else None)
            a2.semilogx(x, c["acc"][s], "-", color=col, lw=0.8, alpha=0.7, label=f"{lab} labels" if s == 0 else None)
        arrays |= {f"{lab}_steps": c["steps"], f"{lab}_loss": c["loss"], f"{lab}_acc": c["acc"]}
    a1.axhline(target, color="k", ls=":", lw=1, label=f"target {target:g}")
    a1.set_ylabel("training loss (memorised subset)")
    a2.set_ylabel("training accuracy")
    for ax in (a1, a2):
        ax.set_xlabel("SGD step (0 shown at 0.5)")
        ax.legend(fontsize=7)
    return save_figure(fig, stem, arrays)


# ---- the swap study ----------------------------------------------------------------------------

def swap_curves(conds: list[dict[str, Any]], data: list[dict[str, np.ndarray]], stem: str | Path) -> list[Path]:
    """Training loss and accuracy against the step, one panel pair per protocol kind, the baseline in
    every panel; seed mean with the range over seeds as a band; intensities as line styles."""
    kinds = [k for k in dict.fromkeys(c["kind"] for c in conds) if k != "baseline"] or ["baseline"]
    fig = Figure(figsize=(4.2 * len(kinds), 6.2), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2, len(kinds), squeeze=False))
    arrays: dict[str, np.ndarray] = {}
    styles = ["-", "--", ":", "-."]
    for j, kind in enumerate(kinds):
        members = [(c, z) for c, z in zip(conds, data) if c["kind"] in ("baseline", kind)]
        for n, (c, z) in enumerate(members):
            x = z["eval_steps"]
            col = "k" if c["kind"] == "baseline" else f"C{(n - 1) % 10}"
            ls = "-" if c["kind"] == "baseline" else styles[(n - 1) % len(styles)]
            for i, key in enumerate(("train_loss", "train_acc")):
                ax = axes[i, j]
                with warnings.catch_warnings():      # a condition that diverged has all-NaN columns
                    warnings.simplefilter("ignore", RuntimeWarning)
                    m = np.nanmean(z[key], axis=0)
                    lo, hi = np.nanmin(z[key], axis=0), np.nanmax(z[key], axis=0)
                ax.plot(x, m, ls, color=col, lw=1.2, label=c["label"])
                ax.fill_between(x, lo, hi, color=col, alpha=0.15, lw=0)
            arrays[f"{c['label']}__train_acc".replace(" ", "_")] = z["train_acc"]
        axes[0, j].set_yscale("log")
        axes[0, j].set_title(kind, fontsize=9)
        axes[1, j].set_xlabel("SGD step")
        axes[1, j].legend(fontsize=6)
    axes[0, 0].set_ylabel("training loss")
    axes[1, 0].set_ylabel("training accuracy")
    arrays["eval_steps"] = data[0]["eval_steps"]
    return save_figure(fig, stem, arrays)


def swap_speedups(res: dict[str, Any], stem: str | Path) -> list[Path]:
    """The speed-up of every condition against the baseline with its 95% interval, one panel per target
    (a forest plot; conditions whose speed-up is not measurable at a target are marked ×)."""
    rows = [(label, r) for label, r in res["protocols"].items() if r.get("targets")]
    targets = list(rows[0][1]["targets"]) if rows else []
    n = max(len(targets), 1)
    fig = Figure(figsize=(3.2 * n + 1.5, 0.32 * max(len(rows), 1) + 1.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, sharey=True, squeeze=False)).ravel()
    arrays: dict[str, np.ndarray] = {}
    ys = np.arange(len(rows))
    for ax, t in zip(axes, targets):
        for y, (label, r) in zip(ys, rows):
            p = r["targets"][t]
            est, (lo, hi) = p["estimate"], p["ci"]
            arrays[f"{label}__{t}".replace(" ", "_")] = np.array([est, lo, hi], dtype=float)
            if not np.isfinite(est):
                ax.plot([1.0], [y], "x", color="0.5")
                continue
            col = {"faster": "C2", "slower": "C3"}.get(p["verdict"], "C0")
            err = [[max(est - lo, 0.0)], [max(hi - est, 0.0)]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar(est, y, xerr=err, fmt="o", ms=4, capsize=2, color=col)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("speed-up (> 1: faster)")
    axes[0].set_yticks(ys, [label for label, _ in rows], fontsize=8)
    axes[0].invert_yaxis()
    return save_figure(fig, stem, arrays)


def swap_delta(conds: list[dict[str, Any]], data: list[dict[str, np.ndarray]], stem: str | Path) -> list[Path]:
    """Histograms of ΔL of the measured moves, per condition."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    arrays = {}
    for n, (c, z) in enumerate(zip(conds, data)):
        d = z.get("move_delta_0")
        if d is None or not d.shape[0]:
            continue
        ax.hist(d[:, 2], bins=60, histtype="step", color=f"C{n % 10}", label=c["label"], density=True)
        arrays[c["label"].replace(" ", "_")] = d[:, 2]
    ax.axvline(0, color="k", lw=0.7)
    ax.set_xlabel("ΔL of a move on its minibatch")
    ax.set_ylabel("density")
    ax.legend(fontsize=6)
    return save_figure(fig, stem, arrays)
