"""Is the trapping-time distribution a power law? Clauset, Shalizi & Newman (SIAM Review 2009).

* The discrete power-law MLE with x_min chosen by the KS distance, and the likelihood-ratio tests
  against exponential, lognormal and truncated power law, come from the ``powerlaw`` package
  (Alstott, Bullmore & Plenz 2014), with alpha allowed anywhere in (1, 20]: the package's default
  range is [0, 3], which would clip steeper distributions to exactly 3.
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


@dataclass
class PowerLawFit:
    """Result of :func:`fit_power_law`.

    Attributes:
        alpha, alpha_err: exponent of p(x) ∝ x^-alpha above xmin, and its standard error.
        xmin: lower bound of the power-law regime (chosen by KS distance unless given).
        n, n_tail: number of samples, and of samples ≥ xmin.
        ks: KS distance of the fit over the tail.
        p_value: bootstrap goodness-of-fit p (NaN if n_bootstrap = 0).
        n_bootstrap: synthetic sets used (p's standard error is about sqrt(p(1-p)/n_bootstrap));
            sets that could not be refitted are left out of both counts.
        comparisons: per alternative, ``{"R": log-likelihood ratio (normalised; > 0 favours the
            power law), "p": its significance}``.
        discrete: whether the discrete MLE was used.
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def verdict(self) -> str:
        """A one-line reading in Clauset et al.'s terms."""
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
    # powerlaw prints and warns freely (divide-by-zero in its xmin scan); none of it is ours to show.
    with warnings.catch_warnings(), np.errstate(all="ignore"), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _fit(data: np.ndarray, discrete: bool, xmin: float | None) -> tuple[Any, float, float, float, float]:
    """(the powerlaw.Fit, alpha, alpha_err, xmin, KS distance); powerlaw fits lazily, on attribute
    access, so everything is read inside the quiet context."""
    import powerlaw

    with _quiet():
        # powerlaw 2.0 bounds a power law's alpha to [0, 3] by default, which silently clips every
        # steeper distribution to 3; alpha > 1 is all a normalisable power law needs.
        kw = {"discrete": discrete, "verbose": False, "parameter_ranges": {"alpha": [1.0 + 1e-6, 20.0]}}
        if xmin is not None:
            kw["xmin"] = xmin
        f = powerlaw.Fit(data, **kw)
        pl = f.power_law
        return f, float(pl.alpha), float(pl.sigma), float(pl.xmin), float(pl.D)


@lru_cache(maxsize=8)
def _ccdf_table(alpha: float, xmin: int, span: int = 10**6) -> tuple[np.ndarray, np.ndarray]:
    xs = np.arange(xmin, xmin + span, dtype=np.float64)
    return xs, special.zeta(alpha, xs) / special.zeta(alpha, xmin)     # decreasing, ccdf[0] = 1


def discrete_power_law_sample(alpha: float, xmin: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Exact samples of p(x) = x^-alpha / ζ(alpha, xmin), x = xmin, xmin+1, … (inverse CDF).

    The CCDF P(X ≥ x) = ζ(alpha, x)/ζ(alpha, xmin) is tabulated up to xmin + 10⁶; the rare draws
    beyond use the continuous approximation of Clauset et al. (eq. D.6), whose error is negligible
    that far out.
    """
    if not alpha > 1:
        raise ValueError(f"alpha: must be > 1, got {alpha}")
    xmin = int(xmin)
    u = rng.random(size)
    xs, ccdf = _ccdf_table(float(alpha), xmin)
    span = xs.size
    # x is the largest value with ccdf(x) ≥ u
    idx = np.searchsorted(-ccdf, -u, side="right") - 1
    out = xs[np.clip(idx, 0, span - 1)]
    far = u < ccdf[-1]
    if far.any():
        out[far] = np.floor((xmin - 0.5) * (1 - rng.random(int(far.sum()))) ** (-1 / (alpha - 1)) + 0.5)
        out[far] = np.maximum(out[far], xmin + span)
    return out.astype(np.int64)


def fit_power_law(times: Any, discrete: bool = True, n_bootstrap: int = 200, xmin: float | None = None,
                  seed: int = 0, progress: bool | None = False, compare: bool = True) -> PowerLawFit:
    """Fit a power law to trapping times and test it, following Clauset, Shalizi & Newman.

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
    x = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("times: contains NaN or infinite values")
    x = x[x > 0]
    if x.size < 10 or np.unique(x).size < 3:
        raise ValueError(f"times: need at least 10 positive samples with 3 distinct values to fit, got {x.size} "
                         f"samples, {np.unique(x).size} distinct")
    if discrete and not np.all(x == np.round(x)):
        raise ValueError("times: discrete=True needs integer values")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap: expected an int >= 0, got {n_bootstrap!r}")
    try:
        fit, alpha, alpha_err, xm, D = _fit(x, discrete, xmin)
    except Exception as exc:  # noqa: BLE001 - powerlaw raises bare ValueErrors/RuntimeErrors on degenerate data
        raise ValueError(f"times: the power-law fit failed on these samples ({exc})") from None
    if not (np.isfinite(alpha) and np.isfinite(D)):
        raise ValueError("times: the power-law fit did not converge on these samples")
    tail = x[x >= xm]
    comps: dict[str, dict[str, float]] = {}
    for alt in ALTERNATIVES if compare else ():
        with _quiet():
            try:
                R, p = fit.distribution_compare("power_law", alt, normalized_ratio=True)
            except Exception:  # noqa: BLE001 - a failed alternative fit is reported as NaN
                R, p = np.nan, np.nan
        comps[alt] = {"R": float(R), "p": float(p)}
    p_value = float("nan")
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        below = x[x < xm]
        n, n_tail = x.size, tail.size
        hits = used = 0
        bar = Progress(n_bootstrap, "power-law bootstrap", "fit", enabled=progress)
        try:
            for b in range(n_bootstrap):
                k = rng.binomial(n, n_tail / n)
                if discrete:
                    syn_tail = discrete_power_law_sample(alpha, int(xm), k, rng).astype(np.float64)
                else:
                    syn_tail = xm * (1 - rng.random(k)) ** (-1 / (alpha - 1))
                syn = np.concatenate([syn_tail, rng.choice(below, n - k) if below.size and n - k > 0 else []])
                bar.update_to(b + 1)
                if np.unique(syn).size < 3:
                    continue
                try:
                    Db = _fit(syn, discrete, xmin)[4]
                except Exception:  # noqa: BLE001 - a synthetic set powerlaw cannot fit is left out
                    continue
                if np.isfinite(Db):
                    used += 1
                    hits += Db >= D
        finally:
            bar.close()
        p_value = hits / used if used else float("nan")
        n_bootstrap = used
    return PowerLawFit(alpha=alpha, alpha_err=alpha_err, xmin=xm, n=int(x.size), n_tail=int(tail.size), ks=D,
                       p_value=p_value, n_bootstrap=int(n_bootstrap), comparisons=comps, discrete=discrete)
