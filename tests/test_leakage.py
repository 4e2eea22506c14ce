"""Leakage: a score may only depend on what was known at the order's completion."""

import numpy as np
import pandas as pd
import pytest

from models.features import build_features, completed_mask
from models.schemas import OUTCOME_COLUMNS
from tests.synth_orders import make_orders


@pytest.fixture(scope="module")
def data():
    return make_orders(1500, seed=2)


def scramble(orders: pd.DataFrame, rows: pd.Index, seed: int = 0) -> pd.DataFrame:
    """Replace the outcome columns of ``rows`` with other values."""
    rng = np.random.default_rng(seed)
    out = orders.copy()
    out.loc[rows, "rating"] = pd.array(rng.integers(1, 6, len(rows)), dtype="Int64")
    out.loc[rows, "complaint"] = pd.array(rng.random(len(rows)) < 0.5, dtype="boolean")
    out.loc[rows, "feedback_comment"] = pd.array(
        rng.choice(["非常不满意，投诉", "很好，谢谢师傅"], len(rows)), dtype="string"
    )
    assert set(OUTCOME_COLUMNS) == {"rating", "feedback_comment", "complaint"}
    return out


def test_each_order_alone_with_its_past_and_scrambled_outcome(data):
    orders, techs, units, _ = data
    full = build_features(orders, technicians=techs, units=units).set_index("order_id")
    done = orders[completed_mask(orders)]
    for row in done.iloc[np.linspace(50, len(done) - 1, 15).astype(int)].index:
        t = orders.at[row, "completed_at"]
        past = scramble(orders[orders["reported_at"] <= t], pd.Index([row]))
        mask = past.index == row
        one = build_features(past, technicians=techs, units=units, score_mask=mask)
        got = one.set_index("order_id")
        pd.testing.assert_frame_equal(got, full.loc[got.index])


def test_batch_scores_ignore_scrambled_outcomes_and_the_future(data):
    orders, techs, units, _ = data
    start = orders["completed_at"].quantile(0.7)
    end = start + pd.Timedelta(days=2)  # shorter than the follow-up delay
    scored = (
        completed_mask(orders) & (orders["completed_at"] >= start) & (orders["completed_at"] < end)
    )
    full = build_features(orders, technicians=techs, units=units, score_mask=scored)
    later = orders.index[(orders["completed_at"] >= start).fillna(False)]
    cut = scramble(
        orders[orders["reported_at"] < end],
        later.intersection(orders.index[orders["reported_at"] < end]),
    )
    again = build_features(cut, technicians=techs, units=units, score_mask=scored.loc[cut.index])
    assert len(full) > 5
    pd.testing.assert_frame_equal(full, again)


def test_label_overrides_never_enter_features(data):
    """An override (upheld appeal) is an outcome: it changes targets, never features.

    The label stage's output (``labelled.parquet``: orders + labels + overrides) is what
    training reads as its orders; features must equal those of the plain orders even when
    many past labels are overridden.
    """
    from pathlib import Path

    from models.labels import label_orders

    orders, techs, units, _ = data
    plain = label_orders(orders)
    rework = plain.index[plain["rework"] == 1][::2]
    unhappy = plain.index[plain["dissatisfied"] == 1][::2]
    overrides = pd.DataFrame(
        {
            "order_id": [*orders.loc[rework, "order_id"], *orders.loc[unhappy, "order_id"]],
            "label": ["rework"] * len(rework) + ["dissatisfied"] * len(unhappy),
            "value": 0,
            "source": "AP-test",
        }
    )
    labelled = label_orders(orders, overrides=overrides)
    assert labelled["rework_overridden"].sum() == len(rework) > 5
    assert labelled["dissatisfied_overridden"].sum() == len(unhappy) > 5
    scored = completed_mask(orders) & (orders["completed_at"] >= orders["completed_at"].median())
    want = build_features(orders, technicians=techs, units=units, score_mask=scored)
    got = build_features(labelled, technicians=techs, units=units, score_mask=scored)
    pd.testing.assert_frame_equal(got, want)
    source = (Path(__file__).parents[1] / "models" / "features.py").read_text(encoding="utf-8")
    assert "overrid" not in source.lower(), "models/features.py must not read label overrides"
