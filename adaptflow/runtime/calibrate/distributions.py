"""Fitting the scenario's distributions to what was recorded: each stage's service time (one of
the schema's ``dist`` kinds, chosen by a goodness-of-fit test) and each source's arrival rate.

Service: every family the schema can write with a mean and a cv (exponential, lognormal, gamma)
is fitted by maximum likelihood (scipy.stats, location fixed at 0) and tested with
Kolmogorov-Smirnov. Among the families the test does not reject (p >= :data:`ALPHA`) the one with
the lowest BIC is chosen: the test says whether a family fits at all, BIC prefers the simpler one
when two fit (a gamma always fits an exponential sample at least as well, with shape near 1).
The KS p-value is computed with parameters estimated from the same data, so it is optimistic
(Lilliefors): a rejection is trustworthy, a pass less so. When every family is rejected the
schema's ``empirical`` distribution replays the recorded times (at most :data:`EMPIRICAL_POINTS`
quantiles). Nearly constant times (cv < :data:`DETERMINISTIC_CV`) are ``deterministic``.

Arrivals: counts per bin are tested for a constant rate (the Poisson dispersion test); a rate
the test does not reject (p >= :data:`CONSTANT_ALPHA`) is written as a constant, else as a
``piecewise`` profile of the rate per bin. Time lost in recording gaps is left out of each bin's
exposure, so a gap does not read as a lull.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
"""KS significance level below which a family is rejected."""
CONSTANT_ALPHA = 0.01
"""Dispersion-test level below which an arrival rate is taken to vary over time."""
MIN_SAMPLES = 20
"""Fewer service times than this are too few to test: an exponential with their mean is written."""
DETERMINISTIC_CV = 0.02
EMPIRICAL_POINTS = 1000
MAX_BINS = 1000
FAMILIES = ("exponential", "lognormal", "gamma")


def sig(value: float, digits: int = 6) -> float:
    """``value`` to ``digits`` significant digits: what a scenario file needs, and readable there
    (the report keeps full precision)."""
    return float(f"{value:.{digits}g}")


def describe(x: np.ndarray) -> dict[str, Any]:
    """Count, mean with its 95% confidence interval (normal approximation), cv."""
    n, mean = len(x), float(np.mean(x))
    sd = float(np.std(x, ddof=1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n) if n > 1 else math.inf
    return {"n": n, "mean": mean, "mean_ci95": [mean - half, mean + half], "cv": sd / mean if mean > 0 else math.nan}


def fit_family(family: str, x: np.ndarray) -> dict[str, Any]:
    """Maximum-likelihood fit of one family (location 0): its mean and cv as the schema writes
    them, the KS statistic and p-value, the log-likelihood and BIC."""
    if family == "exponential":
        dist, k = stats.expon(scale=float(np.mean(x))), 1
    elif family == "lognormal":
        logs = np.log(x)
        dist, k = stats.lognorm(s=float(np.std(logs)), scale=float(np.exp(np.mean(logs)))), 2
    elif family == "gamma":
        shape, _, scale = stats.gamma.fit(x, floc=0)
        dist, k = stats.gamma(shape, scale=scale), 2
    else:
        raise ValueError(f"family {family!r}; expected one of {FAMILIES}")
    loglik = float(np.sum(dist.logpdf(x)))
    ks = stats.kstest(x, dist.cdf)
    mean, sd = float(dist.mean()), float(dist.std())
    return {
        "mean": mean,
        "cv": sd / mean,
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "loglik": loglik,
        "bic": k * math.log(len(x)) - 2 * loglik,
    }


def fit_service(samples: list[float], stage: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The ``service`` block of a stage, the fit's statistics, and warnings."""
    x = np.asarray(samples, dtype=float)
    warnings: list[str] = []
    tiny = int(np.sum(x <= 0))
    if tiny:
        warnings.append(f"stages.{stage}: {tiny} service times <= 0 s (clock skew?) taken as 1 microsecond")
        x = np.maximum(x, 1e-6)
    report = describe(x)
    if len(x) < MIN_SAMPLES:
        warnings.append(
            f"stages.{stage}: only {len(x)} service times (fewer than {MIN_SAMPLES}): an exponential with their "
            "mean, untested"
        )
        return {"dist": "exponential", "mean": sig(report["mean"])}, {**report, "chosen": "exponential"}, warnings
    if report["cv"] < DETERMINISTIC_CV:
        return {"dist": "deterministic", "mean": sig(report["mean"])}, {**report, "chosen": "deterministic"}, warnings
    fits = {family: fit_family(family, x) for family in FAMILIES}
    report["fits"] = fits
    passing = [f for f in FAMILIES if fits[f]["ks_pvalue"] >= ALPHA and fits[f]["cv"] <= 100]
    if passing:
        best = min(passing, key=lambda f: fits[f]["bic"])
        service = {"dist": best, "mean": sig(fits[best]["mean"])}
        if best != "exponential":
            service["cv"] = sig(fits[best]["cv"])
        return service, {**report, "chosen": best}, warnings
    nearest = min(FAMILIES, key=lambda f: fits[f]["bic"])
    warnings.append(
        f"stages.{stage}: every family rejected by KS at {ALPHA} (best by BIC: {nearest}, KS D = "
        f"{fits[nearest]['ks_statistic']:.3f}, p = {fits[nearest]['ks_pvalue']:.2g}): the recorded times are "
        "replayed (empirical)"
    )
    return {"dist": "empirical", "samples": _quantiles(x)}, {**report, "chosen": "empirical"}, warnings


def with_moments(service: dict[str, Any], mean: float, cv: float) -> dict[str, Any]:
    """``service`` (a fitted block) moved to the given mean and cv, keeping its family: the
    family says the shape, the moments come from elsewhere (see :mod:`.sizes`). A fixed time
    that must spread, or an exponential whose cv must differ, becomes a gamma; a replayed sample
    is raised to the power that gives the cv (bisection: the cv of ``x ** k`` grows with ``k``)
    and scaled to the mean."""
    dist = service["dist"]
    if cv < DETERMINISTIC_CV:
        return {"dist": "deterministic", "mean": sig(mean)}
    if dist == "empirical":
        x = np.asarray(service["samples"], dtype=float)
        k = _power_for_cv(x, cv)
        y = x**k
        return {"dist": "empirical", "samples": [sig(v) for v in y * (mean / y.mean())]}
    if dist == "deterministic" or (dist == "exponential" and abs(cv - 1.0) > DETERMINISTIC_CV):
        dist = "gamma"  # a deterministic block takes no cv: with cv near 1 it was written invalid
    out = {"dist": dist, "mean": sig(mean)}
    if dist != "exponential":
        out["cv"] = sig(cv)
    return out


def _power_for_cv(x: np.ndarray, cv: float) -> float:
    def gap(k: float) -> float:
        y = x**k
        return float(np.std(y) / np.mean(y)) - cv

    lo, hi = 1e-3, 1.0
    while gap(hi) < 0 and hi < 64:
        hi *= 2
    if gap(lo) > 0 or gap(hi) < 0:
        return hi if gap(hi) < 0 else lo
    return float(optimize.brentq(gap, lo, hi, xtol=1e-6))


def _quantiles(x: np.ndarray) -> list[float]:
    """At most :data:`EMPIRICAL_POINTS` values standing for the sample: itself, or its quantiles."""
    if len(x) <= EMPIRICAL_POINTS:
        return [sig(v) for v in np.sort(x)]
    levels = (np.arange(EMPIRICAL_POINTS) + 0.5) / EMPIRICAL_POINTS
    return [sig(v) for v in np.quantile(x, levels)]


def bins(horizon: float, width: float) -> np.ndarray:
    """Bin edges over ``[0, horizon]``, ``width`` apart (wider if that makes over MAX_BINS bins;
    a last bin shorter than half a width joins the one before)."""
    width = max(width, horizon / MAX_BINS)
    edges = np.arange(0.0, horizon, width)
    if len(edges) > 1 and horizon - edges[-1] < width / 2:
        edges = edges[:-1]  # a short last bin joins the one before: its rate would be mostly noise
    return np.append(edges, horizon)


def exposure(edges: np.ndarray, gaps: list[tuple[float, float]]) -> np.ndarray:
    """Each bin's length less the time of recording gaps inside it."""
    lo, hi = edges[:-1], edges[1:]
    seen = hi - lo
    for start, end in gaps:
        seen -= np.clip(np.minimum(hi, end) - np.maximum(lo, start), 0.0, None)
    return np.maximum(seen, 0.0)


def fit_arrivals(
    times: np.ndarray, horizon: float, gaps: list[tuple[float, float]], width: float
) -> tuple[float | dict[str, Any], dict[str, Any]]:
    """A Poisson source's ``rate`` (a number, or a piecewise profile) and the test behind it."""
    edges = bins(horizon, width)
    counts = np.histogram(times, edges)[0].astype(float)
    seen = exposure(edges, gaps)
    keep = seen > 0
    rate = float(counts[keep].sum() / seen[keep].sum())
    expected = rate * seen[keep]
    chi2 = float(np.sum((counts[keep] - expected) ** 2 / expected))
    df = int(keep.sum()) - 1
    pvalue = float(stats.chi2.sf(chi2, df)) if df > 0 else 1.0
    gaps_between = np.diff(times)
    ks = stats.kstest(gaps_between, "expon", args=(0, 1 / rate)) if len(gaps_between) > 1 else None
    report = {
        "arrivals": len(times),
        "mean_rate": rate,
        "bin": float(edges[1] - edges[0]),
        "dispersion_chi2": chi2,
        "dispersion_df": df,
        "dispersion_pvalue": pvalue,
        "interarrival_ks_statistic": float(ks.statistic) if ks else None,
        "interarrival_ks_pvalue": float(ks.pvalue) if ks else None,
    }
    if pvalue >= CONSTANT_ALPHA:
        return sig(rate), {**report, "chosen": "constant"}
    values = np.where(keep, counts / np.where(keep, seen, 1.0), np.nan)
    values = _fill_forward(values, rate)
    profile = {"shape": "piecewise", "times": [float(t) for t in edges[:-1]], "values": [sig(v) for v in values]}
    return profile, {**report, "chosen": "piecewise"}


def _fill_forward(values: np.ndarray, default: float) -> np.ndarray:
    """Bins wholly inside a gap take the rate of the bin before (the mean rate at the start)."""
    out, last = values.copy(), default
    for k, v in enumerate(out):
        if np.isnan(v):
            out[k] = last
        else:
            last = v
    return out
