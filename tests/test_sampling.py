"""Unit tests of the inspection policy and the third-party sample (models.sampling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from models import sampling as S

POLICY_FILE = Path(__file__).resolve().parents[1] / "serving" / "policy.yaml"
SECRET = b"test-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def policy() -> S.Policy:
    return S.Policy.from_dict(yaml.safe_load(POLICY_FILE.read_text(encoding="utf-8")))


def test_default_policy_file_is_valid(policy):
    assert policy.version
    assert policy.sampling.pi_min > 0


def test_unknown_policy_key_is_refused():
    with pytest.raises(S.PolicyError, match=r"sampling: unknown key\(s\) \['budget'\]"):
        S.Policy.from_dict({"version": "x", "sampling": {"budget": 3}})


def test_policy_without_version_is_refused():
    with pytest.raises(S.PolicyError, match="version"):
        S.Policy.from_dict({})


def test_policy_version_longer_than_its_store_column_is_refused():
    # The version is written with every decision; a too long one would fail each score later.
    S.Policy.from_dict({"version": "v" * S.POLICY_VERSION_LENGTH})
    with pytest.raises(S.PolicyError, match=r"policy.version: at most 64 characters \(got 65\)"):
        S.Policy.from_dict({"version": "v" * (S.POLICY_VERSION_LENGTH + 1)})


def test_inconsistent_levels_are_refused():
    with pytest.raises(S.PolicyError, match="high bound is below"):
        S.Policy.from_dict(
            {
                "version": "x",
                "risk_levels": {
                    "medium": {"rework_risk": 0.5, "dissatisfaction_prob": 0.2},
                    "high": {"rework_risk": 0.3, "dissatisfaction_prob": 0.4},
                },
            }
        )


def test_base_meets_the_budget(policy):
    cfg = policy.sampling
    rate = S._expected_rate(cfg.base, cfg)
    assert rate * cfg.expected_monthly_orders == pytest.approx(cfg.monthly_budget, rel=1e-9)


def test_floor_wins_when_budget_is_tiny():
    cfg = S.SamplingConfig(monthly_budget=1, expected_monthly_orders=10_000, pi_min=0.01)
    assert S.solve_base(cfg) == 0.0
    pi = S.inclusion_probabilities(["low", "high"], cfg)
    assert np.all(pi == 0.01)


def test_pi_is_clipped_and_monotone_in_level(policy):
    pi = S.inclusion_probabilities(["low", "medium", "high"], policy.sampling)
    assert np.all(np.diff(pi) > 0)
    assert np.all((pi >= policy.sampling.pi_min) & (pi <= 1.0))
    cfg = S.SamplingConfig(
        monthly_budget=3000,
        expected_monthly_orders=4000,
        level_weights={"low": 1, "medium": 2, "high": 50},
    )
    assert S.inclusion_probabilities(["high"], cfg)[0] == 1.0


def test_risk_level_is_the_max_over_heads(policy):
    lv = S.risk_level(
        {
            "rework_risk": np.array([0.01, 0.2, 0.01, 0.5]),
            "dissatisfaction_prob": np.array([0.01, 0.01, 0.5, 0.01]),
        },
        policy.risk_levels,
    )
    assert lv.tolist() == ["low", "medium", "high", "high"]


def test_draw_is_deterministic_keyed_and_uniform():
    ids = [f"WO{i:07d}" for i in range(20_000)]
    u1, _ = S.draw(SECRET, ids, np.full(len(ids), 0.5))
    u2, _ = S.draw(SECRET, ids, np.full(len(ids), 0.5))
    u3, _ = S.draw(b"another-secret-xxxxxxxxxxxx", ids, np.full(len(ids), 0.5))
    assert np.array_equal(u1, u2)
    assert not np.allclose(u1, u3)
    assert np.all((u1 >= 0) & (u1 < 1))
    # uniform: every decile holds ~10 % (binomial sd ~0.2 % here; 1 % is > 4 sd)
    hist = np.histogram(u1, bins=10, range=(0, 1))[0] / len(ids)
    assert np.all(np.abs(hist - 0.1) < 0.01)
    # domains are independent draws
    spot = np.array([S.keyed_uniform(SECRET, i, S.SPOT_CHECK_DOMAIN) for i in ids[:2000]])
    assert abs(np.corrcoef(u1[:2000], spot)[0, 1]) < 0.1


def test_empirical_sampling_rate_matches_sum_of_pi(policy):
    rng = np.random.default_rng(7)
    n = 50_000
    levels = rng.choice(S.RISK_LEVELS, size=n, p=[0.7, 0.2, 0.1])
    pi = S.inclusion_probabilities(levels, policy.sampling)
    _, sampled = S.draw(SECRET, [f"O{i}" for i in range(n)], pi)
    expected = pi.sum()
    sd = np.sqrt(np.sum(pi * (1 - pi)))
    assert abs(sampled.sum() - expected) < 4 * sd
    # and per level: the realised rate matches that level's pi
    for lv in S.RISK_LEVELS:
        m = levels == lv
        p = pi[m][0]
        assert abs(sampled[m].mean() - p) < 4 * np.sqrt(p * (1 - p) / m.sum())


def test_horvitz_thompson_recovers_the_population_rate(policy):
    rng = np.random.default_rng(3)
    n = 50_000
    levels = rng.choice(S.RISK_LEVELS, size=n, p=[0.7, 0.2, 0.1])
    # defects concentrate in risky orders: the naive sample mean is biased upward
    p_defect = np.select([levels == "low", levels == "medium"], [0.05, 0.15], 0.4)
    y = (rng.random(n) < p_defect).astype(float)
    pi = S.inclusion_probabilities(levels, policy.sampling)
    _, s = S.draw(SECRET, [f"O{i}" for i in range(n)], pi)
    truth = y.mean()
    naive = y[s].mean()
    ht = S.ht_total(y[s], pi[s]) / n
    hajek = S.hajek_mean(y[s], pi[s])
    se = np.sqrt(S.ht_variance(y[s], pi[s])) / n
    assert naive > truth + 3 * se  # the sample leans risky
    assert abs(ht - truth) < 4 * se
    assert abs(hajek - truth) < 4 * se


def test_hard_rules_fire_with_their_codes(policy):
    n = 6
    facts = S.OrderFacts(
        order_ids=np.array([f"A{i}" for i in range(n)]),
        category=np.array(
            ["fire_safety", "plumbing", "plumbing", "plumbing", "plumbing", "plumbing"]
        ),
        priority=np.array(["normal"] * n),
        report_night=np.zeros(n),
        report_holiday=np.zeros(n),
        tech_certified=np.array([1, 0, np.nan, 1, 1, 1]),
        has_parent=np.array([False, False, False, True, False, False]),
        days_since_unit_cat_done=np.array([np.nan, np.nan, np.nan, np.nan, 12.0, 45.0]),
        days_since_unit_complaint=np.array([np.nan, np.nan, 3.0, np.nan, np.nan, np.nan]),
    )
    got = S.hard_rule_reasons(facts, policy.hard_rules, SECRET)
    assert got == [
        ["fire_safety"],
        ["uncertified_technician"],
        ["unit_complaint_recent"],
        ["rework_order"],
        ["rework_order"],
        [],
    ]


def test_emergency_spot_check_rate(policy):
    n = 4000
    facts = S.OrderFacts(
        order_ids=np.array([f"E{i}" for i in range(n)]),
        category=np.array(["plumbing"] * n),
        priority=np.array(["emergency"] * n),
        report_night=np.ones(n),
        report_holiday=np.zeros(n),
        tech_certified=np.ones(n),
        has_parent=np.zeros(n, dtype=bool),
        days_since_unit_cat_done=np.full(n, np.nan),
        days_since_unit_complaint=np.full(n, np.nan),
    )
    hit = np.array([bool(r) for r in S.hard_rule_reasons(facts, policy.hard_rules, SECRET)])
    rate = policy.hard_rules.emergency_off_hours_rate
    assert abs(hit.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / n)


def test_model_flags_and_capacity(policy):
    scores = {"rework_risk": np.array([0.5, 0.1]), "dissatisfaction_prob": np.array([0.5, 0.1])}
    assert S.model_threshold_reasons(scores, policy.model_flags) == [
        ["model_rework_risk", "model_dissatisfaction"],
        [],
    ]
    flags = S.ModelFlags(mode="capacity", capacity_per_community_day=2, capacity_min_risk=0.2)
    got = S.capacity_flags(np.array([0.3, 0.1, 0.3, 0.3]), np.array([0, 1, 1, 2]), flags)
    assert got.tolist() == [True, False, True, False]


def test_reason_text_in_business_language():
    assert S.reason_text("model_rework_risk", value=0.41, bound=0.35) == "模型返修风险41%≥阈值35%"
    assert S.reason_text("unit_complaint_recent", days=30) == "该户近30天内有投诉"


def test_batch_draws_and_hard_rules_equal_the_per_order_rules(policy):
    """``keyed_uniforms`` (one keyed HMAC state, copied) and the vectorised hard rules give
    what ``keyed_uniform`` and the rules read order by order give, missing facts included."""
    rng = np.random.default_rng(8)
    n = 3000
    ids = np.array([f"O{i:05d}" for i in range(n)])
    assert S.keyed_uniforms(SECRET, ids) == [S.keyed_uniform(SECRET, str(i)) for i in ids]
    facts = S.OrderFacts(
        order_ids=ids,
        category=rng.choice(["fire_safety", "plumbing", "electric"], n),
        priority=rng.choice(["emergency", "normal"], n),
        report_night=rng.choice([0.0, 1.0, np.nan], n),
        report_holiday=rng.choice([0.0, 1.0, np.nan], n),
        tech_certified=rng.choice([0.0, 1.0, np.nan], n),
        has_parent=rng.random(n) < 0.1,
        days_since_unit_cat_done=np.where(rng.random(n) < 0.3, np.nan, rng.uniform(0, 90, n)),
        days_since_unit_complaint=np.where(rng.random(n) < 0.5, np.nan, rng.uniform(0, 90, n)),
    )
    rules = policy.hard_rules
    want = []
    for i in range(n):
        r = []
        off_hours = np.nan_to_num(facts.report_night[i]) > 0 or (
            np.nan_to_num(facts.report_holiday[i]) > 0
        )
        if rules.fire_safety and facts.category[i] == "fire_safety":
            r.append("fire_safety")
        if (
            rules.emergency_off_hours_rate > 0
            and facts.priority[i] == "emergency"
            and off_hours
            and S.keyed_uniform(SECRET, str(ids[i]), S.SPOT_CHECK_DOMAIN)
            < rules.emergency_off_hours_rate
        ):
            r.append("emergency_off_hours")
        if rules.uncertified_technician and facts.tech_certified[i] == 0:
            r.append("uncertified_technician")
        d = facts.days_since_unit_cat_done[i]
        if rules.rework_order and (
            bool(facts.has_parent[i]) or (not np.isnan(d) and d <= rules.rework_window_days)
        ):
            r.append("rework_order")
        c = facts.days_since_unit_complaint[i]
        if rules.unit_complaint_days > 0 and not np.isnan(c) and c <= rules.unit_complaint_days:
            r.append("unit_complaint_recent")
        want.append(r)
    got = S.hard_rule_reasons(facts, rules, SECRET)
    assert got == want
    assert {c for r in got for c in r} == {
        "fire_safety",
        "emergency_off_hours",
        "uncertified_technician",
        "rework_order",
        "unit_complaint_recent",
    }
