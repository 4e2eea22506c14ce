"""Unbiased population rates from the third-party Poisson sample (pure functions, no I/O).

Why: the third-party sample leans toward risky orders (π grows with the risk level, see
``models.sampling``), so its plain mean overstates defect rates. Weighting every sampled order
by 1/π undoes the lean:

* **Horvitz–Thompson (HT)** rate ``Σ_s y/π / N`` with the domain's known population size N:
  exactly unbiased; its variance under Poisson sampling is ``Σ_s (1-π) y² / π² / N²``.
* **Hájek** rate ``Σ_s y/π / Σ_s 1/π``: a ratio, slightly biased (O(1/n)) but usually more
  precise, because the random Poisson sample size cancels; linearised variance
  ``Σ_s (1-π)/π² (y - ȳ)² / N̂²``. It is also the estimator that survives non-response (a sampled
  order whose inspection result is not in yet), where HT with N would be biased low.

Confidence intervals are Wilson intervals at the design-effective sample size
``n_eff = p(1-p)/V̂`` (Korn & Graubard 1998): unlike ``p ± 1.96·se`` they stay inside [0, 1]
and keep their coverage for rare events; with no event in the sample (V̂ = 0) Kish's effective
size ``(Σw)²/Σw²`` is used, so the upper bound stays informative. Coverage is checked by a
simulation test (``tests/test_report_estimates.py``).

Why not a survey library: ``samplics`` (the maintained Python option) estimates variance with
the with-replacement (PSU) approximation, which ignores the finite-population factor (1-π) that
matters here (high-risk orders have π up to 1), and has no Poisson-design variance; the two
formulas above are short and tested instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

#: Two-sided confidence level of every interval in the report.
DEFAULT_LEVEL = 0.95


def wilson_interval(p: float, n_eff: float, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n_eff`` (effective) trials."""
    if not n_eff or n_eff <= 0 or not np.isfinite(p):
        return (math.nan, math.nan)
    z = float(norm.ppf(0.5 + level / 2.0))
    z2n = z * z / n_eff
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(max(p * (1.0 - p) / n_eff + z2n / (4.0 * n_eff), 0.0)) / (1.0 + z2n)
    lo = 0.0 if p <= 0.0 else max(0.0, centre - half)
    hi = 1.0 if p >= 1.0 else min(1.0, centre + half)
    return (lo, hi)


def _n_eff(p: float, var: float, w: np.ndarray) -> float:
    """Design-effective sample size: p(1-p)/V̂, or Kish's (Σw)²/Σw² when V̂ or p(1-p) is 0."""
    if var > 0 and 0.0 < p < 1.0:
        return p * (1.0 - p) / var
    return float(w.sum() ** 2 / np.sum(w**2)) if len(w) else 0.0


@dataclass(frozen=True)
class RateEstimate:
    """One domain's estimates of one rate (floats are NaN when not estimable)."""

    population_orders: int
    eligible_orders: int | None
    sampled: int
    observed: int
    naive: float
    naive_ci: tuple[float, float]
    ht: float
    ht_se: float
    ht_ci: tuple[float, float]
    hajek: float
    hajek_se: float
    hajek_ci: tuple[float, float]
    population_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN → None, rounded to 6 digits)."""

        def r(v: float | None) -> float | None:
            return None if v is None or not np.isfinite(v) else round(float(v), 6)

        def ci(c: tuple[float, float]) -> list[float | None] | None:
            return None if not np.isfinite(c[0]) else [r(c[0]), r(c[1])]

        return {
            "population_orders": self.population_orders,
            "eligible_orders": self.eligible_orders,
            "sampled": self.sampled,
            "observed": self.observed,
            "naive": {"rate": r(self.naive), "ci": ci(self.naive_ci)},
            "horvitz_thompson": {"rate": r(self.ht), "se": r(self.ht_se), "ci": ci(self.ht_ci)},
            "hajek": {"rate": r(self.hajek), "se": r(self.hajek_se), "ci": ci(self.hajek_ci)},
            "population_rate": r(self.population_rate),
        }


def estimate_rate(
    y: np.ndarray,
    pi: np.ndarray,
    sampled: np.ndarray,
    *,
    population_known: bool,
    level: float = DEFAULT_LEVEL,
) -> RateEstimate:
    """Naive, HT and Hájek estimates of the mean of ``y`` over one domain's population.

    Parameters
    ----------
    y
        Per population order: 0/1 outcome, NaN where it is not observed. With
        ``population_known`` (labels of every order are known, e.g. rework from later orders),
        NaN means *not eligible* (censored window, unrated) and the target is the rate among
        eligible orders; the true population rate is returned beside the estimates. Otherwise
        (inspection results exist only for inspected orders) NaN among sampled orders is
        non-response: HT is then not computed (it would be biased low) and Hájek is reported.
    pi, sampled
        Inclusion probability and draw of every population order.
    """
    y = np.asarray(y, dtype=float)
    pi = np.asarray(pi, dtype=float)
    sampled = np.asarray(sampled, dtype=bool)
    if not (len(y) == len(pi) == len(sampled)):
        raise ValueError("y, pi and sampled must have the same length")
    if np.any(~np.isfinite(pi) | (pi <= 0) | (pi > 1)):
        raise ValueError("inclusion probabilities must be in (0, 1]")
    obs = sampled & ~np.isnan(y)
    ys, ps = y[obs], pi[obs]
    w = 1.0 / ps
    n_obs = int(obs.sum())
    nan2 = (math.nan, math.nan)
    if population_known:
        eligible = ~np.isnan(y)
        n_pop = int(eligible.sum())
        truth = float(y[eligible].mean()) if n_pop else None
        nonresponse = False
    else:
        n_pop = len(y)
        truth = None
        nonresponse = bool(np.any(sampled & np.isnan(y)))

    naive = float(ys.mean()) if n_obs else math.nan
    naive_ci = wilson_interval(naive, n_obs, level) if n_obs else nan2

    ht = ht_se = hajek = hajek_se = math.nan
    ht_ci = hajek_ci = nan2
    if n_obs:
        n_hat = float(w.sum())
        hajek = float(np.sum(w * ys) / n_hat)
        v_hj = float(np.sum((1.0 - ps) * w**2 * (ys - hajek) ** 2) / n_hat**2)
        hajek_se = math.sqrt(v_hj)
        hajek_ci = wilson_interval(hajek, _n_eff(hajek, v_hj, w), level)
        if not nonresponse and n_pop:
            ht = float(np.sum(w * ys) / n_pop)
            v_ht = float(np.sum((1.0 - ps) * w**2 * ys**2) / n_pop**2)
            ht_se = math.sqrt(v_ht)
            p_ci = min(max(ht, 0.0), 1.0)
            ht_ci = wilson_interval(p_ci, _n_eff(p_ci, v_ht, w), level)
    return RateEstimate(
        population_orders=len(y),
        eligible_orders=n_pop if population_known else None,
        sampled=int(sampled.sum()),
        observed=n_obs,
        naive=naive,
        naive_ci=naive_ci,
        ht=ht,
        ht_se=ht_se,
        ht_ci=ht_ci,
        hajek=hajek,
        hajek_se=hajek_se,
        hajek_ci=hajek_ci,
        population_rate=truth,
    )


def domain_estimates(
    frame: pd.DataFrame,
    outcome: str,
    by: Sequence[str],
    *,
    population_known: bool,
    pi_col: str = "pi",
    sampled_col: str = "sampled",
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """``{"overall": {...}, "by_<g>": {key: {...}}}`` of :func:`estimate_rate` for one outcome.

    Domains are subsets of the population, so each domain's estimate is the same estimator
    restricted to the domain's orders (the sample size within a domain stays random, which is
    what the Poisson variance accounts for).
    """

    def one(sub: pd.DataFrame) -> dict[str, Any]:
        return estimate_rate(
            sub[outcome].to_numpy(dtype=float),
            sub[pi_col].to_numpy(dtype=float),
            sub[sampled_col].to_numpy(dtype=bool),
            population_known=population_known,
            level=level,
        ).as_dict()

    out: dict[str, Any] = {"overall": one(frame)}
    for g in by:
        out[f"by_{g}"] = {str(k): one(sub) for k, sub in frame.groupby(g, sort=True)}
    return out
