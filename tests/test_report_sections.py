"""The report's quality-loop sections on constructed cases: dossiers (O/E, funnel limits,
shrinkage, flags), drift, repeat orders, and the store source with hand-built frames."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from models.dossiers import (
    DossierConfig,
    eb_prior,
    funnel_limits,
    poisson_limit,
    technician_dossiers,
)
from models.drift import drift_level, psi, psi_categorical, psi_numeric
from pipelines.report_sections import repeat_flags
from tests.synth_orders import make_orders


@pytest.fixture(autouse=True)
def _no_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-registry.db'}")


def _jobs(
    tech: str, n: int, p: float, events: int, dissat_events: int | None = None
) -> pd.DataFrame:
    y = np.zeros(n)
    y[:events] = 1
    dissat = np.zeros(n)  # dissatisfaction exactly as expected (5 %) for everyone
    dissat[n - (int(round(0.05 * n)) if dissat_events is None else dissat_events) :] = 1
    return pd.DataFrame(
        {
            "order_id": [f"{tech}-{i}" for i in range(n)],
            "technician_id": tech,
            "category": "plumbing",
            "priority": "normal",
            "rating": 5,
            "complaint": False,
            "rework": y,
            "rework_risk": p,
            "dissatisfied": dissat,
            "dissatisfaction_prob": 0.05,
        }
    )


def test_funnel_limits_match_poisson_quantiles_and_narrow():
    # Poisson(20): 97.5 % quantile 29, 2.5 % quantile 12; interpolated limits sit just below
    assert 28 < poisson_limit(20.0, 0.975)[0] <= 29
    assert 11 < poisson_limit(20.0, 0.025)[0] <= 12
    lo, hi = funnel_limits(np.array([2.0, 20.0, 200.0]), 0.95)
    assert np.all(np.diff(hi) < 0) and np.all(np.diff(lo) > 0)  # the funnel narrows
    lo998, hi998 = funnel_limits(np.array([2.0, 20.0, 200.0]), 0.998)
    assert np.all(hi998 > hi) and np.all(lo998 <= lo)


def test_dossiers_flag_by_observed_vs_expected_not_raw_rates():
    frame = pd.concat(
        [
            _jobs("A", 200, 0.10, 20),  # as expected
            _jobs("B", 200, 0.10, 40),  # twice the expected reworks: beyond 99.8 %
            _jobs("C", 200, 0.10, 8),  # well below: excellent
            _jobs("D", 5, 0.10, 1),  # E = 0.5: too few to judge
            _jobs("E", 100, 0.40, 40),  # hard jobs: 40 % raw rework, but exactly as expected
            _jobs("F", 200, 0.10, 8, dissat_events=15),  # few reworks, but unhappy residents
        ],
        ignore_index=True,
    )
    ins = pd.DataFrame(
        {
            "order_id": ["B-0", "B-1", "B-2"],
            "kind": ["internal", "internal", "third_party"],
            "passed": [False, False, True],
            "overturned": [False, True, False],
        }
    )
    appeals = pd.DataFrame({"technician_id": ["B"], "status": ["upheld"]})
    d = technician_dossiers(frame, DossierConfig(), inspections=ins, appeals=appeals)
    t = d["technicians"]
    assert t["A"]["flag"] == "as_expected" and t["A"]["rework"]["oe"] == pytest.approx(1.0)
    assert t["B"]["flag"] == "needs_coaching" and t["B"]["rework"]["position"] == "above_998"
    assert t["C"]["flag"] == "excellent" and "表扬" in t["C"]["note_zh"]
    assert "复核" in t["B"]["note_zh"]  # a suggestion, never an automatic penalty
    assert t["D"]["flag"] == "too_few"
    assert t["E"]["flag"] == "as_expected"  # the hard jobs are not punished
    # significantly few reworks do not make "excellent" when residents are less happy than
    # expected (dissatisfaction O/E 1.5, within its limits)
    assert t["F"]["rework"]["position"].startswith("below")
    assert t["F"]["dissatisfaction"]["position"] == "within" and t["F"]["flag"] == "as_expected"
    assert t["E"]["rework"]["expected"] == pytest.approx(40.0)
    # the limits reported are those of each technician's own expected count
    assert t["A"]["rework"]["limits_95"][1] == pytest.approx(funnel_limits(20.0, 0.95)[1][0], 1e-3)
    # shrinkage: the small technician is pulled to the overall ratio, the big ones barely move
    prior = d["prior"]["rework"]["mean"]
    assert abs(t["D"]["rework"]["shrunk_oe"] - prior) < abs(t["D"]["rework"]["oe"] - prior)
    assert t["B"]["rework"]["shrunk_oe"] > 1.5
    # overturned results are excluded; appeals counted
    assert t["B"]["inspections"]["internal"] == {"inspected": 1, "failed": 1, "pass_rate": 0.0}
    assert t["B"]["inspections"]["overturned_excluded"] == 1
    assert t["B"]["appeals"] == {"filed": 1, "upheld": 1}
    assert d["summary"]["needs_coaching"] == 1
    assert {p["technician_id"] for p in d["funnel"]["rework"]["points"]} == set("ABCDEF")
    json.dumps(d, allow_nan=False)


def test_eb_prior_no_spread_means_full_shrinkage():
    o = np.array([10.0, 10.0, 10.0])
    e = np.array([10.0, 10.0, 10.0])
    mean, strength = eb_prior(o, e)
    assert mean == 1.0 and strength == np.inf
    mean, strength = eb_prior(np.array([2.0, 30.0, 10.0]), e)
    assert np.isfinite(strength) and strength > 0


def test_dossier_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown"):
        DossierConfig.from_dict({"warnings": 0.9})
    with pytest.raises(ValueError):
        DossierConfig.from_dict({"warning": 0.999, "alarm": 0.99})


def test_psi_stable_vs_shifted():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    assert psi_numeric(ref, rng.normal(0, 1, 5000)) < 0.02
    shifted = psi_numeric(ref, rng.normal(1, 1, 5000))
    assert shifted > 0.25 and drift_level(shifted) == "major"
    # a feature that starts going missing is drift too
    miss = rng.normal(0, 1, 5000)
    miss[:2000] = np.nan
    assert psi_numeric(ref, miss) > 0.25
    assert psi_categorical(["a"] * 50 + ["b"] * 50, ["a"] * 90 + ["b"] * 10) > 0.25
    assert psi(pd.Series(["x", "y"] * 10), pd.Series(["x", "y"] * 10)) == pytest.approx(0.0)


def test_repeat_flags_same_unit_category_within_window_or_parent():
    t = pd.Timestamp("2024-03-01", tz="Asia/Shanghai")
    o = pd.DataFrame(
        {
            "order_id": ["1", "2", "3", "4", "5"],
            "unit_id": ["U1", "U1", "U1", "U2", "U3"],
            "category": ["plumbing", "plumbing", "plumbing", "plumbing", "hvac"],
            "status": ["completed"] * 5,
            "reported_at": [t, t + pd.Timedelta(days=10), t + pd.Timedelta(days=60), t, t],
        }
    )
    o["completed_at"] = o["reported_at"] + pd.Timedelta(days=1)
    o["parent_order_id"] = [None, None, None, None, "9"]
    assert repeat_flags(o, 30).tolist() == [False, True, False, False, True]


def _fake_store(tmp_path):
    """A store-like object with hand-built frames (what the quality loop's store returns)."""
    orders, techs, units, _ = make_orders(900, seed=2, days=120, n_tech=8, n_units=60)
    done = orders[orders["status"] == "completed"]
    rng = np.random.default_rng(0)
    pi = np.clip(rng.uniform(0.05, 0.6, len(done)), 0.01, 1)
    u = rng.random(len(done))
    dec = pd.DataFrame(
        {
            "order_id": done["order_id"].astype(str).to_numpy(),
            "rework_risk": rng.uniform(0.02, 0.4, len(done)),
            "dissatisfaction_prob": rng.uniform(0.02, 0.4, len(done)),
            "risk_level": "low",
            "inclusion_probability": pi,
            "draw_u": u,
            "third_party_sample": u < pi,
            "policy_version": "test",
            "model_version": "m1",
            "reasons": [[{"code": "urged", "text": "催单1次", "contribution": 0.3}]] * len(done),
            "created_at": done["completed_at"].to_numpy(),
        }
    )
    sampled = dec.loc[dec["third_party_sample"], "order_id"].tolist()
    ins = pd.DataFrame(
        {
            "inspection_id": range(len(sampled)),
            "kind": "third_party",
            "order_id": sampled,
            "passed": [i % 4 != 0 for i in range(len(sampled))],
            "overturned": [i == 0 for i in range(len(sampled))],
            "counts_as_failure": [i % 4 == 0 and i != 0 for i in range(len(sampled))],
            "is_latest": True,
            "recorded_at": pd.Timestamp("2024-05-01", tz="UTC"),
        }
    )
    rect = pd.DataFrame(
        {
            "rectification_id": ["R1", "R2", "R3"],
            "title": ["更换老化水管", "培训", "给排水工艺复盘"],
            "owner": ["张工", "李工", "王工"],
            "deadline": [
                pd.Timestamp("2024-04-01", tz="UTC"),
                pd.Timestamp("2099-01-01", tz="UTC"),
                pd.Timestamp("2024-03-01", tz="UTC"),
            ],
            "status": ["overdue", "open", "done"],
            "cause_category": [None, None, "plumbing"],
            "created_at": [None, None, pd.Timestamp("2024-02-15", tz="UTC")],
            "done_at": [None, None, pd.Timestamp("2024-02-20", tz="UTC")],
        }
    )
    appeals = pd.DataFrame(
        {"technician_id": ["T001"], "order_id": [sampled[0]], "status": ["upheld"]}
    )
    outcomes = pd.DataFrame(
        {
            "order_id": [done["order_id"].iloc[0]],
            "kind": ["followup"],
            "rating": [1],
            "complaint": [True],
            "comment": ["师傅态度很差，又漏了"],
            "is_latest": [True],
        }
    )
    return SimpleNamespace(
        engine=SimpleNamespace(url=sa.engine.make_url(f"sqlite:///{tmp_path / 'fake.db'}")),
        orders_frame=lambda: orders,
        side_frame=lambda which: techs if which == "technicians" else units,
        decisions_frame=lambda **kw: dec,
        inspections_frame=lambda: ins,
        rectifications_frame=lambda: rect,
        appeals_frame=lambda: appeals,
        outcomes_frame=lambda: outcomes,
    ), done


def test_store_source_sections_from_hand_built_frames(tmp_path):
    from pipelines.report import build_report, render_html

    store, done = _fake_store(tmp_path)
    rep = build_report("2024-03-01", "2024-04-29", store=store)
    est = rep["estimates"]
    assert est["available"] and est["source"] == "store"
    fail = est["outcomes"]["inspection_failure"]
    assert fail["available"] and fail["overall"]["population_rate"] is None  # unknown in a store
    assert fail["overall"]["hajek"]["rate"] is not None
    assert set(est["outcomes"]["rework"]["by_community"]) <= set(done["community_id"].astype(str))
    assert rep["technicians"]["available"] and rep["technicians"]["inspections_available"]
    rect = rep["rectification"]["rectifications"]
    assert [i["rectification_id"] for i in rect["overdue"]] == ["R1"]
    (eff,) = rect["effectiveness"]  # only the finished item
    assert eff["rectification_id"] == "R3" and eff["window_days"] == 90
    plumbing = done[done["category"] == "plumbing"]
    t = plumbing["completed_at"]
    before = (t >= pd.Timestamp("2024-02-15", tz="UTC") - pd.Timedelta(days=90)) & (
        t < pd.Timestamp("2024-02-15", tz="UTC")
    )
    assert 0 < eff["before"]["orders"] <= int(before.sum())
    assert eff["after"]["orders"] > 0 and eff["change"] is not None
    assert rep["rectification"]["appeals"]["by_status"] == {"upheld": 1}
    # no model here: drivers come from the recorded reasons, drift says it has no data
    assert rep["drivers"]["combined"][0]["code"] == "urged"
    assert rep["model_health"]["drift"]["available"] is False
    assert rep["model_health"]["realised"]["previous"]["rework"]["matured_orders"] > 0
    json.dumps(rep, allow_nan=False)
    page = render_html(rep)
    for title in (
        "建议整改事项",
        "无偏质量估计",
        "维修服务质量档案",
        "主要风险驱动因素",
        "返修热点",
        "夜间/节假日特急工单表现",
        "模型健康",
        "整改与申诉",
        "更换老化水管",
        "<svg",
    ):
        assert title in page, title


def test_store_without_quality_loop_methods_says_so(tmp_path):
    from pipelines.report import build_report

    store, _ = _fake_store(tmp_path)
    for m in ("decisions_frame", "inspections_frame", "rectifications_frame", "appeals_frame"):
        delattr(store, m)
    rep = build_report("2024-03-01", "2024-04-29", store=store)
    assert rep["estimates"]["available"] is False
    assert rep["technicians"]["available"] is False
    assert rep["rectification"]["rectifications"]["available"] is False
    assert any("decisions_frame" in n for n in rep["notes"])
    assert rep["kpis"]["overall"]["response_timeliness"] is not None
    # the store holds completed orders only: no meaningless 100 % completion rate
    assert rep["kpis"]["overall"]["completion_rate"] is None
    assert "contract files" in rep["unavailable"]["completion_rate"]


def test_store_report_uses_label_overrides_and_has_no_meaningless_completion_rate(tmp_path):
    from models.labels import label_orders
    from pipelines.report import build_report, render_html

    store, done = _fake_store(tmp_path)
    base = build_report("2024-03-01", "2024-04-29", store=store)
    lab = label_orders(store.orders_frame()).set_index("order_id")
    t = lab["reported_at"]
    window = (t >= pd.Timestamp(base["technicians"]["window"]["from"])) & (
        t < pd.Timestamp("2024-04-29", tz="Asia/Shanghai")
    )
    pos = lab[(lab["rework"] == 1) & window & lab["technician_id"].notna()]
    oid, tech = pos.index[0], pos.iloc[0]["technician_id"]
    store.label_overrides_frame = lambda: pd.DataFrame(
        {"order_id": [oid], "label": ["rework"], "value": [0], "source": ["AP1"]}
    )
    store.appeals_frame = lambda: pd.DataFrame(
        {"technician_id": [tech], "order_id": [oid], "status": ["upheld"], "target": ["rework"]}
    )
    rep = build_report("2024-03-01", "2024-04-29", store=store)
    appeals = rep["rectification"]["appeals"]
    assert appeals["by_target"] == {"rework": 1}
    assert appeals["labels_overridden"] == {"rework": 1, "dissatisfied": 0}
    before = base["technicians"]["technicians"][tech]["rework"]["observed"]
    assert rep["technicians"]["technicians"][tech]["rework"]["observed"] == before - 1
    assert rep["technicians"]["technicians"][tech]["labels_overridden"]["rework"] == 1
    assert rep["counts"]["labels_overridden"] == {"rework": 1, "dissatisfied": 0, "unmatched": 0}
    # 维修完成率: the store holds completed orders only -> null with the reason, not 100 %
    assert rep["kpis"]["overall"]["completion_rate"] is None
    assert all(v["completion_rate"] is None for v in rep["kpis"]["by_community"].values())
    assert all(v["completion_rate"] is None for v in rep["trend"].values())
    assert (
        rep["definitions"]["completion_rate"]["unavailable"]
        == rep["unavailable"]["completion_rate"]
    )
    assert rep["kpis"]["overall"]["satisfaction_rate"] is not None
    page = render_html(rep)
    assert "use contract files" in page and "只保存已完工" in page
    assert "返修认定 1" in page and "返修 1 单" in page


def test_contract_report_applies_label_overrides_beside_the_orders(tmp_path):
    from models.labels import label_orders
    from pipelines.generate import render_csv_frame
    from pipelines.report import build_report, load_contract

    orders, techs, units, _ = make_orders(700, seed=4, days=150, n_tech=6, n_units=50)
    render_csv_frame(orders).to_csv(tmp_path / "orders.csv", index=False)
    valid = load_contract(tmp_path / "orders.csv")[0]  # as the report reads the file
    lab = label_orders(valid).set_index("order_id")
    t = lab["reported_at"]
    inside = (t >= pd.Timestamp("2024-03-01", tz="Asia/Shanghai")) & (
        t < pd.Timestamp("2024-04-01", tz="Asia/Shanghai")
    )
    oid = lab[(lab["rework"] == 1) & inside].index[0]
    args = {"orders": tmp_path / "orders.csv", "model_dir": tmp_path / "no-model"}
    base = build_report("2024-03-01", "2024-03-31", **args)
    assert base["source"]["label_overrides"] is None
    (tmp_path / "label_overrides.csv").write_text(
        f"order_id,label,value,source,decided_at,reason\n{oid},rework,0,AP7,,不是同一故障\n",
        encoding="utf-8",
    )
    rep = build_report("2024-03-01", "2024-03-31", **args)
    assert rep["source"]["label_overrides"] == str(tmp_path / "label_overrides.csv")
    assert rep["counts"]["labels_overridden"]["rework"] == 1
    # the first-time-fix rate reads the overridden rework label: one more fixed order
    f0 = base["fractions"]["overall"]["first_time_fix_rate"]
    f1 = rep["fractions"]["overall"]["first_time_fix_rate"]
    assert (f1["numerator"], f1["denominator"]) == (f0["numerator"] + 1, f0["denominator"])
    assert rep["kpis"]["overall"]["completion_rate"] is not None  # files hold every order
