"""HT / Hájek estimates from the third-party Poisson sample: unbiasedness and CI coverage.

The population's defects concentrate in high-risk orders, which the policy samples 4x more
often: the naive sample mean must be biased up, the weighted estimators must not be, and their
95 % intervals must cover the population rate about 95 % of the time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.estimates import domain_estimates, estimate_rate, wilson_interval
from models.sampling import SamplingConfig, inclusion_probabilities


def _population(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    levels = rng.choice(["low", "medium", "high"], size=n, p=[0.7, 0.2, 0.1])
    p = np.select([levels == "high", levels == "medium"], [0.35, 0.15], 0.04)
    y = (rng.random(n) < p).astype(float)
    pi = inclusion_probabilities(levels, SamplingConfig())
    return y, pi


def test_ht_and_hajek_unbiased_naive_biased_and_ci_coverage():
    y, pi = _population()
    truth = y.mean()
    rng = np.random.default_rng(1)
    reps = 600
    ht, hj, nv, cov_ht, cov_hj, cov_nv = [], [], [], 0, 0, 0
    for _ in range(reps):
        s = rng.random(len(y)) < pi
        e = estimate_rate(y, pi, s, population_known=True)
        ht.append(e.ht)
        hj.append(e.hajek)
        nv.append(e.naive)
        cov_ht += e.ht_ci[0] <= truth <= e.ht_ci[1]
        cov_hj += e.hajek_ci[0] <= truth <= e.hajek_ci[1]
        cov_nv += e.naive_ci[0] <= truth <= e.naive_ci[1]
    se_mc = np.std(ht) / np.sqrt(reps)
    assert abs(np.mean(ht) - truth) < 4 * se_mc
    assert abs(np.mean(hj) - truth) < 4 * np.std(hj) / np.sqrt(reps)
    assert np.mean(nv) > truth + 0.03  # risk-weighted sampling inflates the plain mean
    # 95 % intervals: coverage within Monte-Carlo error of 0.95 (sd ~ 0.009 at 600 reps)
    assert 0.92 <= cov_ht / reps <= 0.98
    assert 0.92 <= cov_hj / reps <= 0.98
    assert cov_nv / reps < 0.5
    # the estimated standard error matches the spread over repeated samples
    e = estimate_rate(y, pi, rng.random(len(y)) < pi, population_known=True)
    assert e.hajek_se == pytest.approx(np.std(hj), rel=0.35)
    assert e.population_rate == pytest.approx(truth)


def test_rare_event_interval_coverage():
    """Few events per sample: the Wilson interval at the effective size keeps its coverage."""
    rng = np.random.default_rng(3)
    n = 1500
    levels = rng.choice(["low", "medium", "high"], size=n, p=[0.7, 0.2, 0.1])
    y = (rng.random(n) < np.where(levels == "high", 0.08, 0.01)).astype(float)
    pi = inclusion_probabilities(levels, SamplingConfig())
    truth = y.mean()
    reps, cov = 500, 0
    for _ in range(reps):
        e = estimate_rate(y, pi, rng.random(n) < pi, population_known=True)
        cov += e.hajek_ci[0] <= truth <= e.hajek_ci[1]
    assert cov / reps >= 0.90


def test_nonresponse_and_ineligible():
    y = np.array([1.0, 0.0, np.nan, np.nan, 1.0])
    pi = np.array([0.5, 0.5, 0.5, 1.0, 0.25])
    s = np.array([True, True, True, False, False])
    # inspection-type outcome: NaN among sampled = non-response -> no HT, Hájek over responders
    e = estimate_rate(y, pi, s, population_known=False)
    assert np.isnan(e.ht) and e.hajek == pytest.approx(0.5)
    assert e.observed == 2 and e.sampled == 3 and e.population_rate is None
    # label-type outcome: NaN = not eligible; HT divides by the eligible count
    e = estimate_rate(y, pi, s, population_known=True)
    assert e.eligible_orders == 3
    assert e.ht == pytest.approx((1 / 0.5) / 3)
    assert e.population_rate == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="inclusion probabilities"):
        estimate_rate(y, np.zeros(5), s, population_known=True)


def test_no_event_keeps_an_upper_bound_and_domains():
    lo, hi = wilson_interval(0.0, 50)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.0 < hi < 0.1
    frame = pd.DataFrame(
        {
            "community_id": ["A"] * 4 + ["B"] * 4,
            "y": [0, 0, 0, 0, 1, 1, 0, 1],
            "pi": [0.5] * 8,
            "sampled": [True, True, False, False, True, True, True, False],
        }
    )
    d = domain_estimates(frame, "y", ["community_id"], population_known=True)
    a = d["by_community_id"]["A"]
    assert a["hajek"]["rate"] == 0.0 and a["hajek"]["ci"][1] > 0
    assert d["by_community_id"]["B"]["population_rate"] == 0.75
    assert d["overall"]["sampled"] == 5
