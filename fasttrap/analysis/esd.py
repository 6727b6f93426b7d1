"""Metrics of an empirical spectral density (ESD), with WeightWatcher's definitions.

For the eigenvalues λ_1 ≥ … ≥ λ_m ≥ 0 of a positive semi-definite matrix M = AᵀA (the Jacobian's
𝒥ᵀ𝒥, or a layer's WᵀW), so that the singular values of A are s_i = √λ_i:

* **α**: the exponent of the ESD's power-law tail, p(λ) ∝ λ^−α for λ ≥ λ_min, by the continuous
  Clauset–Shalizi–Newman fit of the ``powerlaw`` package with λ_min chosen by the KS distance (no
  upper cut-off), as WeightWatcher fits it; its standard error (α−1)/√n_tail is that of the
  continuous MLE; ``ks`` is the KS distance D of the fit over the tail. Zero eigenvalues (at or
  below the rank threshold) are left out of the fit: they are the null space, not the tail.
* **λ_max**.
* **stable rank** Σλ / λ_max (WeightWatcher's ``stable_rank``, the squared Frobenius over the
  squared spectral norm of A).
* **hard rank**: the number of λ_i > λ_max · dim · ε_64, the threshold of ``numpy.linalg.matrix_rank``
  (and WeightWatcher's ``matrix_rank``) applied to the dim × dim matrix M that was diagonalised, with
  the float64 machine ε. (WeightWatcher applies it to the singular values of A; eigenvalues of M
  computed in float64 are exact only down to about ε λ_max, so applying it to s = √λ would count
  rounding noise as rank.)
* **matrix entropy** −Σ p_i ln p_i / ln(hard rank), p_i = λ_i / Σλ (WeightWatcher's
  ``matrix_entropy``): 1 for a flat spectrum, → 0 when one direction dominates.

**Spikes.** A k-class problem puts about k outliers at the top of the ESD (the class-mean
directions; Papyan 2019 for the Hessian). They are reported, and α is fitted twice: on every
non-zero eigenvalue and with the top ``n_spikes`` removed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .powerlaw import alpha_standard_error, fit_tail

EPS64 = float(np.finfo(np.float64).eps)
MIN_TAIL = 10      # fewer non-zero eigenvalues than this: no fit (α is NaN)


@dataclass
class TailFit:
    """A continuous power-law fit of the ESD's tail: α ± alpha_err above x_min, KS distance ks."""

    alpha: float
    alpha_err: float
    xmin: float
    ks: float
    n_tail: int


@dataclass
class ESDMetrics:
    """The metrics of one ESD (see the module docstring for the definitions).

    Attributes:
        n: eigenvalues given; dim: the dimension of the matrix diagonalised (for the rank threshold).
        lambda_max, stable_rank, hard_rank, entropy: as defined above.
        fit: the tail fit over every non-zero eigenvalue.
        fit_no_spikes: the same without the top ``n_spikes`` eigenvalues.
        spikes: the top ``n_spikes`` eigenvalues, descending.
    """

    n: int
    dim: int
    lambda_max: float
    stable_rank: float
    hard_rank: int
    entropy: float
    fit: TailFit
    fit_no_spikes: TailFit
    spikes: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_esd_tail(evals: Any, xmin: float | None = None) -> TailFit:
    """The continuous CSN power-law fit of positive eigenvalues ``evals`` (x_min by KS unless given)."""
    x = np.asarray(evals, dtype=np.float64)
    x = x[np.isfinite(x) & (x > 0)]
    if x.size < MIN_TAIL or np.unique(x).size < 3:
        return TailFit(float("nan"), float("nan"), float("nan"), float("nan"), int(x.size))
    _, alpha, xm, ks = fit_tail(x, discrete=False, xmin=xmin)
    n_tail = int((x >= xm).sum())
    return TailFit(float(alpha), float(alpha_standard_error(alpha, xm, n_tail, discrete=False)), float(xm), float(ks), n_tail)


def hard_rank(evals: Any, dim: int | None = None) -> int:
    """Eigenvalues above λ_max · dim · ε_64 (``dim``: the matrix's size, default len(evals))."""
    x = np.asarray(evals, dtype=np.float64)
    if x.size == 0 or not np.nanmax(x) > 0:
        return 0
    tol = np.nanmax(x) * (dim or x.size) * EPS64
    return int((x > tol).sum())


def matrix_entropy(evals: Any, dim: int | None = None) -> float:
    """−Σ p ln p / ln(hard rank), p = λ/Σλ (WeightWatcher's matrix_entropy); NaN for a zero spectrum."""
    x = np.asarray(evals, dtype=np.float64)
    x = x[x > 0]
    r = hard_rank(x, dim)
    if r == 0:
        return float("nan")
    p = x / x.sum()
    return float(-(p * np.log(p)).sum() / np.log(r if r > 1 else 1.000001))


def esd_metrics(evals: Any, n_spikes: int = 0, dim: int | None = None) -> ESDMetrics:
    """Every metric of one ESD.

    Args:
        evals: [m] eigenvalues of a positive semi-definite matrix (any order; negatives from
            rounding are treated as 0).
        n_spikes: how many top eigenvalues count as class spikes (usually the number of classes).
        dim: the size of the matrix diagonalised (default m), for the rank threshold.

    Returns:
        :class:`ESDMetrics`.
    """
    x = np.sort(np.maximum(np.asarray(evals, dtype=np.float64).ravel(), 0.0))[::-1]
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"evals: expected a non-empty array of finite eigenvalues, got {x.size} values"
                         + ("" if x.size == 0 else " with non-finite ones"))
    if not isinstance(n_spikes, (int, np.integer)) or n_spikes < 0:
        raise ValueError(f"n_spikes: expected an int >= 0, got {n_spikes!r}")
    dim = int(dim or x.size)
    lmax = float(x[0])
    r = hard_rank(x, dim)
    nz = x[:r]                 # the non-zero eigenvalues (above the rank threshold)
    return ESDMetrics(
        n=int(x.size), dim=dim, lambda_max=lmax,
        stable_rank=float(x.sum() / lmax) if lmax > 0 else float("nan"),
        hard_rank=r, entropy=matrix_entropy(x, dim),
        fit=fit_esd_tail(nz), fit_no_spikes=fit_esd_tail(nz[n_spikes:]),
        spikes=[float(v) for v in x[:n_spikes]])


# ---- comparing two conditions over seeds ---------------------------------------------------------

def seed_interval(values: Any, level: float = 0.95) -> dict[str, float]:
    """Mean over seeds with its Student-t interval: mean ± t_{S−1} · sd / √S.

    The seeds are the independent replicates; the interval is exact for normal per-seed values and
    its coverage is tested on synthetic ones. NaN values (a metric that could not be computed for a
    seed) are left out, and the count says how many were used.

    Returns:
        ``{"mean", "lo", "hi", "sd", "n"}`` (lo = hi = NaN with fewer than 2 values).
    """
    from scipy import stats

    if not 0 < level < 1:
        raise ValueError(f"level: must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "sd": float("nan"), "n": 0}
    m = float(x.mean())
    if n < 2:
        return {"mean": m, "lo": float("nan"), "hi": float("nan"), "sd": float("nan"), "n": 1}
    sd = float(x.std(ddof=1))
    h = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n))
    return {"mean": m, "lo": m - h, "hi": m + h, "sd": sd, "n": n}


def paired_difference(a: Any, b: Any, level: float = 0.95) -> dict[str, Any]:
    """Condition a against condition b on the same seeds: the mean difference a − b with its paired
    Student-t interval, and whether that interval excludes 0 (the two are *separated* at ``level``).

    Args:
        a, b: [S] one value per seed, seed i of a paired with seed i of b (same initial weights and
            batch order); pairs with a NaN are left out.

    Returns:
        ``{"diff": seed_interval of a−b, "a": seed_interval(a), "b": seed_interval(b),
        "effect": mean difference / sd of the differences (NaN if sd = 0), "relative": mean
        difference / |mean of b|, "separated": bool, "direction": "a > b" | "a < b" | "none"}``.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a, b: expected one value per seed for both, got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = seed_interval(a[ok] - b[ok], level)
    sep = bool(d["n"] >= 2 and (d["lo"] > 0 or d["hi"] < 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = float(d["mean"] / d["sd"]) if d["n"] >= 2 and d["sd"] > 0 else float("nan")
        mb = float(np.mean(b[ok])) if ok.any() else float("nan")
        rel = float(d["mean"] / abs(mb)) if mb != 0 else float("nan")
    return {"diff": d, "a": seed_interval(a[ok], level), "b": seed_interval(b[ok], level), "effect": effect,
            "relative": rel, "separated": sep,
            "direction": ("a > b" if d["mean"] > 0 else "a < b") if sep else "none"}
