"""Label definitions on tiny hand-made histories."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from models.labels import LabelConfig, label_orders, label_stats
from models.validation import validate_orders
from pipelines.cli import app
from tests.contract_rows import good_order, orders_frame


def typed(rows):
    res = validate_orders(orders_frame(rows))
    assert res.quarantine.empty, res.quarantine["reason"].tolist()
    return res.valid


def at(day: int, hour: int = 10) -> str:
    return (pd.Timestamp("2024-01-01") + pd.Timedelta(days=day, hours=hour)).strftime(
        "%Y-%m-%d %H:%M:%S"
    )


def order(i, unit, day, category="plumbing", **kw):
    base = dict(
        unit_id=unit,
        category=category,
        reported_at=at(day, 8),
        dispatched_at=at(day, 8),
        arrived_at=at(day, 9),
        completed_at=at(day, 10),
    )
    base.update(kw)
    return good_order(i, **base)


def by_id(df):
    return df.set_index("order_id")


def test_repeat_within_window_is_rework_and_censoring_at_end():
    rows = [
        order(0, "U1", 0),
        order(1, "U1", 20),  # repeat of 0 within 30 days
        order(2, "U2", 0),
        order(3, "U2", 40),  # too late for 2
        order(4, "U3", 0),
        order(5, "U3", 10, category="electrical"),  # other category
        order(6, "U9", 100),  # end of data -> orders completed after day 70 are censored
    ]
    lab = by_id(label_orders(typed(rows)))
    assert lab.loc["WO000000", "rework"] == 1.0
    assert lab.loc["WO000000", "rework_order_id"] == "WO000001"
    assert lab.loc["WO000002", "rework"] == 0.0
    assert lab.loc["WO000004", "rework"] == 0.0
    assert np.isnan(lab.loc["WO000006", "rework"]), "open window must be censored, not negative"
    assert lab.loc["WO000003", "rework"] == 0.0


def test_window_is_a_parameter():
    rows = [order(0, "U1", 0), order(1, "U1", 20), order(2, "U9", 200)]
    lab = by_id(label_orders(typed(rows), LabelConfig(rework_window_days=10)))
    assert lab.loc["WO000000", "rework"] == 0.0


def test_cancelled_repeat_does_not_count_and_parent_link_does():
    rows = [
        order(0, "U1", 0),
        order(1, "U1", 5, status="cancelled", completed_at="", arrived_at=""),
        order(2, "U2", 0),
        order(3, "U7", 60, parent_order_id="WO000002"),  # linked by the source system
        order(4, "U9", 200),
    ]
    lab = by_id(label_orders(typed(rows)))
    assert lab.loc["WO000000", "rework"] == 0.0
    assert lab.loc["WO000002", "rework"] == 1.0
    assert lab.loc["WO000002", "rework_order_id"] == "WO000003"
    assert np.isnan(lab.loc["WO000001", "rework"]), "cancelled orders are not labelled"


def test_rework_known_at_is_the_repeat_report_or_window_close():
    rows = [order(0, "U1", 0), order(1, "U1", 3), order(2, "U2", 0), order(3, "U9", 200)]
    lab = by_id(label_orders(typed(rows)))
    assert lab.loc["WO000000", "rework_known_at"] == pd.Timestamp(at(3, 8), tz="Asia/Shanghai")
    assert lab.loc["WO000002", "rework_known_at"] == pd.Timestamp(
        at(0, 10), tz="Asia/Shanghai"
    ) + pd.Timedelta(days=30)


@pytest.mark.parametrize(
    ("fields", "expected", "source"),
    [
        ({"rating": "1"}, 1.0, "rating"),
        ({"rating": "2"}, 1.0, "rating"),
        ({"rating": "3"}, 0.0, "rating"),
        ({"rating": "5", "complaint": "true"}, 1.0, "complaint"),
        ({"rating": "", "complaint": "true"}, 1.0, "complaint"),
        ({"rating": "", "complaint": "false", "feedback_comment": ""}, np.nan, None),
        ({"rating": "", "complaint": "", "feedback_comment": "好"}, np.nan, None),
    ],
)
def test_dissatisfied_rules(fields, expected, source):
    lab = label_orders(typed([order(0, "U1", 0, **fields)]))
    got = lab["dissatisfied"].iloc[0]
    assert (np.isnan(got) and np.isnan(expected)) or got == expected
    assert lab["dissatisfied_source"].iloc[0] == source


def test_comment_only_orders_labelled_from_sentiment_and_counted():
    rows = [
        order(0, "U1", 0, rating="", complaint="", feedback_comment="太差了"),
        order(1, "U2", 0, rating="", complaint="", feedback_comment="很满意"),
        order(2, "U3", 0, rating="", complaint="", feedback_comment="一般"),
    ]
    df = typed(rows)
    sentiment = pd.Series([0.05, 0.95, 0.5], index=df.index)
    lab = label_orders(df, comment_sentiment=sentiment)
    assert lab["dissatisfied"].tolist()[:2] == [1.0, 0.0]
    assert np.isnan(lab["dissatisfied"].iloc[2])
    assert label_stats(lab)["dissatisfied_from_comment"] == 2


def test_outcomes_of_open_orders_are_not_labels():
    rows = [order(0, "U1", 0, status="in_progress", completed_at="", rating="1")]
    lab = label_orders(typed(rows))
    assert np.isnan(lab["dissatisfied"].iloc[0]) and np.isnan(lab["rework"].iloc[0])


def test_label_does_not_mutate_input():
    df = typed([order(0, "U1", 0), order(1, "U1", 3)])
    before = df.copy()
    label_orders(df)
    pd.testing.assert_frame_equal(df, before)


def test_cli_label_writes_table_and_metrics(tmp_path):
    rows = [order(0, "U1", 0), order(1, "U1", 3), order(2, "U9", 200)]
    typed(rows).to_parquet(tmp_path / "orders.parquet")
    (tmp_path / "params.yaml").write_text("label:\n  rework_window_days: 30\n")
    r = CliRunner().invoke(
        app,
        [
            "label",
            "--orders",
            str(tmp_path / "orders.parquet"),
            "--out",
            str(tmp_path / "lab"),
            "--params",
            str(tmp_path / "params.yaml"),
        ],
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "lab" / "label_metrics.json").read_text())
    assert m["rework_labelled"] == 2 and m["rework_censored"] == 1
    assert pd.read_parquet(tmp_path / "lab" / "labelled.parquet")["rework"].notna().sum() == 2


def test_unknown_label_param_is_an_error(tmp_path):
    (tmp_path / "params.yaml").write_text("label:\n  rework_windw_days: 30\n")
    typed([order(0, "U1", 0)]).to_parquet(tmp_path / "o.parquet")
    r = CliRunner().invoke(
        app,
        [
            "label",
            "--orders",
            str(tmp_path / "o.parquet"),
            "--out",
            str(tmp_path / "x"),
            "--params",
            str(tmp_path / "params.yaml"),
        ],
    )
    assert r.exit_code != 0
    assert "rework_windw_days" in r.output


# ---- label overrides (upheld appeals) --------------------------------------------------------


def overrides(*rows):
    return pd.DataFrame(
        [dict(zip(["order_id", "label", "value", "source"], r, strict=True)) for r in rows]
    )


def test_rework_override_drops_the_link_and_is_counted():
    rows = [order(0, "U1", 0), order(1, "U1", 20), order(2, "U2", 0), order(3, "U9", 100)]
    df = typed(rows)
    plain = by_id(label_orders(df))
    assert plain.loc["WO000000", "rework"] == 1.0 and not plain["rework_overridden"].any()
    lab = label_orders(df, overrides=overrides(("WO000000", "rework", 0, "AP1")))
    got = by_id(lab)
    assert got.loc["WO000000", "rework"] == 0.0
    assert got.loc["WO000000", "rework_overridden"]
    assert got.loc["WO000000", "rework_override_source"] == "AP1"
    assert pd.isna(got.loc["WO000000", "rework_order_id"])  # training reads the link
    assert got.loc["WO000000", "rework_known_at"] == pd.Timestamp(
        at(0, 10), tz="Asia/Shanghai"
    ) + pd.Timedelta(days=30)
    # everything else is the definitional label
    cols = ["rework", "dissatisfied", "rework_order_id"]
    pd.testing.assert_frame_equal(
        got.drop(index="WO000000")[cols], plain.drop(index="WO000000")[cols]
    )
    s = label_stats(lab)
    assert (s["rework_overridden"], s["dissatisfied_overridden"]) == (1, 0)
    assert s["rework_rate"] < label_stats(label_orders(df))["rework_rate"]


def test_dissatisfied_override_the_last_decision_holds_and_unmatched_are_counted():
    df = typed([order(0, "U1", 0, complaint="true"), order(1, "U2", 5, rating="5")])
    ov = pd.DataFrame(
        {
            "order_id": ["WO000000", "WO000000", "WO-GONE", "WO000001"],
            "label": ["dissatisfied", "dissatisfied", "rework", "dissatisfied"],
            "value": ["1", "0", "0", "1"],
            "source": ["AP1", "AP2", "AP3", "manual"],
            "decided_at": ["2024-02-02 10:00:00", "2024-03-01 10:00:00", "", ""],
        }
    )
    lab = label_orders(df, overrides=ov)
    got = by_id(lab)
    assert got.loc["WO000000", "dissatisfied"] == 0.0
    assert got.loc["WO000000", "dissatisfied_override_source"] == "AP2"
    assert got.loc["WO000001", "dissatisfied"] == 1.0
    s = label_stats(lab)
    assert s["dissatisfied_overridden"] == 2 and s["overrides_unmatched"] == 1


def test_override_of_a_censored_rework_stays_censored():
    df = typed([order(0, "U1", 0), order(1, "U1", 3)])  # the data end inside the window
    got = by_id(label_orders(df, overrides=overrides(("WO000000", "rework", 0, "AP1"))))
    assert np.isnan(got.loc["WO000000", "rework"]) and got.loc["WO000000", "rework_overridden"]
    assert pd.isna(got.loc["WO000000", "rework_order_id"])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("", "rework", 0, "x"), "label overrides row 1: order_id: empty"),
        (
            ("WO1", "returned", 0, "x"),
            "label overrides row 1: label: 'returned' is not one of rework, dissatisfied",
        ),
        (("WO1", "rework", 2, "x"), "label overrides row 1: value: 2 is not 0 or 1"),
        (("WO1", "rework", "yes", "x"), "label overrides row 1: value: 'yes' is not 0 or 1"),
    ],
)
def test_override_validation_names_row_and_field(row, message):
    df = typed([order(0, "U1", 0)])
    with pytest.raises(ValueError) as exc:
        label_orders(df, overrides=overrides(row))
    assert str(exc.value) == message
    with pytest.raises(ValueError, match=r"missing column\(s\) \['value'\]"):
        label_orders(df, overrides=pd.DataFrame({"order_id": ["WO1"], "label": ["rework"]}))


def test_cli_label_applies_the_overrides_file_and_says_when_absent(tmp_path):
    rows = [order(0, "U1", 0), order(1, "U1", 20), order(2, "U9", 100)]
    typed(rows).to_parquet(tmp_path / "orders.parquet")
    (tmp_path / "params.yaml").write_text("label:\n  rework_window_days: 30\n")
    ov = tmp_path / "label_overrides.csv"
    ov.write_text(
        "order_id,label,value,source,decided_at,reason\n"
        "WO000000,rework,0,AP9,2024-03-01T10:00:00+08:00,返修单是另一处故障\n",
        encoding="utf-8",
    )

    def label(out, path):
        args = ["label", "--orders", str(tmp_path / "orders.parquet"), "--out", str(out)]
        args += ["--params", str(tmp_path / "params.yaml"), "--overrides", str(path)]
        return CliRunner().invoke(app, args)

    r = label(tmp_path / "lab", ov)
    assert r.exit_code == 0, r.output
    assert "overridden: 1 rework, 0 dissatisfied" in r.output
    lab = by_id(pd.read_parquet(tmp_path / "lab" / "labelled.parquet"))
    assert lab.loc["WO000000", "rework"] == 0.0 and lab.loc["WO000000", "rework_overridden"]
    m = json.loads((tmp_path / "lab" / "label_metrics.json").read_text())
    assert m["rework_overridden"] == 1 and m["label_overrides_rows"] == 1
    r = label(tmp_path / "lab2", tmp_path / "none.csv")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "lab2" / "label_metrics.json").read_text())
    assert m["label_overrides_file"].startswith("absent: ") and m["rework_overridden"] == 0
    ov.write_text("order_id,label,value\nWO000000,rework,-1\n", encoding="utf-8")
    r = label(tmp_path / "lab3", ov)
    assert r.exit_code != 0 and "label overrides row 1: value: '-1' is not 0 or 1" in r.output


def test_overrides_reach_the_training_targets_both_ways():
    """Training's as-of targets read the rework link: a 0-override drops it, a 1-override
    without a repeat order gets one (``override:<source>``), so targets equal the labels."""
    from models.estimators import labels_as_of

    rows = [order(0, "U1", 0), order(1, "U1", 20), order(2, "U2", 0), order(3, "U9", 100)]
    ov = overrides(("WO000000", "rework", 0, "AP1"), ("WO000002", "rework", 1, None))
    lab = label_orders(typed(rows), overrides=ov)
    got = by_id(lab)
    assert got.loc["WO000002", "rework"] == 1.0
    assert got.loc["WO000002", "rework_order_id"] == "override:manual"
    end = lab["reported_at"].max()
    targets = labels_as_of(lab, end, LabelConfig().rework_window_days)
    pd.testing.assert_series_equal(targets["rework"], lab["rework"], check_names=False)
