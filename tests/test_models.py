"""Behavioural tests of the risk heads: determinism, direction, leakage, calibration."""

import numpy as np
import pandas as pd
import pytest

from models import metrics as M
from models.baselines import LogisticBaseline, rule_score
from models.estimators import (
    HEADS,
    TrainConfig,
    fit_risk_model,
    labels_as_of,
    time_split,
    training_frame,
)
from models.features import FeatureConfig, feature_columns, features_for
from models.labels import label_orders
from tests.synth_orders import make_orders
from tests.test_leakage import scramble

FAST = TrainConfig.from_dict(
    {"num_threads": 1, "heads": {h: {"num_boost_round": 80} for h in HEADS}}
)


@pytest.fixture(scope="module")
def data():
    return make_orders(6000, seed=11, days=540, n_tech=30, n_units=500)


@pytest.fixture(scope="module")
def trained(data):
    orders, techs, units, _ = data
    frame, bounds = training_frame(orders, technicians=techs, units=units, config=FAST)
    model = fit_risk_model(frame, FeatureConfig(), FAST)
    return frame, bounds, model


def test_split_is_time_ordered_and_labels_known_at_the_cut_off(trained):
    frame, bounds, _ = trained
    fit = frame[frame["split"] == "fit"]
    cal = frame[frame["split"] == "calib"]
    test = frame[frame["split"] == "test"]
    assert fit["completed_at"].max() < cal["completed_at"].min()
    assert cal["completed_at"].max() < test["completed_at"].min()
    # fit and calibration labels are as known at the test start: a rework label needs its
    # window closed by then, so the newest calibration orders carry none (dissatisfaction: yes)
    window = pd.Timedelta(days=30)
    assert fit["rework"].notna().mean() > 0.95
    late = cal["completed_at"] > bounds["test_start"] - window
    assert late.any() and cal.loc[late, "rework"].isna().all()
    assert cal.loc[~late, "rework"].notna().mean() > 0.95
    assert cal.loc[late, "dissatisfied"].notna().any()


def test_short_history_trains_on_labels_known_by_the_cut_off(data):
    orders, techs, units, _ = data
    until = orders["reported_at"].min() + pd.Timedelta(days=120)
    frame, bounds = training_frame(orders, technicians=techs, units=units, config=FAST, until=until)
    assert frame["completed_at"].max() < until
    pre = frame[frame["split"] != "test"]
    # no pre-test label needed anything reported at or after the test start
    assert (
        pre.loc[pre["rework"].notna(), "completed_at"] + pd.Timedelta(days=30)
        <= bounds["test_start"]
    ).all()
    model = fit_risk_model(frame, FeatureConfig(), FAST)
    assert model.info["rework_calib_rows"] > 0
    p = model.predict(frame[frame["split"] == "test"])["rework_risk"]
    assert p.between(0, 1).all()
    with pytest.raises(ValueError, match="too short"):
        training_frame(
            orders,
            technicians=techs,
            units=units,
            config=FAST,
            until=orders["reported_at"].min() + pd.Timedelta(days=20),
        )


def test_labels_as_of_never_use_later_knowledge(data):
    orders = data[0]
    lab = label_orders(orders)
    t = orders["completed_at"].quantile(0.5)
    early = labels_as_of(lab, t, 30)
    assert early["rework"].notna().sum() < lab["rework"].notna().sum()
    known = early["rework"].notna()
    assert (orders.loc[known, "completed_at"] + pd.Timedelta(days=30) <= t).all()
    assert (lab.loc[early["dissatisfied"].notna(), "dissatisfied_known_at"] <= t).all()


def test_same_seed_same_model(trained):
    frame, _, model = trained
    again = fit_risk_model(frame, FeatureConfig(), FAST)
    test = frame[frame["split"] == "test"]
    pd.testing.assert_frame_equal(model.predict(test), again.predict(test))


def test_heads_rank_and_are_calibrated(trained, data):
    frame, _, model = trained
    truth = data[3].set_index("order_id")
    test = frame[frame["split"] == "test"]
    scores = model.predict(test)
    for head, col in HEADS.items():
        y = test[head]
        auc = M.auc(y, scores[col])
        oracle = M.auc(
            y, truth.loc[test["order_id"], f"p_{'rework' if head == 'rework' else 'dissatisfied'}"]
        )
        assert 0.8 * oracle < auc <= oracle + 0.02, (head, auc, oracle)
        assert M.ece(y, scores[col]) < 0.06
        assert auc > M.auc(y, rule_score(test))


def test_repeat_order_raises_rework_risk(trained, data):
    orders, techs, units, _ = data
    _, bounds, model = trained
    hist = model.history(orders, techs, units)
    target = orders[
        (orders["status"] == "completed") & (orders["completed_at"] > bounds["test_start"])
    ].head(60)
    base = model.score_orders(hist, target)["rework_risk"].to_numpy()
    # the same orders, each preceded by a repair of the same problem 5 days earlier
    prev = target.copy()
    prev["order_id"] = prev["order_id"] + "-prev"
    shift = pd.Timedelta(days=5)
    for c in ("reported_at", "dispatched_at", "arrived_at", "completed_at"):
        prev[c] = target["reported_at"] - shift + (target[c] - target["reported_at"]) * 0
    prev["completed_at"] = target["reported_at"] - shift + pd.Timedelta(hours=3)
    prev["arrived_at"] = target["reported_at"] - shift + pd.Timedelta(hours=1)
    prev["dispatched_at"] = prev["arrived_at"]
    more = pd.concat([orders, prev], ignore_index=True)
    hist2 = model.history(more, techs, units)
    after = model.score_orders(hist2, target)["rework_risk"].to_numpy()
    assert after.mean() > base.mean() * 1.2
    assert (after > base).mean() > 0.7


def test_long_overdue_response_raises_dissatisfaction(trained, data):
    orders, techs, units, _ = data
    _, bounds, model = trained
    hist = model.history(orders, techs, units)
    target = orders[
        (orders["status"] == "completed") & (orders["completed_at"] > bounds["test_start"])
    ].head(60)
    base = model.score_orders(hist, target)["dissatisfaction_prob"].to_numpy()
    late = target.copy()
    delay = pd.Timedelta(hours=72)
    for c in ("dispatched_at", "arrived_at", "completed_at"):
        late[c] = target[c] + delay
    after = model.score_orders(hist, late)["dissatisfaction_prob"].to_numpy()
    assert after.mean() > base.mean() * 1.2
    assert (after > base).mean() > 0.7


def test_scores_ignore_own_outcomes_and_the_future(trained, data):
    orders, techs, units, _ = data
    _, bounds, model = trained
    done = orders[
        (orders["status"] == "completed") & (orders["completed_at"] > bounds["test_start"])
    ]
    full = model.score_orders(model.history(orders, techs, units), done).set_index("order_id")
    for row in done.index[::80][:6]:
        t = orders.at[row, "completed_at"]
        past = scramble(orders[orders["reported_at"] <= t], pd.Index([row]), seed=int(row))
        one = model.score_orders(model.history(past, techs, units), past.loc[[row]])
        got = one.set_index("order_id")
        pd.testing.assert_frame_equal(got, full.loc[got.index])


def test_reasons_are_the_apis_business_language(trained):
    from models.reasons import REASON_TEXTS, Reasoner

    frame, _, model = trained
    test = frame[frame["split"] == "test"].head(20)
    out = model.predict(test, reasons=3)
    codes = {code for code, _ in REASON_TEXTS.values()} | set(feature_columns(frame))
    api = Reasoner(model, None, 0).top(test, 3)
    assert any(out["top_reasons"])
    for cell, items in zip(out["top_reasons"], api, strict=True):
        parts = [p for p in cell.split("; ") if p]
        assert 0 < len(parts) <= 3
        for part, item in zip(parts, items, strict=True):
            # "同户90天内同类报修2次 (unit_repeat_90d)": the API's text and code, not raw features
            text, code = part.rsplit(" (", 1)
            assert code.rstrip(")") in codes
            assert (text, code.rstrip(")")) == (item["text"], item["code"])


def test_logistic_baseline_and_split_contract(trained):
    frame, _, _ = trained
    feats = feature_columns(frame)
    fit = frame[(frame["split"] == "fit") & frame["rework"].notna()]
    lr = LogisticBaseline().fit(fit[feats], fit["rework"])
    p = lr.predict_proba(frame[feats].head(10))
    assert ((p > 0) & (p < 1)).all()
    split, b = time_split(frame["completed_at"], TrainConfig())
    assert set(split) == {"fit", "calib", "test"} and b["calib_start"] < b["test_start"]


def test_metrics_basics():
    y = np.array([0, 0, 1, 1, np.nan])
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.5])
    assert M.auc(y, p) == 1.0
    assert M.lift_at(y, p, 0.5) == 2.0 and M.recall_at(y, p, 0.5) == 1.0
    assert M.ece(np.array([0, 1]), np.array([0.5, 0.5])) == 0.0
    assert M.ece(np.array([1, 1]), np.array([0.0, 0.0])) == 1.0


def test_train_config_from_dict_overrides_and_refuses_typos():
    c = TrainConfig.from_dict({"seed": 1, "heads": {"rework": {"lgbm": {"num_leaves": 7}}}})
    assert (
        c.heads["rework"].lgbm["num_leaves"] == 7
        and c.heads["rework"].lgbm["learning_rate"] == 0.03
    )
    with pytest.raises(ValueError):
        TrainConfig.from_dict({"sede": 1})


def test_row_bounds_fit_the_linear_part_and_baseline_on_the_newest_rows(trained):
    """``linear_max_rows`` / ``logreg_max_rows``: the newest rows, not the first or a sample;
    ``bagging_max_rows``: each tree's bag shrinks to the bound, never grows past the config."""
    from models.baselines import fit_logistic_baselines
    from models.estimators import RiskHead, canonical_order

    frame, _, _ = trained
    n = 400
    cfg = TrainConfig.from_dict(
        {
            "num_threads": 1,
            "heads": {h: {"num_boost_round": 30, "linear_max_rows": n} for h in HEADS},
        }
    )
    model = fit_risk_model(frame, FeatureConfig(), cfg)
    feats = model.feature_names
    canon = canonical_order(frame)
    known = (frame["split"].to_numpy() == "fit") & frame["rework"].notna().to_numpy()
    newest = frame.iloc[canon[known[canon]][-n:]]
    want = LogisticBaseline(C=0.1).fit(newest[feats], newest["rework"].to_numpy())
    got = model.heads["rework"].linear_
    np.testing.assert_allclose(got.model_.coef_, want.model_.coef_)
    oldest = frame.iloc[canon[known[canon]][:n]]
    other = LogisticBaseline(C=0.1).fit(oldest[feats], oldest["rework"].to_numpy())
    assert not np.allclose(got.model_.coef_, other.model_.coef_)

    shuffled = frame.sample(frac=1.0, random_state=3)  # "newest" by time, not by row position
    base = fit_logistic_baselines(shuffled, feats, ["rework"], max_rows=n)["rework"]
    np.testing.assert_allclose(
        base.model_.coef_,
        LogisticBaseline(C=1.0).fit(newest[feats], newest["rework"].to_numpy()).model_.coef_,
        rtol=1e-6,
        atol=1e-8,
    )

    head = RiskHead(
        TrainConfig.from_dict({"heads": {"rework": {"bagging_max_rows": 1000}}}).heads["rework"]
    )
    assert head._params(500)["bagging_fraction"] == 0.8  # below the bound: the config's
    assert head._params(4000)["bagging_fraction"] == 0.25
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="bagging_max_rows"):
            TrainConfig.from_dict({"heads": {"rework": {"bagging_max_rows": bad}}})
        with pytest.raises(ValueError, match="linear_max_rows"):
            TrainConfig.from_dict({"heads": {"rework": {"linear_max_rows": bad}}})


def test_baseline_options_are_read_once_from_params(tmp_path):
    """The train and evaluate stages compare with the same baselines (``params.yaml: evaluate``)."""
    from pipelines.evaluate import baseline_options

    p = tmp_path / "params.yaml"
    p.write_text(
        "evaluate:\n  logreg_C: 0.5\n  logreg_max_rows: 1000\n  rule:\n"
        "    repeat_window_days: 90\n",
        encoding="utf-8",
    )
    o = baseline_options(p)
    assert o["lr_C"] == 0.5 and o["lr_max_rows"] == 1000 and o["rule"].repeat_window_days == 90
    p.write_text("evaluate:\n  logreg_max_rows: 0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="evaluate.logreg_max_rows"):
        baseline_options(p)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
    """The data scientist's first notebook must not rot: execute every cell."""
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root / "notebooks" / "risk_models.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]


def test_text_scorer_travels_with_the_model(data, trained):
    """A sentiment model used for the features is pickled with the heads and used to score."""
    import pickle
    from functools import partial

    from models.sentiment import CommentSentimentModel, score_texts

    orders, techs, units, _ = data
    frame, _, _ = trained
    rated = orders[orders["feedback_comment"].notna() & orders["rating"].notna()]
    sm = CommentSentimentModel(min_df=1).fit(
        rated["feedback_comment"].tolist(), (rated["rating"] >= 3).astype(int).to_numpy()
    )
    scorer = partial(score_texts, sm)
    f2, _ = training_frame(orders, technicians=techs, units=units, config=FAST, text_scorer=scorer)
    model = fit_risk_model(f2, FeatureConfig(), FAST, text_scorer=scorer)
    again = pickle.loads(pickle.dumps(model))
    done = orders[(orders["status"] == "completed")].tail(30)
    a = model.score_orders(model.history(orders, techs, units), done)
    b = again.score_orders(again.history(orders, techs, units), done)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(f2["desc_sentiment"], frame["desc_sentiment"])


def test_refit_trains_the_trees_on_the_calibration_rows_too(trained):
    frame, _, model = trained
    cfg = TrainConfig.from_dict(
        {"num_threads": 1, "heads": {h: {"num_boost_round": 80, "refit": True} for h in HEADS}}
    )
    refit = fit_risk_model(frame, FeatureConfig(), cfg)
    test = frame[frame["split"] == "test"]
    for head in HEADS:
        n_fit, n_cal = (refit.info[f"{head}_{s}_rows"] for s in ("fit", "calib"))
        first = model.heads[head].booster_.best_iteration  # same data and seed, no refit
        assert refit.heads[head].booster_.num_trees() == round(first * (n_fit + n_cal) / n_fit)
        y, p = test[head], refit.heads[head].predict_proba(test[refit.feature_names])
        assert M.auc(y, p) > 0.6 and abs(np.nanmean(p[y.notna()]) - y.mean()) < 0.05


@pytest.mark.parametrize("refit", [False, True])
def test_recent_intercept_matches_the_newest_calibration_rate(trained, refit):
    """The anchored level holds for the trees that ship: after a refit on fit + calibration rows
    the intercept is anchored again on the refitted booster (its trees already learnt the newest
    level; anchoring the first booster's outputs added that shift twice: +.02 bias on a drifting
    independent simulation)."""
    from models.estimators import _intercept

    rng = np.random.default_rng(0)
    eta = rng.normal(-2.0, 1.0, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-(eta + 0.4)))).astype(float)
    b = _intercept(eta, y)
    assert abs(np.mean(1 / (1 + np.exp(-(eta + b)))) - y.mean()) < 1e-9 and 0.2 < b < 0.6
    frame, _, _ = trained
    cfg = TrainConfig.from_dict(
        {
            "num_threads": 1,
            "heads": {
                h: {"num_boost_round": 80, "intercept_days": 30, "refit": refit} for h in HEADS
            },
        }
    )
    m = fit_risk_model(frame, FeatureConfig(), cfg)
    cal = frame[(frame["split"] == "calib") & frame["rework"].notna()]
    newest = cal[cal["completed_at"] >= cal["completed_at"].max() - pd.Timedelta(days=30)]
    p = m.heads["rework"].predict_proba(newest[m.feature_names])
    assert abs(p.mean() - newest["rework"].mean()) < 1e-6


def test_weighted_intercept_recovers_the_level_from_partly_visible_positives():
    """Orders that show only a share F of their eventual positives still give the right level."""
    from models.estimators import _intercept

    rng = np.random.default_rng(1)
    eta = rng.normal(-2.0, 1.0, 40000)
    share = rng.uniform(0.0, 1.0, len(eta))  # each order's exposure so far
    eventual = rng.random(len(eta)) < 1 / (1 + np.exp(-(eta + 0.5)))
    seen = (eventual & (rng.random(len(eta)) < share)).astype(float)
    assert abs(_intercept(eta, seen, share) - 0.5) < 0.05
    assert _intercept(eta, seen) < 0.0  # read as matured labels, the level is far too low


def test_seasonal_shift_is_last_years_move_of_the_residual_level():
    """A summer excess the model's log-odds do not follow: the level a year ago moved up from
    May to June-August, so a June cut-off's anchored level is moved up by as much."""
    from models.estimators import seasonal_shift

    rng = np.random.default_rng(3)
    t = np.datetime64("2024-01-01") + rng.integers(0, 700 * 86400, 120000).astype("m8[s]")
    month = t.astype("datetime64[M]").astype(int) % 12 + 1
    eta = rng.normal(-2.0, 0.8, len(t))
    excess = np.where((month >= 6) & (month <= 8), 0.5, 0.0)
    y = (rng.random(len(t)) < 1 / (1 + np.exp(-(eta + excess)))).astype(float)
    shift, info = seasonal_shift(eta, y, t, np.datetime64("2025-06-01"), 30, 91)
    assert abs(shift - 0.5) < 0.1 and info["season_shift"] == round(shift, 4)
    shift, _ = seasonal_shift(eta, y, t, np.datetime64("2025-09-01"), 30, 91)  # Aug -> autumn
    assert abs(shift + 0.5) < 0.1
    shift, _ = seasonal_shift(eta, y, t, np.datetime64("2025-03-01"), 30, 91)  # no season
    assert abs(shift) < 0.1
    # less than a year of labels before the anchor window: no move, not a guess
    assert seasonal_shift(eta, y, t, np.datetime64("2024-12-15"), 30, 91) is None


def test_season_days_moves_the_anchored_level_by_the_reported_shift(trained):
    frame, _, _ = trained
    heads = {
        "rework": {"num_boost_round": 80, "intercept_days": 30, "intercept_pending": True},
        "dissatisfied": {"num_boost_round": 80},
    }
    plain = fit_risk_model(
        frame, FeatureConfig(), TrainConfig.from_dict({"num_threads": 1, "heads": heads})
    )
    heads["rework"]["season_days"] = 91
    moved = fit_risk_model(
        frame, FeatureConfig(), TrainConfig.from_dict({"num_threads": 1, "heads": heads})
    )
    level = moved.info["rework_level"]  # 540 days of data: a year before the anchor exists
    assert level["season_orders"] > 0 and level["season_shift"] is not None
    b0, b1 = plain.heads["rework"].calibrator_[1], moved.heads["rework"].calibrator_[1]
    assert abs((b1 - b0) - level["season_shift"]) < 1e-4
    assert "season_shift" not in plain.info["rework_level"]


def test_pending_rework_uses_only_what_the_cut_off_knew(trained):
    from models.estimators import pending_rework

    frame, _, _ = trained
    cutoff = pd.Timestamp(frame.attrs["split"]["test_start"])
    pend = pending_rework(frame, 30.0)
    rows = frame.iloc[pend.rows]
    assert len(rows) and (rows["split"] == "calib").all() and rows["rework"].isna().all()
    assert (rows["completed_at"] >= cutoff - pd.Timedelta(days=30)).all()
    # exposure grows with age and stays in [0, 1]; a known repeat is a partial positive
    age = (cutoff - rows["completed_at"]).dt.total_seconds().to_numpy()
    order = np.argsort(age)
    assert np.all(np.diff(pend.exposure[order]) >= 0) and 0 < pend.exposure.min() <= 1
    assert pend.exposure.max() <= 1
    assert np.array_equal(pend.partial, (rows["_rework_known_at"] <= cutoff).to_numpy(float))
    # repeats reported after the cut-off, and the test slice's events, change nothing
    moved = frame.copy()
    later = (moved["_rework_known_at"] > cutoff).fillna(False)
    moved.loc[later, "_rework_known_at"] = pd.NaT
    test = (moved["split"] == "test").to_numpy()
    moved.loc[test, "_rework_known_at"] = moved.loc[test, "completed_at"] + pd.Timedelta(days=1)
    again = pending_rework(moved, 30.0)
    assert np.array_equal(again.rows, pend.rows)
    assert np.array_equal(again.exposure, pend.exposure)
    assert np.array_equal(again.partial, pend.partial)


def test_pending_orders_move_the_rework_intercept_to_the_newest_level(trained):
    """A rework wave in the last weeks before the cut-off lifts the anchored level."""
    frame, _, _ = trained
    cfg = TrainConfig.from_dict(
        {
            "num_threads": 1,
            "heads": {
                "rework": {"num_boost_round": 80, "intercept_days": 30, "intercept_pending": True},
                "dissatisfied": {"num_boost_round": 80},
            },
        }
    )
    model = fit_risk_model(frame, FeatureConfig(), cfg)
    base = model.heads["rework"].calibrator_[1]
    level = model.info["rework_level"]  # reported in training.json
    assert level["open_windows"] > 0 and level["orders"] >= level["open_windows"]
    assert 0 < level["exposure"] < level["orders"] and 0 < level["rate"] < 1
    assert "dissatisfied_level" not in model.info  # no intercept_days: the whole slice's level
    cutoff = pd.Timestamp(frame.attrs["split"]["test_start"])
    wave = frame.copy()
    pend = (wave["split"] == "calib") & wave["rework"].isna()
    pend &= wave["completed_at"] < cutoff - pd.Timedelta(hours=1)
    hit = pend & (np.random.default_rng(0).random(len(wave)) < 0.3)
    wave.loc[hit, "_rework_known_at"] = wave.loc[hit, "completed_at"] + pd.Timedelta(hours=1)
    assert (wave.loc[hit, "_rework_known_at"] <= cutoff).all()
    lifted = fit_risk_model(wave, FeatureConfig(), cfg).heads["rework"].calibrator_[1]
    assert lifted > base + 0.3
    with pytest.raises(ValueError, match="dissatisfied.intercept_pending"):
        fit_risk_model(
            frame,
            FeatureConfig(),
            TrainConfig.from_dict({"heads": {"dissatisfied": {"intercept_pending": True}}}),
        )
    with pytest.raises(ValueError, match="season_days needs intercept_days"):
        fit_risk_model(
            frame,
            FeatureConfig(),
            TrainConfig.from_dict({"heads": {"rework": {"season_days": 91}}}),
        )
    with pytest.raises(ValueError, match="intercept_pending needs intercept_days"):
        fit_risk_model(
            frame,
            FeatureConfig(),
            TrainConfig.from_dict({"heads": {"rework": {"intercept_pending": True}}}),
        )


def test_evaluation_of_a_fully_censored_test_slice_is_nan_not_an_error():
    from pipelines.evaluate import evaluate_scored

    n = 50
    rng = np.random.default_rng(0)
    test = pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n)],
            "community_id": "C1",
            "category": "plumbing",
            "rule": rng.integers(0, 2, n).astype(float),
            "rework": np.nan,  # every rework window still open at the cut-off
            "dissatisfied": rng.integers(0, 2, n).astype(float),
        }
    )
    for head in ("rework", "dissatisfied"):
        test[f"{head}__model"] = rng.random(n)
        test[f"{head}__logreg"] = rng.random(n)
    metrics, plots, _ = evaluate_scored(test)
    assert np.isnan(metrics["rework_auc"]) and metrics["rework_n"] == 0
    assert plots["rework_roc"].empty
    assert 0 <= metrics["dissatisfied_auc"] <= 1 and len(plots["dissatisfied_roc"])


def test_evaluation_reports_the_oracles_lift_and_the_models_share_of_it():
    """The oracle ranked like the model: the attainable lift, and the model's share of it."""
    from pipelines.evaluate import evaluate_scored

    n = 4000
    rng = np.random.default_rng(1)
    p_true = rng.beta(1, 8, n)
    test = pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n)],
            "community_id": "C1",
            "category": "plumbing",
            "rule": rng.integers(0, 2, n).astype(float),
            "rework": (rng.random(n) < p_true).astype(float),
            "dissatisfied": rng.integers(0, 2, n).astype(float),
        }
    )
    test["rework__oracle"] = p_true
    test["rework__model"] = p_true + rng.normal(0, 0.05, n)  # a noisier ranking
    test["rework__logreg"] = test["dissatisfied__model"] = test["dissatisfied__logreg"] = 0.5
    metrics, _, _ = evaluate_scored(test)
    for pct in (5, 10, 20):
        ol = metrics[f"rework_oracle_lift_top{pct}"]
        assert ol > 1.5
        assert metrics[f"rework_lift_top{pct}_share_oracle"] == pytest.approx(
            metrics[f"rework_lift_top{pct}"] / ol
        )
    assert metrics["rework_lift_top10_share_oracle"] < 1.0
    assert "dissatisfied_oracle_lift_top10" not in metrics  # no ground truth for that head
    test["rework__model"] = p_true
    metrics, _, _ = evaluate_scored(test)
    assert metrics["rework_lift_top10_share_oracle"] == pytest.approx(1.0)


def test_final_frame_learns_up_to_the_end_and_not_beyond(data, tmp_path):
    """The shipped heads' frame: every order before the end in fit/calib, labels as of the end."""
    from models.estimators import final_training_frame

    orders, techs, units, _ = data
    until = orders["reported_at"].quantile(0.8)
    frame, bounds = training_frame(orders, technicians=techs, units=units, config=FAST, until=until)
    frame.to_parquet(tmp_path / "f.parquet")  # as the features stage hands it to train
    again = pd.read_parquet(tmp_path / "f.parquet")
    final, fb = final_training_frame(again, FAST, 30)
    assert fb["test_start"] == bounds["end"] == until
    assert (final.loc[final["completed_at"] < until, "split"] != "test").all()
    for head in HEADS:  # more labelled rows than the evaluated heads had
        n_eval = frame.loc[frame["split"] != "test", head].notna().sum()
        assert final.loc[final["split"] != "test", head].notna().sum() > n_eval
    # a rework label only once its window closed by the end, and exactly the data's label then
    lab = label_orders(orders[orders["reported_at"] < until]).loc[final.index]
    closed = final["completed_at"] + pd.Timedelta(days=30) <= until
    assert final.loc[~closed, "rework"].isna().all()
    truth_then = labels_as_of(lab.assign(completed_at=final["completed_at"]), until, 30)
    pd.testing.assert_series_equal(
        final.loc[closed, "rework"], truth_then.loc[closed, "rework"], check_names=False
    )
    known = final["dissatisfied"].notna()
    assert (lab.loc[known, "dissatisfied_known_at"] <= until).all()
    model = fit_risk_model(final, FeatureConfig(), FAST)
    assert pd.Timestamp(model.info["split"]["test_start"]) == until
    with pytest.raises(ValueError, match="label events"):
        final_training_frame(frame.drop(columns=["_dissatisfied"]), FAST, 30)
    frame.attrs.clear()
    with pytest.raises(ValueError, match="rebuild it"):
        final_training_frame(frame, FAST, 30)


def _shuffled(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same table as another export would write it: rows in another order, fresh index."""
    return df.iloc[np.random.default_rng(seed).permutation(len(df))].reset_index(drop=True)


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("order_id").sort_index()


def test_row_order_of_the_export_does_not_change_the_model(data, trained):
    """The same history exported in another row order (by id, by community, by insertion)
    gives bit-identical features and the same model: codes, running sums, LightGBM's bagging
    and the fit/calibration rows all followed the data's row order once."""
    orders, techs, units, _ = data
    frame, _, model = trained
    frame2, _ = training_frame(
        _shuffled(orders, 1),
        technicians=_shuffled(techs, 2),
        units=_shuffled(units, 3),
        config=FAST,
    )
    a, b = _by_id(frame), _by_id(frame2)
    pd.testing.assert_frame_equal(a, b[a.columns], check_exact=True)
    model2 = fit_risk_model(frame2, FeatureConfig(), FAST)
    assert model2.info == model.info
    test = a[a["split"] == "test"].reset_index()
    pd.testing.assert_frame_equal(model2.predict(test), model.predict(test), check_exact=True)


def test_features_of_tied_timestamps_do_not_depend_on_row_order(data):
    """Exports rounded to the minute or hour put many events of one key in the same second;
    their running sums must not depend on which row came first."""
    orders, techs, units, _ = data
    orders = orders.copy()
    for col in ("reported_at", "dispatched_at", "arrived_at", "completed_at"):
        orders[col] = orders[col].dt.floor("h")
    one, _ = training_frame(orders, technicians=techs, units=units, config=FAST)
    two, _ = training_frame(_shuffled(orders, 4), technicians=techs, units=units, config=FAST)
    pd.testing.assert_frame_equal(
        _by_id(one), _by_id(two)[one.columns.drop("order_id")], check_exact=True
    )


TEXT = TrainConfig.from_dict(
    {
        "num_threads": 1,
        "heads": {
            "rework": {"num_boost_round": 80},
            "dissatisfied": {
                "num_boost_round": 80,
                "text_model": {"min_df": 2, "folds": 3, "max_rows": 100_000},
            },
        },
    }
)


def test_description_model_values_are_out_of_fold(data):
    """Each training row's description value comes from a model that never saw its label.

    Every description gets a unique trigram and the labels are coin flips: a model fitted on a
    row's own label memorises its token (in-sample AUC near 1), an out-of-fold value cannot
    beat chance; rows outside the training rows get the model of all of them.
    """
    from models.description import DescriptionModelConfig, description_feature
    from models.estimators import canonical_order

    orders, techs, units, _ = data
    frame, _ = training_frame(orders, technicians=techs, units=units, config=TEXT)
    rng = np.random.default_rng(5)
    frame = frame.assign(
        # three random ideographs: a trigram no other description has
        _description=[
            d + "".join(chr(0x4E00 + int(c)) for c in rng.integers(0, 3000, 3))
            for d in frame["_description"]
        ],
        dissatisfied=np.where(frame["dissatisfied"].notna(), rng.random(len(frame)) < 0.3, np.nan),
    )
    cfg = DescriptionModelConfig(C=100.0, min_df=1, folds=3)
    y = frame["dissatisfied"].to_numpy(dtype=float)
    values, scorer = description_feature(
        frame, y, cfg, canonical_order(frame), 0, param="train.heads.dissatisfied.text_model"
    )
    fit = (frame["split"] == "fit").to_numpy() & frame["dissatisfied"].notna().to_numpy()
    assert abs(M.auc(y[fit], values[fit]) - 0.5) < 0.05
    own = scorer(list(frame["_description"][fit]))
    assert M.auc(y[fit], own) > 0.95  # what an in-sample value would have leaked
    rest = ~fit
    np.testing.assert_allclose(values[rest], scorer(list(frame["_description"][rest])))


def test_description_model_travels_with_the_model_and_scores_like_training(data):
    """The feature the heads learnt from is the one scoring computes: a history built by the
    model gives the test orders the values the training frame's descriptions give."""
    from models.description import feature_name

    orders, techs, units, _ = data
    frame, _ = training_frame(orders, technicians=techs, units=units, config=TEXT)
    model = fit_risk_model(frame, FeatureConfig(), TEXT)
    name = feature_name("dissatisfied")
    assert name in model.feature_names and set(model.text_models) == {name}
    assert feature_name("rework") not in model.feature_names
    from models.reasons import REASONS, reason_item

    assert {feature_name(h) for h in HEADS} <= set(REASONS)
    assert reason_item(name, {name: -1.0}, 0.3)["text"] == "按报事描述措辞估计的不满意概率27%"
    test = frame[frame["split"] == "test"]
    from_frame = model.with_text_features(test)[name].to_numpy()
    done = orders.set_index("order_id").loc[test["order_id"]].reset_index()
    scored = features_for(model.history(orders, techs, units), done)
    np.testing.assert_allclose(scored[name].to_numpy(), from_frame, rtol=1e-9)
    np.testing.assert_allclose(
        model.predict(scored)["dissatisfaction_prob"].to_numpy(),
        model.predict(test)["dissatisfaction_prob"].to_numpy(),
        rtol=1e-9,
    )
    with pytest.raises(ValueError, match="unknown text_model parameters"):
        TrainConfig.from_dict({"heads": {"dissatisfied": {"text_model": {"folds": 3, "C_": 1}}}})
    with pytest.raises(ValueError, match="rebuild it"):
        fit_risk_model(frame.drop(columns="_description"), FeatureConfig(), TEXT)


def test_models_pickled_before_description_models_load_with_none(trained):
    """Registry versions saved before ``text_models`` existed unpickle with an empty dict."""
    import pickle

    _, _, model = trained
    state = dict(model.__dict__)
    del state["text_models"]
    old = object.__new__(type(model))
    old.__setstate__(state)
    again = pickle.loads(pickle.dumps(old))
    assert again.text_models == {} and again.feature_names == model.feature_names


def test_urgency_model_reads_severity_from_the_wording_and_travels(data):
    """The urgency model learns the dispatcher's priority from the description's wording: a
    severity phrase that mostly comes with urgent orders is found (out of fold, so no row's own
    priority is memorised), both heads may use the feature, and scoring later orders computes the
    value the training frame got."""
    from models.description import URGENCY, description_feature, feature_name, urgency_target
    from models.estimators import canonical_order

    orders, techs, units, _ = data
    rng = np.random.default_rng(3)
    urgent = orders["priority"].astype(object).ne("normal").to_numpy()
    severe = rng.random(len(orders)) < np.where(urgent, 0.8, 0.1)
    orders = orders.assign(
        description=np.where(severe, "家里冒烟了，", "有点小问题，") + orders["description"]
    )
    cfg = TrainConfig.from_dict(
        {
            "num_threads": 1,
            "urgency_text_model": {"min_df": 2, "folds": 3},
            "heads": {h: {"num_boost_round": 40} for h in HEADS},
        }
    )
    frame, _ = training_frame(orders, technicians=techs, units=units, config=cfg)
    y = urgency_target(frame)
    assert set(np.unique(y[~np.isnan(y)])) == {0.0, 1.0}
    assert np.array_equal(y == 1.0, frame["priority"].astype(object).ne("normal").to_numpy())
    model = fit_risk_model(frame, FeatureConfig(), cfg)
    name = feature_name(URGENCY)
    assert name in model.feature_names and set(model.text_models) == {name}
    from models.reasons import reason_item

    assert reason_item(name, {name: 0.0}, 0.3)["text"] == "按报事描述措辞估计的加急概率50%"
    values, _ = description_feature(
        frame, y, cfg.urgency_text_model, canonical_order(frame), 0, param="urgency"
    )
    fit = (frame["split"] == "fit").to_numpy()
    # out of fold, the wording still separates urgent from normal orders (the phrase's 8:1)
    assert M.auc(y[fit], values[fit]) > 0.8
    test = frame[frame["split"] == "test"]
    done = orders.set_index("order_id").loc[test["order_id"]].reset_index()
    scored = features_for(model.history(orders, techs, units), done)
    np.testing.assert_allclose(
        scored[name].to_numpy(), model.with_text_features(test)[name].to_numpy(), rtol=1e-9
    )
    with pytest.raises(ValueError, match="train.urgency_text_model needs the descriptions"):
        fit_risk_model(frame.drop(columns="_description"), FeatureConfig(), cfg)
