import numpy as np
import pandas as pd
import pytest

from models.features import (
    EventIndex,
    FeatureConfig,
    build_features,
    build_history,
    coerce_orders,
    features_for,
)
from tests.synth_orders import make_orders, typed


@pytest.fixture(scope="module")
def data():
    return make_orders(1500, seed=1)


def test_event_index_windows_are_half_open():
    idx = EventIndex(
        np.array([0, 0, 0, 1]), np.array([10.0, 20.0, 30.0, 5.0]), {"v": np.array([1, 2, 4, 8])}
    )
    count, sums = idx.query(
        np.array([0, 0, 0, 1, -1]), np.array([30.0, 31.0, 31.0, 100.0, 50.0]), None
    )
    assert count.tolist() == [2, 3, 3, 1, 0]
    assert sums["v"].tolist() == [3, 7, 7, 8, 0]
    count, _ = idx.query(np.array([0]), np.array([31.0]), window_s=15)
    assert count.tolist() == [2]  # events at 20 and 30 in [16, 31)
    assert idx.last_time(np.array([0, 0, 1]), np.array([25.0, 10.0, 6.0])).tolist()[0] == 20
    assert np.isnan(idx.last_time(np.array([0]), np.array([10.0])))[0]


def test_builds_one_row_per_completed_order(data):
    orders, techs, units, _ = data
    f = build_features(orders, technicians=techs, units=units)
    done = (orders["status"] == "completed").sum()
    assert len(f) == done
    assert f["order_id"].is_unique
    assert not f.index.difference(orders.index).size
    assert set(f["category"].cat.categories) >= {"plumbing", "elevator"}


def test_history_may_or_may_not_contain_the_scored_orders(data):
    """The API scores a new order against a stored history: same features as in batch."""
    orders, techs, units, _ = data
    hist_with = build_history(orders, technicians=techs, units=units)
    for row in orders[orders["status"] == "completed"].index[[-1, -7, -300]]:
        one = orders.loc[[row]]
        hist_without = build_history(orders.drop(row), technicians=techs, units=units)
        pd.testing.assert_frame_equal(features_for(hist_with, one), features_for(hist_without, one))


def test_past_rework_counts_only_from_its_report():
    rows = [
        dict(
            order_id="A",
            unit_id="U1",
            reported_at="2024-03-01 08:00",
            completed_at="2024-03-01 12:00",
        ),
        # B by the same technician completes before A's repeat is reported
        dict(
            order_id="B",
            unit_id="U2",
            reported_at="2024-03-05 08:00",
            completed_at="2024-03-05 12:00",
        ),
        dict(
            order_id="R",
            unit_id="U1",
            reported_at="2024-03-10 08:00",
            completed_at="2024-03-10 12:00",
            technician_id="T2",
        ),
        # C after the repeat's report
        dict(
            order_id="C",
            unit_id="U3",
            reported_at="2024-03-11 08:00",
            completed_at="2024-03-11 12:00",
        ),
    ]
    f = build_features(typed(rows)).set_index("order_id")
    assert f.loc["B", "tech_recent_reworks"] == 0
    assert f.loc["C", "tech_recent_reworks"] == 1
    # R is a repeat on the same unit + category 9 days after A was done
    assert f.loc["R", "unit_cat_orders_30d"] == 1
    assert f.loc["R", "days_since_unit_cat_done"] == pytest.approx(8.833, abs=1e-3)


def test_rating_counts_only_after_the_followup_delay():
    rows = [
        dict(
            order_id="A",
            unit_id="U1",
            resident_id="P",
            reported_at="2024-03-01 08:00",
            completed_at="2024-03-01 12:00",
            rating=1,
            complaint=True,
        ),
        dict(
            order_id="B",
            unit_id="U1",
            resident_id="P",
            category="hvac",
            reported_at="2024-03-03 08:00",
            completed_at="2024-03-03 12:00",
        ),
        dict(
            order_id="C",
            unit_id="U1",
            resident_id="P",
            category="hvac",
            reported_at="2024-03-05 08:00",
            completed_at="2024-03-05 12:00",
        ),
    ]
    f = build_features(typed(rows)).set_index("order_id")
    assert np.isnan(f.loc["B", "res_mean_rating"])  # 48 h < 72 h
    assert f.loc["C", "res_mean_rating"] == 1
    assert f.loc["C", "res_complaints"] == 1
    f24 = build_features(typed(rows), config=FeatureConfig(followup_delay_hours=24)).set_index(
        "order_id"
    )
    assert f24.loc["B", "res_mean_rating"] == 1


def test_overdue_and_calendar_facts():
    rows = [
        dict(
            order_id="A",
            unit_id="U1",
            priority="urgent",
            reported_at="2024-10-01 23:00",
            arrived_at="2024-10-02 05:00",
            completed_at="2024-10-02 06:00",
        ),
        dict(
            order_id="B",
            unit_id="U2",
            reported_at="2024-10-08 10:00",
            arrived_at="2024-10-08 12:00",
            completed_at="2024-10-08 13:00",
        ),
    ]
    f = build_features(typed(rows)).set_index("order_id")
    assert f.loc["A", "arrival_overdue"] == 1 and f.loc["A", "arrival_sla_ratio"] == pytest.approx(
        1.5
    )
    assert f.loc["A", "report_night"] == 1 and f.loc["A", "report_holiday"] == 1  # 国庆
    assert f.loc["B", "arrival_overdue"] == 0 and f.loc["B", "report_holiday"] == 0


def test_side_tables_give_certification_tenure_and_age(data):
    orders, techs, units, _ = data
    f = build_features(orders, technicians=techs, units=units)
    assert f["tech_certified"].isin([0.0, 1.0]).all()
    assert (f["tech_tenure_days"] > 0).all()
    assert f["building_age"].between(0, 40).all()
    g = build_features(orders)
    assert g["tech_certified"].isna().all() and g["building_age"].isna().all()


def test_coerce_is_idempotent_and_parses_json_like_input(data):
    orders = data[0].head(50)
    again = coerce_orders(orders)
    pd.testing.assert_frame_equal(again[orders.columns], orders, check_dtype=False)
    js = orders.astype(object).where(orders.notna(), None)
    for c in ("reported_at", "dispatched_at", "arrived_at", "completed_at"):
        js[c] = orders[c].dt.strftime("%Y-%m-%dT%H:%M:%S+08:00")
    a = build_features(orders)
    b = build_features(coerce_orders(js))
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_config_from_dict_refuses_unknown_keys():
    assert FeatureConfig.from_dict({"history_windows_days": [7, 30]}).history_windows_days == (
        7,
        30,
    )
    with pytest.raises(ValueError, match="unknown"):
        FeatureConfig.from_dict({"folowup_delay_hours": 1})


def test_late_parent_link_does_not_rewrite_a_closed_window():
    """A repeat linked by parent_order_id after the 30-day window is news only when reported."""
    rows = [
        dict(
            order_id="A",
            unit_id="U1",
            reported_at="2024-03-01 08:00",
            completed_at="2024-03-01 12:00",
        ),
        dict(
            order_id="B",
            unit_id="U2",
            reported_at="2024-04-05 08:00",
            completed_at="2024-04-05 12:00",
        ),
        dict(
            order_id="L",
            unit_id="U1",
            category="hvac",
            parent_order_id="A",
            technician_id="T2",
            reported_at="2024-04-20 08:00",
            completed_at="2024-04-20 12:00",
        ),
    ]
    orders = typed(rows)
    full = build_features(orders).set_index("order_id")
    cut = orders[orders["reported_at"] <= orders.loc[1, "completed_at"]]
    past = build_features(cut).set_index("order_id")
    pd.testing.assert_series_equal(full.loc["B"], past.loc["B"])


def test_building_and_cohort_keys_parse_robustly():
    from models.features import _group_keys

    orders = typed(
        [
            dict(order_id="A", unit_id="C001-01-0101", reported_at="2024-03-01 08:00"),
            dict(order_id="B", unit_id="X17", reported_at="2024-03-01 09:00"),
            dict(order_id="C", unit_id="2-3", reported_at="2024-03-01 10:00"),
        ]
    )
    units = pd.DataFrame({"unit_id": ["C001-01-0101", "2-3"], "building_year": [2008, None]})
    keys = _group_keys(orders, units.set_index("unit_id"))
    # an id without a separator is its own building; the id format is not in the contract
    assert keys["building"].tolist() == ["C1|C001-01", "C1|X17", "C1|2"]
    assert keys["cohort"].tolist() == ["C1|2008", None, None]
    assert keys["vintage"].tolist() == ["2008", None, None]  # building year, estate-wide
    assert _group_keys(orders, None)["cohort"].tolist() == [None, None, None]


def test_building_proneness_counts_only_earlier_reports_of_the_building():
    def row(oid, unit, day):
        return dict(
            order_id=oid,
            unit_id=unit,
            reported_at=f"2024-03-{day:02d} 08:00",
            completed_at=f"2024-03-{day:02d} 12:00",
        )

    rows = [
        row("A1", "B1-0101", 1),
        row("A2", "B1-0101", 2),
        row("A3", "B1-0101", 3),
        row("D", "B2-0101", 4),
        row("B", "B1-0102", 10),  # neighbour of a home that failed three times
        row("E", "B2-0102", 10),  # neighbour of a home that failed once
    ]
    f = build_features(typed(rows)).set_index("order_id")
    assert f.loc["B", "building_proneness"] > 1.0 > f.loc["E", "building_proneness"]
    assert f.loc["A3", "unit_cat_proneness"] > f.loc["D", "unit_cat_proneness"]
    later = build_features(typed(rows + [row("L", "B2-0103", 20)])).set_index("order_id")
    pd.testing.assert_frame_equal(later.loc[f.index], f)


def test_workmanship_comments_count_for_the_technician_only_after_the_followup():
    """A 又漏了 comment on A is known 72 h after A's completion, for T1's later jobs only."""
    rows = [
        dict(
            order_id="A",
            unit_id="U1",
            reported_at="2024-03-01 08:00",
            completed_at="2024-03-01 12:00",
            rating=2,
            feedback_comment="又漏了，修了跟没修一样，师傅态度很差",
        ),
        dict(
            order_id="B",  # 48 h after A: the comment is not known yet
            unit_id="U2",
            reported_at="2024-03-03 08:00",
            completed_at="2024-03-03 12:00",
            feedback_comment="师傅很专业，修好了",
        ),
        dict(
            order_id="C",  # after A's follow-up; before B's
            unit_id="U3",
            reported_at="2024-03-05 08:00",
            completed_at="2024-03-05 12:00",
        ),
        dict(
            order_id="D",  # another technician: not affected
            unit_id="U4",
            technician_id="T2",
            reported_at="2024-03-05 09:00",
            completed_at="2024-03-05 13:00",
        ),
    ]
    f = build_features(typed(rows)).set_index("order_id")
    # no comment known anywhere yet: every technician sits at the same (global) prior
    assert f.loc["B", "tech_quality_complaint_rate"] == f.loc["A", "tech_quality_complaint_rate"]
    assert f.loc["C", "tech_quality_complaint_rate"] > f.loc["D", "tech_quality_complaint_rate"]
    assert f.loc["C", "tech_attitude_complaint_rate"] > f.loc["D", "tech_attitude_complaint_rate"]
    assert f.loc["C", "unit_quality_complaints"] == 0  # a different home
    # the order's own comment never enters its own features
    scrambled = typed(
        [{**r, "feedback_comment": "很好"} if r["order_id"] == "C" else r for r in rows]
    )
    g = build_features(scrambled).set_index("order_id")
    pd.testing.assert_series_equal(f.loc["C"], g.loc["C"])


def test_repair_time_against_the_norm_of_its_kind_and_severity_words():
    """A job far shorter than earlier jobs of its category (same parts status) scores low."""
    base = pd.Timestamp("2024-03-01 08:00")
    rows = []
    for i in range(40):  # 40 earlier plumbing jobs of about 2 h, no parts
        t = base + pd.Timedelta(hours=12 * i)
        rows.append(
            dict(
                order_id=f"P{i}",
                unit_id=f"U{i}",
                reported_at=str(t),
                arrived_at=str(t + pd.Timedelta(hours=1)),
                completed_at=str(t + pd.Timedelta(hours=3 + 0.1 * (i % 3))),
                parts_replaced=False,
            )
        )
    t = base + pd.Timedelta(days=30)
    rows.append(
        dict(
            order_id="FAST",
            unit_id="UX",
            reported_at=str(t),
            arrived_at=str(t + pd.Timedelta(hours=1)),
            completed_at=str(t + pd.Timedelta(minutes=80)),
            parts_replaced=False,
            description="卫生间漏水很严重，已经影响到楼下了",
        )
    )
    rows.append({**rows[-1], "order_id": "PARTS", "parts_replaced": True, "description": "不急"})
    f = build_features(typed(rows)).set_index("order_id")
    assert f.loc["FAST", "repair_time_z"] < -3
    assert np.isnan(f.loc["P5", "repair_time_z"])  # fewer than norm_min_jobs earlier jobs
    assert np.isnan(f.loc["PARTS", "repair_time_z"])  # no norm for jobs with parts yet
    assert f.loc["FAST", "desc_severity"] == 1
    assert f.loc["PARTS", "desc_severity"] == -1


def test_vintage_proneness_counts_only_earlier_reports_of_homes_built_that_year():
    def row(oid, unit, day):
        return dict(
            order_id=oid,
            unit_id=unit,
            community_id="C1" if unit < "U5" else "C2",
            reported_at=f"2024-03-{day:02d} 08:00",
            completed_at=f"2024-03-{day:02d} 12:00",
        )

    units = pd.DataFrame(
        {"unit_id": [f"U{i}" for i in range(1, 9)], "building_year": [1995] * 4 + [2015] * 4}
    )
    # a 1995 home failed three times, a 2015 home once; U1 and U4 are in different buildings
    rows = [row("A1", "U1", 1), row("A2", "U1", 2), row("A3", "U1", 3), row("D", "U6", 4)]
    rows += [row("B", "U4", 10), row("E", "U8", 10)]  # first reports of a 1995 / 2015 home
    f = build_features(typed(rows), units=units).set_index("order_id")
    assert f.loc["B", "vintage_proneness"] > 1.0 > f.loc["E", "vintage_proneness"]
    assert f.loc["B", "unit_proneness_hier"] > f.loc["E", "unit_proneness_hier"]
    later = build_features(typed(rows + [row("L", "U5", 20)]), units=units).set_index("order_id")
    pd.testing.assert_frame_equal(later.loc[f.index], f)
