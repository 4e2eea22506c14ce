"""Reasons read as business language for every feature the builder makes, values or not."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from models.features import build_features, completed_mask, feature_columns, features_for
from models.reasons import FEATURE_NAMES_ZH, REASONS, reason_item
from tests.synth_orders import make_orders

#: A feature-name-like identifier (snake_case) leaking into the text a quality team reads.
_IDENT = re.compile(r"[a-z]+_[a-z_]+")


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    orders, techs, units, _ = make_orders(n=1500, seed=3)
    return build_features(orders, technicians=techs, units=units)


def test_every_model_feature_has_a_wording_and_a_chinese_name(features):
    missing = [c for c in feature_columns(features) if c not in REASONS]
    assert not missing, f"features without a reason wording in models/reasons.py: {missing}"
    assert all(re.search(r"[\u4e00-\u9fff]", FEATURE_NAMES_ZH[c]) for c in REASONS)


def test_texts_are_chinese_for_observed_and_missing_values(features):
    rows = features.head(200).to_dict("records")
    for feature in feature_columns(features):
        for row in rows[:50] + [dict(rows[0], **{feature: np.nan})]:
            item = reason_item(feature, row, 0.5)
            assert not _IDENT.search(item["text"]), (feature, item["text"])
            assert re.search(r"[\u4e00-\u9fff]", item["text"]), (feature, item["text"])
            assert "nan" not in item["text"].lower(), (feature, item["text"])


def test_a_missing_value_says_the_information_is_unknown(features):
    row = dict(features.iloc[0])
    row["tech_certified"] = np.nan
    item = reason_item("tech_certified", row, 0.3)
    assert item == {
        "code": "tech_uncertified",
        "text": "维修人员该类别持证未知",
        "feature": "tech_certified",
        "value": None,
        "contribution": 0.3,
    }


def test_overdue_arrival_is_worded_with_its_overrun():
    row = {"arrival_sla_ratio": 3.0, "arrival_hours": 6.0, "arrival_overdue": 1}
    assert reason_item("arrival_overdue", row, 1.0)["text"] == "上门超时4.0小时"
    assert reason_item("unit_cat_orders_90d", {"unit_cat_orders_90d": 2.0}, 1.0) == {
        "code": "unit_repeat_90d",
        "text": "同户90天内同类报修2次",
        "feature": "unit_cat_orders_90d",
        "value": 2.0,
        "contribution": 1.0,
    }


def _scored_by(model) -> pd.DataFrame:
    """The fixture's orders featurised by the model's own history (its description models)."""
    orders, techs, units, _ = make_orders(n=1500, seed=3)
    return features_for(model.history(orders, techs, units), orders[completed_mask(orders)])


def test_top_reasons_name_each_code_once(tmp_path):
    from models.reasons import Reasoner
    from models.registry import load_risk_model
    from tests.serving_fixtures import train_model_dir

    path, _ = train_model_dir(tmp_path / "model")
    model = load_risk_model(path)
    ranked = Reasoner(model, None, 0).top(_scored_by(model).head(300), 5)
    assert any(ranked)
    for items in ranked:
        codes = [r["code"] for r in items]
        assert len(codes) == len(set(codes)) <= 5
        assert all(r["contribution"] > 0 for r in items)


def test_binned_lookup_of_a_few_rows_equals_the_vectorised_one():
    """The scalar path for single API orders gives exactly the numpy path's contributions
    (values on bin edges, between them, outside, NaN, +-inf)."""
    from models.reasons import _SCALAR_ROWS, BinnedContributions

    rng = np.random.default_rng(0)
    edges = [np.array([]), np.array([0.5]), np.sort(rng.normal(size=9)), np.array([-1.0, 0, 2])]
    means = [rng.normal(size=len(e) + 1) for e in edges]
    table = BinnedContributions(["a", "b", "c", "d"], edges, means, rng.normal(size=4))
    cells = [np.nan, np.inf, -np.inf, 0.0, 0.5, -1.0, 2.0, 3.5, *edges[2], *rng.normal(size=20)]
    for _ in range(50):
        M = rng.choice(cells, size=(int(rng.integers(1, _SCALAR_ROWS + 1)), 4))
        big = np.vstack([M, np.zeros((_SCALAR_ROWS, 4))])  # enough rows for the numpy path
        np.testing.assert_array_equal(table.lookup(M), table.lookup(big)[: len(M)])


def test_round_like_python_equals_pythons_round_per_element():
    """Shown contributions are rounded vectorised: the same floats as ``round(x, 4)``."""
    import math

    from models.reasons import round_like_python

    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**63, 20000, dtype=np.uint64).view(np.float64)
    x = np.concatenate(
        [
            rng.random(20000) * 0.5,
            rng.normal(0, 10, 20000),
            (np.arange(-5000, 5000) + 0.5) / 1e4,  # near-ties of the 4th decimal
            bits,
            [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e-300, 2.5e-5, 5e-5, 1.5e-4],
        ]
    )
    got = round_like_python(x.reshape(-1, 5), 4).ravel().tolist()
    small = np.array([0.12345, 2.5e-5, 1.5e-4, -0.00015, 0.3])  # a few: rounded per element
    assert round_like_python(small, 4).tolist() == [round(v, 4) for v in small.tolist()]
    for v, g in zip(x.tolist(), got, strict=True):
        e = round(v, 4)
        assert (g != g and e != e) or (g == e and math.copysign(1, g) == math.copysign(1, e)), v


def test_operation_wide_rates_are_never_an_orders_reason(tmp_path):
    """The recent company-wide rates are the same for every order of a day: even when they
    carry an order's largest contributions, its reasons are its own (the next largest)."""
    from models.reasons import CONTEXT_FEATURES, Reasoner
    from models.registry import load_risk_model
    from tests.serving_fixtures import train_model_dir

    path, _ = train_model_dir(tmp_path / "model")
    model = load_risk_model(path)
    names = list(model.feature_names)
    context = [names.index(f) for f in CONTEXT_FEATURES if f in names]
    assert context  # the model has them, so the test can fail
    own = [j for j, f in enumerate(names) if f not in CONTEXT_FEATURES][:4]

    class Lookup:  # contributions chosen here: the context rates largest, then four own ones
        def lookup(self, M):
            c = np.full(M.shape, -0.01)
            c[:, context] = 5.0
            c[:, own] = [0.4, 0.3, 0.2, 0.1]
            return c

    reasoner = Reasoner(model, None, 0)
    reasoner.binned = Lookup()
    rows = _scored_by(model).head(20)
    for items in reasoner.top(rows, 3):
        assert [r["feature"] for r in items] == [names[j] for j in own[:3]]
        assert [r["contribution"] for r in items] == [0.4, 0.3, 0.2]
