"""Is the trapping-time distribution a power law? Clauset, Shalizi & Newman (SIAM Review 2009).

* The discrete power-law MLE with x_min chosen by the KS distance, and the likelihood-ratio tests
  against exponential, lognormal and truncated power law, come from the ``powerlaw`` package
  (Alstott, Bullmore & Plenz 2014), with alpha allowed anywhere in (1, 20]: the package's default
  range is [0, 3], which would clip steeper distributions to exactly 3.
* The standard error of alpha is computed here, not taken from the package: its ``sigma`` (now
  ``standard_err``) is the continuous MLE's (α−1)/√n, which understates the error of the discrete
  MLE, by 13% at α = 2.5 and 28% at α = 3.4 with x_min = 1. For the discrete fit it is
  1/√(n_tail·Var(ln X)), the observed Fisher information of the Hurwitz-ζ likelihood (exact for this
  one-parameter exponential family), from mpmath's derivatives of ζ(α, x_min).
* The goodness-of-fit p-value, which that package lacks, is the paper's semi-parametric bootstrap
  (§4.1): each synthetic set draws, with probability n_tail/n, from the fitted power law above
  x_min and otherwise from the observed values below it; the synthetic set is refitted with the
  same procedure (x_min included) and p is the fraction of synthetic KS distances at least as large
  as the observed one. p ≳ 0.1 means the power law is plausible, not that it is proven.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import special

from ..common.progress import Progress

ALTERNATIVES = ("exponential", "lognormal", "truncated_power_law")
# A power law is a statement about a range: a tail of a few repeated values, or one spanning less
# than a decade, cannot tell it from an exponential or anything else, whatever a p-value says.
MIN_DISTINCT = 5
MIN_DECADES = 1.0


@dataclass
class PowerLawFit:
    """Result of :func:`fit_power_law`.

    Attributes:
        alpha, alpha_err: exponent of p(x) ∝ x^-alpha above xmin, and its standard error (of the
            discrete MLE when ``discrete``: see :func:`alpha_standard_error`).
        xmin: lower bound of the power-law regime (chosen by KS distance unless given).
        n, n_tail: number of samples, and of samples ≥ xmin.
        ks: KS distance of the fit over the tail.
        p_value: bootstrap goodness-of-fit p (NaN if n_bootstrap = 0).
        n_bootstrap: synthetic sets used (p's standard error is about sqrt(p(1-p)/n_bootstrap));
            sets that could not be refitted are left out of both counts.
        comparisons: per alternative, ``{"R": log-likelihood ratio (normalised; > 0 favours the
            power law), "p": its significance}``.
        discrete: whether the discrete MLE was used.
        tail_distinct, tail_decades: distinct values at or above x_min, and log10(max / x_min).
        testable: whether the tail has the range a power-law test needs (:data:`MIN_DISTINCT`
            distinct values over at least :data:`MIN_DECADES` decade); when it has not, the
            verdict says "not testable", whatever p says.
    """

    alpha: float
    alpha_err: float
    xmin: float
    n: int
    n_tail: int
    ks: float
    p_value: float
    n_bootstrap: int
    comparisons: dict[str, dict[str, float]] = field(default_factory=dict)
    discrete: bool = True
    tail_distinct: int = 0
    tail_decades: float = float("nan")
    testable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def verdict(self) -> str:
        """A one-line reading in Clauset et al.'s terms ("not testable" when the tail lacks range)."""
        if not self.testable:
            return (f"not testable: too little range (alpha = {self.alpha:.2f} ± {self.alpha_err:.2f} above xmin = "
                    f"{self.xmin:g}: {self.n_tail}/{self.n} samples with {self.tail_distinct} distinct values over "
                    f"{self.tail_decades:.2f} decades; a test needs >= {MIN_DISTINCT} distinct values over >= "
                    f"{MIN_DECADES:g} decade)")
        if not np.isfinite(self.p_value):
            gof = "goodness of fit not tested"
        elif self.p_value >= 0.1:
            gof = f"power law plausible (bootstrap p = {self.p_value:.2f})"
        else:
            gof = f"power law rejected (bootstrap p = {self.p_value:.2f} < 0.1)"
        favoured = [k for k, v in self.comparisons.items() if v["p"] < 0.1 and v["R"] < 0]
        alt = f"; significantly better: {', '.join(favoured)}" if favoured else ""
        return f"alpha = {self.alpha:.2f} ± {self.alpha_err:.2f} above xmin = {self.xmin:g} ({self.n_tail}/{self.n} samples); {gof}{alt}"


@contextlib.contextmanager
def _quiet():
    """powerlaw's own noise, and only that: what it prints, the numerical warnings of its x_min scan
    (divide-by-zero at candidate x_min with one sample), the UserWarning it gives for an
    alternative that fails to fit (reported here as NaN), and one DeprecationWarning that
    powerlaw 2.0 raises from its *own* x_min scan (``fitting.py`` reads ``.sigma``); fasttrap reads
    neither ``sigma`` nor ``standard_err``. Every other warning, deprecations included, reaches
    the caller (a test turns them into errors)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="powerlaw")
        warnings.filterwarnings("ignore", message="Standard error for the MLE should be accessed using the "
                                                  "'standard_err' property", category=DeprecationWarning)
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def fit_tail(data: np.ndarray, discrete: bool, xmin: float | None) -> tuple[Any, float, float, float]:
    """The CSN fit of one sample: (the ``powerlaw.Fit``, alpha, x_min, KS distance over the tail).

    powerlaw fits lazily, on attribute access, so everything is read inside the quiet context.
    """
    import powerlaw

    with _quiet():
        # powerlaw 2.0 bounds a power law's alpha to [0, 3] by default, which silently clips every
        # steeper distribution to 3; alpha > 1 is all a normalisable power law needs.
        kw = {"discrete": discrete, "verbose": False, "parameter_ranges": {"alpha": [1.0 + 1e-6, 20.0]}}
        if xmin is not None:
            kw["xmin"] = xmin
        f = powerlaw.Fit(data, **kw)
        pl = f.power_law
        return f, float(pl.alpha), float(pl.xmin), float(pl.D)


def alpha_standard_error(alpha: float, xmin: float, n_tail: int, discrete: bool = True) -> float:
    """Standard error of the power-law MLE of alpha from ``n_tail`` samples above ``xmin``.

    Discrete: log L(α) = −α Σ ln x_i − n ln ζ(α, x_min), so the observed information is
    n·Var_α(ln X) = n·[ζ''/ζ − (ζ'/ζ)²] (derivatives in α; it does not depend on the data, being an
    exponential family) and σ = 1/√(n Var). Continuous: Var(ln X) = 1/(α−1)², σ = (α−1)/√n.
    """
    if not alpha > 1 or n_tail < 1:
        return float("nan")
    if not discrete:
        return (alpha - 1) / np.sqrt(n_tail)
    import mpmath

    a, q = mpmath.mpf(alpha), mpmath.mpf(xmin)
    Z, Z1, Z2 = mpmath.zeta(a, q), mpmath.zeta(a, q, 1), mpmath.zeta(a, q, 2)
    var = float(Z2 / Z - (Z1 / Z) ** 2)
    return 1.0 / np.sqrt(n_tail * var) if var > 0 else float("nan")


@lru_cache(maxsize=8)
def _ccdf_table(alpha: float, xmin: int, span: int = 10**6) -> tuple[np.ndarray, np.ndarray, float, float]:
    xs = np.arange(xmin, xmin + span, dtype=np.float64)
    Z = float(special.zeta(alpha, xmin))
    # decreasing, ccdf[0] = 1; and P(X >= the first value beyond the table)
    return xs, special.zeta(alpha, xs) / Z, Z, float(special.zeta(alpha, xmin + span)) / Z


def discrete_power_law_ppf(u: Any, alpha: float, xmin: int) -> np.ndarray:
    """The inverse of the CCDF of p(x) = x^-alpha / ζ(alpha, xmin): the largest x with P(X ≥ x) ≥ u.

    Args:
        u: [n] probabilities in (0, 1].
        alpha: exponent > 1.
        xmin: smallest value (an integer ≥ 1).

    Returns:
        [n] integer values as float64 (the far tail of alpha < 2 exceeds int64's range).

    P(X ≥ x) = ζ(alpha, x)/ζ(alpha, xmin) is tabulated exactly up to xmin + 10⁶. Beyond, the same u
    inverts ζ(alpha, x) ≈ (x − ½)^(1−alpha)/(alpha − 1), whose relative error is O(x⁻²) (< 10⁻¹² there):
    x = ⌊½ + ((alpha−1) u ζ(alpha, xmin))^(−1/(alpha−1))⌋, continuous with the table at its end.
    """
    if not alpha > 1:
        raise ValueError(f"alpha: must be > 1, got {alpha}")
    xmin = int(xmin)
    if xmin < 1:
        raise ValueError(f"xmin: must be an integer >= 1, got {xmin}")
    u = np.asarray(u, dtype=np.float64)
    xs, ccdf, Z, beyond = _ccdf_table(float(alpha), xmin)
    idx = np.searchsorted(-ccdf, -u, side="right") - 1
    out = xs[np.clip(idx, 0, xs.size - 1)]
    far = u <= beyond          # then the answer lies beyond the table
    if far.any():
        t = ((alpha - 1) * u[far] * Z) ** (-1 / (alpha - 1))
        out[far] = np.maximum(np.floor(0.5 + t), xs[-1] + 1)
    return out


def discrete_power_law_sample(alpha: float, xmin: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Exact samples of p(x) = x^-alpha / ζ(alpha, xmin), x = xmin, xmin+1, … (inverse CCDF).

    Returns:
        [size] integer values as float64 (see :func:`discrete_power_law_ppf`).
    """
    u = rng.random(size)
    u[u == 0] = 2.0**-54        # u = 0 (probability 2^-53) would be x = ∞; the next representable draw instead
    return discrete_power_law_ppf(u, alpha, xmin)


def compare_alternatives(fit: Any) -> dict[str, dict[str, float]]:
    """Likelihood-ratio tests of the power law against each of :data:`ALTERNATIVES`.

    Returns:
        per alternative ``{"R": normalised log-likelihood ratio (> 0 favours the power law), "p": its
        significance}``; NaN where the alternative could not be fitted.
    """
    comps: dict[str, dict[str, float]] = {}
    for alt in ALTERNATIVES:
        with _quiet():
            try:
                R, p = fit.distribution_compare("power_law", alt, normalized_ratio=True)
            except Exception:  # noqa: BLE001 - a failed alternative fit is reported as NaN
                R, p = np.nan, np.nan
        comps[alt] = {"R": float(R), "p": float(p)}
    return comps


def goodness_of_fit(x: np.ndarray, alpha: float, xmin: float, ks: float, discrete: bool, n_bootstrap: int,
                    fixed_xmin: float | None = None, seed: int = 0, progress: bool | None = False
                    ) -> tuple[float, int]:
    """The bootstrap goodness-of-fit p of Clauset et al. §4.1, and the number of sets it used.

    Each synthetic set draws, with probability n_tail/n, from the fitted power law above x_min and
    otherwise from the observed values below it, and is refitted by the same procedure (x_min
    chosen again unless ``fixed_xmin``); p is the fraction of synthetic KS distances ≥ ``ks``.
    Sets that cannot be refitted are left out of both counts.

    Args:
        x: [n] the sample; alpha, xmin, ks: its fit.
        discrete: discrete or continuous power law.
        n_bootstrap: synthetic sets.
        fixed_xmin: refit with this x_min (None: choose it by KS distance, as the fit did).
        seed: seed of the draws.
        progress: a progress bar.
    """
    rng = np.random.default_rng(seed)
    below = x[x < xmin]
    n, n_tail = x.size, int((x >= xmin).sum())
    hits = used = 0
    bar = Progress(n_bootstrap, "power-law bootstrap", "fit", enabled=progress)
    try:
        for b in range(n_bootstrap):
            k = rng.binomial(n, n_tail / n)
            if discrete:
                syn_tail = discrete_power_law_sample(alpha, int(xmin), k, rng)
            else:
                syn_tail = xmin * (1 - rng.random(k)) ** (-1 / (alpha - 1))
            syn = np.concatenate([syn_tail, rng.choice(below, n - k) if below.size and n - k > 0 else []])
            bar.update_to(b + 1)
            if np.unique(syn).size < 3:
                continue
            try:
                Db = fit_tail(syn, discrete, fixed_xmin)[3]
            except Exception:  # noqa: BLE001 - a synthetic set powerlaw cannot fit is left out
                continue
            if np.isfinite(Db):
                used += 1
                hits += Db >= ks
    finally:
        bar.close()
    return (hits / used if used else float("nan")), used


def _check_sample(times: Any, discrete: bool) -> np.ndarray:
    x = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("times: contains NaN or infinite values")
    x = x[x > 0]
    if x.size < 10 or np.unique(x).size < 3:
        raise ValueError(f"times: need at least 10 positive samples with 3 distinct values to fit, got {x.size} "
                         f"samples, {np.unique(x).size} distinct")
    if discrete and not np.all(x == np.round(x)):
        raise ValueError("times: discrete=True needs integer values")
    return x


def fit_power_law(times: Any, discrete: bool = True, n_bootstrap: int = 200, xmin: float | None = None,
                  seed: int = 0, progress: bool | None = False, compare: bool = True) -> PowerLawFit:
    """Fit a power law to trapping times and test it, following Clauset, Shalizi & Newman.

    Three jobs, each a function of its own: the fit (:func:`fit_tail`, with
    :func:`alpha_standard_error`), the comparisons with alternatives (:func:`compare_alternatives`) and the
    bootstrap goodness of fit (:func:`goodness_of_fit`).

    Args:
        times: positive samples (trapping times: integers, hence ``discrete=True``).
        discrete: discrete (default) or continuous MLE.
        n_bootstrap: synthetic sets for the goodness-of-fit p (0 skips it). The paper recommends
            2500 for ±0.01 on p; 200 gives about ±0.035.
        xmin: fix x_min instead of choosing it by KS distance (the bootstrap then fixes it too).
        seed: seed of the bootstrap's random draws.
        progress: a progress bar over the bootstrap.
        compare: run the likelihood-ratio comparisons with the alternatives.

    Returns:
        :class:`PowerLawFit`.

    Raises:
        ValueError: fewer than 10 positive samples, or fewer than 3 distinct values.
    """
    x = _check_sample(times, discrete)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap: expected an int >= 0, got {n_bootstrap!r}")
    try:
        fit, alpha, xm, D = fit_tail(x, discrete, xmin)
    except Exception as exc:  # noqa: BLE001 - powerlaw raises bare ValueErrors/RuntimeErrors on degenerate data
        raise ValueError(f"times: the power-law fit failed on these samples ({exc})") from None
    if not (np.isfinite(alpha) and np.isfinite(D)):
        raise ValueError("times: the power-law fit did not converge on these samples")
    tail = x[x >= xm]
    n_tail = int(tail.size)
    distinct = int(np.unique(tail).size)
    decades = float(np.log10(tail.max() / xm)) if n_tail else 0.0
    comps = compare_alternatives(fit) if compare else {}
    p_value, used = float("nan"), 0
    if n_bootstrap > 0:
        p_value, used = goodness_of_fit(x, alpha, xm, D, discrete, int(n_bootstrap), xmin, seed, progress)
    return PowerLawFit(alpha=alpha, alpha_err=alpha_standard_error(alpha, xm, n_tail, discrete), xmin=xm,
                       n=int(x.size), n_tail=n_tail, ks=D, p_value=p_value, n_bootstrap=int(used),
                       comparisons=comps, discrete=discrete, tail_distinct=distinct, tail_decades=decades,
                       testable=distinct >= MIN_DISTINCT and decades >= MIN_DECADES)
