"""The two risk heads: LightGBM, calibrated on a later time slice, bundled with the features.

Why this shape:

* **Time-ordered split, labels known by the cut-off.** Orders are split by ``completed_at`` into
  fit / calibration / test slices. Fit and calibration labels are taken *as known at the test
  start* (:func:`labels_as_of`), test labels at the end of the data, so nothing the model learns
  needed information from after the moment it would have been trained in production. The
  calibration slice is the newest orders whose rework window had closed by then (plus the
  days after, which carry dissatisfaction labels), so even a few months of history train.
* **Calibration on a later slice.** Early stopping and the calibrator both use the calibration
  slice, the most recent labels the model may learn from; when the base rate drifts (rework
  rising over time) this is what keeps the probabilities honest. The booster is then refitted on
  fit + calibration rows with the chosen number of trees (``refit``), so the newest labels shape
  the trees as well. Platt scaling on the booster's logit
  (2 parameters) is the default: it moves the intercept with the drift and cannot overfit
  small slices; isotonic is available.
* **Evaluated heads, then shipped heads.** The metrics come from heads fitted before the test
  slice; ``repairqc train`` then fits the heads it ships again up to the end of the data
  (:func:`final_training_frame`): what a property system scores next lies after the newest
  labels, and heads that stopped learning a test slice earlier score it with an older level.
* **Booster + logistic, stacked.** The calibrator is a logistic regression on the log-odds of
  the booster and of a regularised logistic model (fitted on the fit slice): Platt scaling
  when the logistic part is switched off.
* **Small, regularised trees.** ~100-300 trees with ``min_child_samples`` and L2 were as good as
  500 and predict several times faster; high-cardinality ids are never raw categoricals (their
  as-of encodings carry the signal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.description import (
    DESCRIPTION_COLUMN,
    URGENCY,
    DescriptionModelConfig,
    description_feature,
    description_target,
    description_texts,
    feature_name,
)
from models.features import (
    CATEGORICAL_LEVELS,
    FeatureConfig,
    History,
    TextScorer,
    build_history,
    feature_columns,
    features_for,
)
from models.schemas import ORDERS

#: Names of the heads and of their output columns.
HEADS: dict[str, str] = {"rework": "rework_risk", "dissatisfied": "dissatisfaction_prob"}


@dataclass(frozen=True)
class HeadConfig:
    """Hyper-parameters of one head (``params.yaml: train.<head>``).

    Attributes
    ----------
    lgbm
        LightGBM booster parameters.
    num_boost_round, early_stopping_rounds
        Upper bound of trees and patience on the calibration slice.
    calibration
        ``"platt"`` (logistic on the log-odds) or ``"isotonic"`` (booster only).
    linear_C
        Regularisation of a logistic regression fitted next to the booster; the calibrator
        stacks both log-odds on the calibration slice. Smooth monotone effects (urges, delay)
        are what the logistic part catches with less data: on the default data it added
        ~+0.004 rework and ~+0.012 dissatisfaction AUC. ``null``: booster only.
    linear_max_rows
        The logistic part learns from the newest this many fit rows (``null``: all). It has
        one coefficient per feature and level (~150), which 200k rows pin down to well within
        their noise, while lbfgs on all rows cost 21 s per head and fit at 1M orders (86 s of
        the pipeline, fit and final fit). Below the bound (the default data) nothing changes.
    intercept_days
        After Platt scaling on the whole calibration slice, re-estimate its intercept on the
        calibration orders of the last this many days (the slope stays): the probabilities
        then start from the most recent base rate, which matters when it drifts. The days
        count back from the newest labelled order, or with ``intercept_pending`` from the
        cut-off. ``null``: the whole slice's intercept.
    intercept_pending
        Let the orders whose rework window was still open at the cut-off anchor that
        intercept, chain-ladder style (:func:`pending_rework`): an order completed ``a`` days
        before the cut-off counts as ``F(a)`` of an order, ``F`` being the share of matured
        reworks reported within ``a`` days, and its repeats reported by then are its partial
        label. With ``intercept_days`` 30 the level then describes the last 30 days, not the
        30 matured days before them. Three months after the cut-off (``bench_forward``, 8
        sets with and without a 2.0 log-odds drift) rework ECE fell from a mean .016 (worst
        .043) to .014 (worst .022); on the evaluation's test slice from .015 (worst .043) to
        .010 (worst .023).
    bagging_max_rows
        Each tree learns from at most this many rows: above it, the bagging fraction becomes
        this bound over the rows (``lgbm.bagging_freq`` > 0; never above
        ``lgbm.bagging_fraction``). A tree's histograms cost time in proportion to the rows it
        sees, and past a few hundred thousand rows the split statistics of a 15-leaf tree
        with 300 rows per leaf are precise already: at 1M orders the boosters were ~320 s of
        the pipeline. Below the bound (the default data) nothing changes. ``null``: no bound.
    refit
        After early stopping and calibration, refit the booster on fit + calibration rows with
        the chosen number of trees scaled to the larger sample (the calibrator's slopes are
        kept): the newest labelled orders then shape the trees too. With ``intercept_days`` the
        level is anchored on the refitted booster's outputs: its trees have learnt the newest
        level already, and anchoring the first booster's outputs added that shift a second
        time (on an independently written simulation with a 2.0 log-odds upward drift, a
        September cut-off's next three months were over-predicted by .042, .025 after).
    season_days
        With ``intercept_days``: move the anchored level by how it moved one year earlier from
        the same ``intercept_days`` to the following ``season_days`` (:func:`seasonal_shift`),
        so scores made in the months after the cut-off do not carry the anchor window's
        season (a summer level into autumn). The move is measured as the residual level of the
        model that ships against the matured labels of a year ago, so what the features
        already follow (the category mix, the current fault intensity) is not counted twice.
        ``null``, or less than a year of labels before the anchor window: no move.
    text_model
        A character n-gram model of the description trained on this head's labels
        (:mod:`models.description`), added as the feature ``desc_text_<head>`` that both heads
        may use. ``null``: none.
    """

    lgbm: dict[str, Any] = field(
        default_factory=lambda: {
            "objective": "binary",
            "learning_rate": 0.03,
            "num_leaves": 15,
            "min_child_samples": 300,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 5.0,
            "cat_smooth": 20.0,
            "min_data_per_group": 200,
            "max_bin": 127,
        }
    )
    num_boost_round: int = 800
    early_stopping_rounds: int = 60
    calibration: str = "platt"
    linear_C: float | None = 0.1
    linear_max_rows: int | None = None
    bagging_max_rows: int | None = None
    refit: bool = False
    intercept_days: float | None = None
    intercept_pending: bool = False
    season_days: float | None = None
    text_model: DescriptionModelConfig | None = None

    def __post_init__(self) -> None:
        for key in ("linear_max_rows", "bagging_max_rows"):
            n = getattr(self, key)
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise ValueError(f"train.heads.*.{key} must be a positive integer, got {n!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Split and heads (``params.yaml: train``).

    Attributes
    ----------
    fit_fraction, calib_fraction
        The test slice is the newest ``1 - fit_fraction - calib_fraction`` of completed orders
        (by completion time); the orders before it whose rework window had closed by its start
        go ``fit_fraction : calib_fraction`` to fit and calibration (:func:`time_split`).
        70/10/20 beat 60/20/20 by ~+0.005 rework AUC (more recent training data).
    seed, num_threads
        Determinism and CPU budget (LightGBM threads; the machine has 2 cores).
    heads
        One :class:`HeadConfig` per head.
    urgency_text_model
        A character n-gram model of the description trained on the dispatcher's priority
        (:mod:`models.description`, the urgency model), added as the feature
        ``desc_text_urgency`` that both heads may use. ``null``: none.
    final_fit
        After the evaluation, fit the shipped heads again with the cut-off at the end of the data
        (:func:`final_training_frame`): the test slice's orders join fit and calibration, and
        every label is taken as known at the end. The evaluated heads stop learning at the test
        start, months before the data end, and score new orders with an older level: in the
        three months after ``--until`` (``bench/bench_forward.py``, two seeds, cut-offs in June
        and September) their rework ECE was 0.009–0.027 without drift and 0.034–0.063 under a
        2.0 log-odds upward drift, the refitted heads' 0.003–0.018 and 0.010–0.041, with AUC
        ratios as good or better (both before ``intercept_pending``; with it, measured again
        once training no longer depended on the row order, evaluated 0.006–0.018 and
        0.008–0.026, refitted 0.002–0.018 and 0.006–0.024). The reported
        metrics are those of the evaluation: the same procedure one test slice earlier.
    """

    fit_fraction: float = 0.7
    calib_fraction: float = 0.1
    seed: int = 42
    num_threads: int = 2
    final_fit: bool = True
    heads: dict[str, HeadConfig] = field(default_factory=lambda: {h: HeadConfig() for h in HEADS})
    urgency_text_model: DescriptionModelConfig | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> TrainConfig:
        """Build from ``params.yaml: train``; per-head keys override the defaults."""
        d = dict(d or {})
        heads_in = d.pop("heads", {}) or {}
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown train parameters: {sorted(unknown)}")
        heads = {}
        for h in HEADS:
            hd = dict(heads_in.get(h, {}) or {})
            base = HeadConfig()
            lgbm = {**base.lgbm, **(hd.pop("lgbm", {}) or {})}
            text = DescriptionModelConfig.from_dict(hd.pop("text_model", None))
            heads[h] = HeadConfig(lgbm=lgbm, text_model=text, **hd)
        urgency = DescriptionModelConfig.from_dict(d.pop("urgency_text_model", None))
        return cls(heads=heads, urgency_text_model=urgency, **d)


# --------------------------------------------------------------------------------------------
# Split and labels
# --------------------------------------------------------------------------------------------


def time_split(
    completed_at: pd.Series,
    config: TrainConfig,
    rework_window_days: float = 30.0,
    test_start: pd.Timestamp | None = None,
) -> tuple[pd.Series, dict]:
    """Assign each order to ``fit`` / ``calib`` / ``test`` by completion time.

    The test slice starts at the ``fit_fraction + calib_fraction`` quantile (the cut-off: what
    a model trained then could know). Fit and calibration slices share the orders before it
    whose rework window had closed by the cut-off ("mature"), oldest ``fit_fraction`` parts to
    fit, newest ``calib_fraction`` parts to calibration; the calibration slice runs on to the
    cut-off, where its newest orders still carry dissatisfaction labels.

    Why mature orders decide the boundary: every pre-test label is taken as of the cut-off, so
    a calibration slice made of the last days before it would be all censored for rework (a
    short history then had no calibration labels at all), and the most recent mature labels
    are what keeps the calibration honest when the base rate drifts.

    ``test_start`` given (the final fit: the end of the data) replaces the quantile cut-off.

    Returns the split per row and the two boundaries (the starts of calib and test).

    Raises
    ------
    ValueError
        No order before the cut-off is mature: the history is shorter than the rework window
        plus a test slice.
    """
    t = completed_at
    share = config.fit_fraction + config.calib_fraction
    if test_start is None:
        test_start = t.quantile(share)
    mature = t[t < test_start - pd.Timedelta(days=rework_window_days)]
    if not len(mature):
        raise ValueError(
            f"no completed order before the test cut-off {test_start} has a closed "
            f"{rework_window_days:g}-day rework window: the history "
            f"({t.min()} .. {t.max()}) is too short to fit and calibrate"
        )
    calib_start = mature.quantile(config.fit_fraction / share)
    split = pd.Series(
        np.where(t < calib_start, "fit", np.where(t < test_start, "calib", "test")), index=t.index
    )
    return split, {"calib_start": calib_start, "test_start": test_start}


def labels_as_of(
    labelled: pd.DataFrame, as_of: pd.Timestamp, rework_window_days: float
) -> pd.DataFrame:
    """Both labels as they were known at ``as_of`` (censored = NaN), from full-data labels.

    Rework: 1 when the window closed by ``as_of`` and the repeat was reported by then; 0 when
    the window closed without one known. Dissatisfied: the label once its follow-up is known.
    """
    closes = labelled["completed_at"] + pd.Timedelta(days=rework_window_days)
    closed = (closes <= as_of).fillna(False).to_numpy()
    pos = (
        labelled["rework_order_id"].notna() & (labelled["rework_known_at"] <= as_of).fillna(False)
    ).to_numpy()
    rework = np.where(closed, pos.astype(float), np.nan)
    known = (labelled["dissatisfied_known_at"] <= as_of).fillna(False).to_numpy()
    dissat = np.where(known, labelled["dissatisfied"].to_numpy(dtype=float), np.nan)
    return pd.DataFrame({"rework": rework, "dissatisfied": dissat}, index=labelled.index)


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _intercept(eta: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> float:
    """The intercept b with sum(w * sigmoid(eta + b)) = sum(y): expected = observed positives.

    ``weight`` (default 1): the share of an order's positives observable so far (a partly
    matured order's exposure).
    """
    w = np.ones(len(eta)) if weight is None else np.asarray(weight, dtype=float)
    rate = float(np.clip(y.sum() / max(w.sum(), 1e-12), 1e-6, 1 - 1e-6))
    b = float(_logit(np.array([rate]))[0] - _logit(1 / (1 + np.exp(-eta))).mean())
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(eta + b)))
        step = (y.sum() - (w * p).sum()) / max(float((w * p * (1 - p)).sum()), 1e-12)
        b += step
        if abs(step) < 1e-10:
            break
    return b


_YEAR = np.timedelta64(365 * 86400, "s")


def _span(days: float) -> np.timedelta64:
    return np.timedelta64(int(days * 86400), "s")


def seasonal_shift(
    eta: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    end: np.datetime64,
    days: float,
    horizon: float,
    history_start: np.datetime64 | None = None,
) -> tuple[float, dict[str, Any]] | None:
    """How the residual level moved a year before ``end``: ``days`` before to ``horizon`` after.

    ``eta``: the shipped model's log-odds of matured labelled orders ``y`` completed at ``t``.
    The residual level of a window is the intercept that makes its expected positives match the
    observed (:func:`_intercept`); the shift is that of the window ``[end - 1y, end - 1y +
    horizon)`` minus that of ``[end - 1y - days, end - 1y)``: a seasonal-naive forecast of the
    level, which also carries a steady trend (last year's months moved with it too). The trees
    learnt those orders, so part of last year's seasonal residual is fitted away and the shift
    errs towards zero. ``None`` when the history (from ``history_start``, default ``t.min()``)
    does not cover the year-ago anchor window, or a window lacks orders of both classes.
    """
    start = end - _YEAR
    anchor = (t >= start - _span(days)) & (t < start)
    ahead = (t >= start) & (t < start + _span(horizon))
    first = t.min() if history_start is None else history_start
    if first > start - _span(days):  # the anchor window's year-ago twin is not all in the data
        return None
    for w in (anchor, ahead):
        if not 0 < y[w].sum() < w.sum():
            return None
    shift = _intercept(eta[ahead], y[ahead]) - _intercept(eta[anchor], y[anchor])
    info = {
        "season_from": str(pd.Timestamp(start - _span(days))),
        "season_orders": int(anchor.sum() + ahead.sum()),
        "season_shift": round(float(shift), 4),
    }
    return float(shift), info


class RiskHead:
    """A LightGBM binary classifier with a calibrator fitted on a later slice.

    Follows scikit-learn's contract: ``__init__`` stores, ``fit`` returns ``self``, learned
    state ends in ``_``.
    """

    def __init__(self, config: HeadConfig | None = None, seed: int = 42, num_threads: int = 2):
        self.config = config or HeadConfig()
        self.seed = seed
        self.num_threads = num_threads

    def _params(self, n_rows: int) -> dict[str, Any]:
        """LightGBM's parameters for a booster trained on ``n_rows`` rows."""
        lgbm = dict(self.config.lgbm)
        cap = self.config.bagging_max_rows
        if cap is not None and lgbm.get("bagging_freq", 0) > 0 and n_rows > cap:
            lgbm["bagging_fraction"] = min(lgbm.get("bagging_fraction", 1.0), cap / n_rows)
        return {
            **lgbm,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }

    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        X_cal: pd.DataFrame,
        y_cal: np.ndarray,
        cal_time: pd.Series | None = None,
        X_both: pd.DataFrame | None = None,
        pending: PendingLabels | None = None,
        fit_time: pd.Series | None = None,
    ) -> RiskHead:
        """Fit the booster on ``X`` (early stopping on ``X_cal``), then the calibrator.

        With ``refit``, the booster is then trained again on ``X`` and ``X_cal`` together
        (``X_both``: those rows stacked already, fit first, which spares a copy).
        ``pending``: the orders whose label was still open at the cut-off, for the intercept
        (``intercept_pending``). ``fit_time``: the fit rows' completion times (``season_days``).
        """
        import lightgbm as lgb

        y = np.asarray(y, dtype=float)
        y_cal = np.asarray(y_cal, dtype=float)
        for name, labels in (("fit", y), ("calibration", y_cal)):
            if len(np.unique(labels)) < 2:
                raise ValueError(
                    f"the {name} slice has {len(labels)} labelled orders and not both classes: "
                    "more history is needed, or a larger slice (labels of a slice are censored "
                    "at the start of the next one)"
                )
        self.feature_names_ = list(X.columns)
        cats = [c for c in X.columns if c in CATEGORICAL_LEVELS]
        dtrain = lgb.Dataset(X, y, categorical_feature=cats, free_raw_data=False)
        dval = lgb.Dataset(X_cal, y_cal, reference=dtrain, categorical_feature=cats)
        self.booster_ = lgb.train(
            self._params(len(X)),
            dtrain,
            num_boost_round=self.config.num_boost_round,
            valid_sets=[dval],
            callbacks=[lgb.early_stopping(self.config.early_stopping_rounds, verbose=False)],
        )
        self.linear_ = None
        if self.config.linear_C is not None:
            from models.baselines import LogisticBaseline

            # X is in completion order (canonical_order), so the tail is the newest rows
            n = self.config.linear_max_rows
            tail = slice(None) if n is None else slice(-n, None)
            self.linear_ = LogisticBaseline(C=self.config.linear_C).fit(X.iloc[tail], y[tail])
        Z_cal = self._stack_inputs(X_cal)
        self._fit_calibrator(Z_cal, y_cal)
        if self.config.refit:
            rounds = max(1, round(self.booster_.best_iteration * (len(X) + len(X_cal)) / len(X)))
            dall = lgb.Dataset(
                pd.concat([X, X_cal]) if X_both is None else X_both,
                np.concatenate([y, y_cal]),
                categorical_feature=cats,
            )
            self.booster_ = lgb.train(
                self._params(len(X) + len(X_cal)), dall, num_boost_round=rounds
            )
            self.booster_.best_iteration = rounds
        days = self.config.intercept_days
        self.level_: dict[str, Any] | None = None
        if days is not None and cal_time is not None and isinstance(self.calibrator_, tuple):
            w_, b_slice = self.calibrator_
            # the stacked log-odds of the booster that ships: after a refit its trees have
            # learnt the calibration orders' level already, so anchoring the old booster's
            # outputs would add that shift twice
            if self.config.refit:
                Z_cal = self._stack_inputs(X_cal)
            eta, yy, ww = Z_cal @ w_, y_cal, np.ones(len(y_cal))
            t = pd.Series(cal_time).to_numpy()
            if pending is not None and len(pending.rows):
                eta = np.concatenate([eta, self._stack_inputs(pending.X) @ w_])
                yy = np.concatenate([yy, pending.partial])
                ww = np.concatenate([ww, pending.exposure])
                t = np.concatenate([t, pending.completed_at])
            recent = t >= t.max() - np.timedelta64(int(days * 86400), "s")
            if 0 < yy[recent].sum() < ww[recent].sum():
                self.calibrator_ = (w_, _intercept(eta[recent], yy[recent], ww[recent]))
                # what the level was anchored on, for training.json: a data scientist sees
                # which recent rate the scores start from and how far it moved the slice's
                self.level_ = {
                    "from": str(pd.Timestamp(t[recent].min())),
                    "orders": int(recent.sum()),
                    "open_windows": int(recent[len(y_cal) :].sum()),
                    "exposure": round(float(ww[recent].sum()), 1),
                    "positives": int(yy[recent].sum()),
                    "rate": round(float(yy[recent].sum() / ww[recent].sum()), 4),
                    "intercept_shift": round(float(self.calibrator_[1] - b_slice), 4),
                }
                if self.config.season_days is not None and fit_time is not None:
                    self._move_by_season(X, y, X_cal, y_cal, fit_time, cal_time, t.max())
        return self

    def _move_by_season(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        X_cal: pd.DataFrame,
        y_cal: np.ndarray,
        fit_time: pd.Series,
        cal_time: pd.Series,
        end: np.datetime64,
    ) -> None:
        """Add :func:`seasonal_shift` of the matured fit and calibration labels to the level."""
        t = np.concatenate([pd.Series(fit_time).to_numpy(), pd.Series(cal_time).to_numpy()])
        y_all = np.concatenate([y, y_cal])
        days, horizon = float(self.config.intercept_days), float(self.config.season_days)
        near = np.flatnonzero((t >= end - _YEAR - _span(days)) & (t < end - _YEAR + _span(horizon)))
        n_fit = len(y)
        parts = [X.iloc[near[near < n_fit]], X_cal.iloc[near[near >= n_fit] - n_fit]]
        parts = [p for p in parts if len(p)]  # LightGBM refuses to predict 0 rows
        w_, b = self.calibrator_
        moved = None
        if parts:
            eta = np.concatenate([self._stack_inputs(p) @ w_ for p in parts]) + b
            moved = seasonal_shift(eta, y_all[near], t[near], end, days, horizon, t.min())
        if moved is None:  # less than a year of labels before the anchor: no move
            self.level_["season_shift"] = None
            return
        shift, info = moved
        self.calibrator_ = (w_, b + shift)
        self.level_.update(info)

    def _stack_inputs(self, X: pd.DataFrame) -> np.ndarray:
        """Log-odds of the booster (and of the logistic component) per row."""
        cols = [_logit(self.predict_raw(X))]
        if self.linear_ is not None:
            cols.append(_logit(self.linear_.predict_proba(X[self.feature_names_])))
        return np.column_stack(cols)

    def _fit_calibrator(self, Z: np.ndarray, y: np.ndarray) -> None:
        if self.config.calibration == "isotonic":
            if Z.shape[1] != 1:
                raise ValueError("isotonic calibration needs linear_C: null (booster only)")
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1)
            self.calibrator_ = iso.fit(Z[:, 0], y)
        elif self.config.calibration == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6, max_iter=1000).fit(Z, y)
            self.calibrator_ = (lr.coef_[0].astype(float), float(lr.intercept_[0]))
        else:
            raise ValueError(f"unknown calibration {self.config.calibration!r}")

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated booster probability."""
        return self.booster_.predict(
            X[self.feature_names_], num_iteration=self.booster_.best_iteration
        )

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the positive class."""
        Z = self._stack_inputs(X)
        if isinstance(self.calibrator_, tuple):
            w, b = self.calibrator_
            return 1.0 / (1.0 + np.exp(-(Z @ w + b)))
        return self.calibrator_.predict(Z[:, 0])

    def predict_proba_matrix(self, M: np.ndarray) -> np.ndarray:
        """:meth:`predict_proba` of a float matrix in ``feature_names_`` order.

        Categoricals are their contract level codes (NaN missing), as built by
        ``models.reasons.numeric_matrix``.

        The serving path: LightGBM predicts a numpy row in ~0.2 ms against ~1.5 ms through a
        DataFrame, and on one thread (all threads: a single-row p99 of 8.5 ms whenever another
        process holds a core). The service checks it against :meth:`predict_proba` at load.
        """
        raw = self.booster_.predict(M, num_iteration=self.booster_.best_iteration, num_threads=1)
        cols = [_logit(raw)]
        if self.linear_ is not None:
            cols.append(_logit(self.linear_.predict_proba_matrix(M, self.feature_names_)))
        Z = np.column_stack(cols)
        if isinstance(self.calibrator_, tuple):
            w, b = self.calibrator_
            return 1.0 / (1.0 + np.exp(-(Z @ w + b)))
        return self.calibrator_.predict(Z[:, 0])

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contributions (log-odds, TreeSHAP) of the booster: the top reasons."""
        c = self.booster_.predict(
            X[self.feature_names_], num_iteration=self.booster_.best_iteration, pred_contrib=True
        )
        return pd.DataFrame(c[:, :-1], columns=self.feature_names_, index=X.index)

    def importance(self) -> pd.Series:
        """Total gain per feature, largest first."""
        imp = self.booster_.feature_importance("gain", iteration=self.booster_.best_iteration)
        return pd.Series(imp, index=self.feature_names_).sort_values(ascending=False)


# --------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------


@dataclass
class RiskModel:
    """Both heads plus the feature configuration they were trained with.

    This is what the pyfunc model pickles and what ``score`` and the API use.
    """

    feature_config: FeatureConfig
    heads: dict[str, RiskHead]
    feature_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    #: The text scorer the features were built with (e.g. the comment sentiment model); kept
    #: with the heads so that scoring computes ``desc_sentiment`` the same way.
    text_scorer: TextScorer | None = None
    #: The heads' description models (``desc_text_<head>`` -> scorer, :mod:`models.description`):
    #: histories built by :meth:`history` compute their features for the orders scored.
    text_models: dict[str, TextScorer] = field(default_factory=dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle; models saved before the description models had none (registry versions)."""
        state.setdefault("text_models", {})
        self.__dict__.update(state)

    def with_text_features(self, features: pd.DataFrame) -> pd.DataFrame:
        """``features`` plus the description models' columns it lacks, from ``_description``.

        A training frame carries the descriptions, not these columns (they learn from the
        labels, so :func:`fit_risk_model` adds them); features from :meth:`history` have them.
        """
        todo = {n: m for n, m in self.text_models.items() if n not in features}
        if not todo or DESCRIPTION_COLUMN not in features:
            return features
        texts = list(description_texts(features[DESCRIPTION_COLUMN]))
        return features.assign(**{n: m(texts) for n, m in todo.items()})

    def predict(self, features: pd.DataFrame, reasons: int = 0) -> pd.DataFrame:
        """Scores of precomputed features: ``order_id``, ``rework_risk``, ``dissatisfaction_prob``.

        ``reasons > 0`` adds ``top_reasons``: what pushes each order's rework and
        dissatisfaction risk up most, in business language (``text (code)`` joined by ``"; "``,
        see :meth:`reasons`).
        """
        features = self.with_text_features(features)
        missing = [c for c in self.feature_names if c not in features]
        if missing:
            raise ValueError(f"features missing: {missing[:5]}{'…' if len(missing) > 5 else ''}")
        X = features[self.feature_names]
        out = pd.DataFrame(index=features.index)
        if "order_id" in features:
            out["order_id"] = features["order_id"].to_numpy()
        for head, col in HEADS.items():
            out[col] = self.heads[head].predict_proba(X) if len(X) else np.array([], dtype=float)
        if reasons and len(X):
            out["top_reasons"] = self.reasons(features, reasons)
        return out

    def reasons(self, features: pd.DataFrame, k: int = 3) -> list[str]:
        """Top-``k`` reasons per order in business language: ``text (code)`` joined by ``"; "``.

        The same wording and codes as the API (:mod:`models.reasons`), from exact TreeSHAP
        contributions summed over both heads (batch scoring can afford them).
        """
        from models.reasons import Reasoner, format_reasons

        return [format_reasons(r) for r in Reasoner(self, None, 0).top(features, k)]

    def history(
        self,
        orders: pd.DataFrame,
        technicians: pd.DataFrame | None = None,
        units: pd.DataFrame | None = None,
        text_scorer: TextScorer | None = None,
    ) -> History:
        """Index a history with this model's feature configuration (the API keeps one)."""
        return build_history(
            orders,
            technicians=technicians,
            units=units,
            config=self.feature_config,
            text_scorer=text_scorer if text_scorer is not None else self.text_scorer,
            text_models=self.text_models,
        )

    def score_orders(
        self, history: History, orders: pd.DataFrame, reasons: int = 0
    ) -> pd.DataFrame:
        """Features of ``orders`` as of their completion against ``history``, then scores."""
        return self.predict(features_for(history, orders), reasons=reasons)


def fit_risk_model(
    frame: pd.DataFrame,
    feature_config: FeatureConfig,
    config: TrainConfig,
    text_scorer: TextScorer | None = None,
) -> RiskModel:
    """Fit both heads on a feature frame with ``split``, ``rework`` and ``dissatisfied`` columns.

    Rows with a censored label (NaN) are left out of that head only. ``text_scorer`` must be
    the one the frame's features were built with; it is stored with the model.
    """
    canon = canonical_order(frame)
    text_models: dict[str, TextScorer] = {}
    wanted = [
        (head, config.heads[head].text_model, f"train.heads.{head}.text_model") for head in HEADS
    ]
    wanted.append((URGENCY, config.urgency_text_model, "train.urgency_text_model"))
    matrices: dict = {}  # the descriptions vectorised once for all description models
    for target, tm, param in wanted:
        if tm is not None:
            values, scorer = description_feature(
                frame,
                description_target(frame, target),
                tm,
                canon,
                config.seed,
                param=param,
                matrices=matrices,
            )
            if scorer is not None:  # too few labelled descriptions: no feature
                frame = frame.assign(**{feature_name(target): values})
                text_models[feature_name(target)] = scorer
    del matrices
    feats = feature_columns(frame)
    heads: dict[str, RiskHead] = {}
    info: dict[str, Any] = {"features": len(feats)}
    if "split" in frame.attrs:  # the labels' cut-off: scores before it are in-sample
        info["split"] = dict(frame.attrs["split"])
    split = frame["split"].to_numpy()
    cols = frame.columns.get_indexer(feats)
    for head in HEADS:
        hc = config.heads[head]
        pending = None
        if hc.intercept_pending:
            if head != "rework":
                raise ValueError(
                    f"train.heads.{head}.intercept_pending: only the rework head has "
                    "labels that stay open for a window"
                )
            if hc.intercept_days is None:
                raise ValueError(
                    "train.heads.rework.intercept_pending needs intercept_days: the window "
                    "the open orders anchor"
                )
            pending = pending_rework(frame, feature_config.rework_window_days)
            pending.X = frame.iloc[pending.rows, cols]
        if hc.season_days is not None and hc.intercept_days is None:
            raise ValueError(
                f"train.heads.{head}.season_days needs intercept_days: the season moves the "
                "anchored level"
            )
        known = frame[head].notna().to_numpy()
        fit_rows = canon[((split == "fit") & known)[canon]]
        cal_rows = canon[((split == "calib") & known)[canon]]
        # one copy of the feature columns, fit rows first: the slices below are views of it
        # and the refit trains on it whole (at 1M orders each copy is ~0.8 GB)
        both = frame.iloc[np.concatenate([fit_rows, cal_rows]), cols]
        y = frame[head].to_numpy(dtype=float)
        h = RiskHead(hc, seed=config.seed, num_threads=config.num_threads)
        h.fit(
            both.iloc[: len(fit_rows)],
            y[fit_rows],
            both.iloc[len(fit_rows) :],
            y[cal_rows],
            cal_time=frame["completed_at"].iloc[cal_rows] if "completed_at" in frame else None,
            fit_time=frame["completed_at"].iloc[fit_rows] if "completed_at" in frame else None,
            X_both=both,
            pending=pending,
        )
        del both
        heads[head] = h
        info[f"{head}_best_iteration"] = int(h.booster_.best_iteration)
        info[f"{head}_fit_rows"] = len(fit_rows)
        info[f"{head}_calib_rows"] = len(cal_rows)
        if h.level_:  # set by every fit: None unless the level was anchored
            info[f"{head}_level"] = h.level_
    return RiskModel(feature_config, heads, feats, info, text_scorer, text_models)


def canonical_order(frame: pd.DataFrame) -> np.ndarray:
    """Row positions in completion order, ties by order id: the order the heads learn in.

    LightGBM's bagging draws row positions and its bins are sampled by position, so the same
    history exported in another row order (by id, by community, by insertion) would otherwise
    train another model: 75 instead of 80 trees on the tests' data, a 146- instead of a
    190-tree rework head on a 55k-order export shuffled.
    """
    t = pd.factorize(frame["completed_at"], sort=True)[0]
    if "order_id" not in frame:
        return np.argsort(t, kind="stable")
    ids = pd.factorize(frame["order_id"].astype("string"), sort=True)[0]
    return np.lexsort((ids, t))


@dataclass
class PendingLabels:
    """Orders whose label was still open at the cut-off: what they show so far.

    ``rows`` (positions in the frame), ``exposure`` (the expected share of an eventual positive
    already visible), ``partial`` (1: a positive is already known), ``completed_at``; ``X``
    their features, filled in by the caller.
    """

    rows: np.ndarray
    exposure: np.ndarray
    partial: np.ndarray
    completed_at: np.ndarray
    X: pd.DataFrame | None = None


def pending_rework(frame: pd.DataFrame, rework_window_days: float) -> PendingLabels:
    """The calibration orders whose rework window was open at the cut-off, chain-ladder style.

    Each gets an exposure ``F(age)`` and a partial label (a repeat reported by the cut-off).
    ``F(a)`` is the share of the matured reworks (fit and calibration orders labelled
    1) whose repeat was reported within ``a`` days of completion: an order ``a`` days old at the
    cut-off shows on average that share of its eventual reworks. Only what was known at the
    cut-off enters: matured labels are known by then and a partial label counts repeats
    reported before it.
    """
    cutoff = (frame.attrs.get("split") or {}).get("test_start")
    if cutoff is None or "_rework_known_at" not in frame:
        raise ValueError(
            "intercept_pending needs the training frame's label events and cut-off: rebuild it "
            "(`repairqc features`) with this version"
        )
    cutoff = pd.Timestamp(cutoff)
    split = frame["split"].to_numpy()
    label = frame["rework"].to_numpy(dtype=float)
    done = frame["completed_at"]
    known_at = frame["_rework_known_at"]
    day = pd.Timedelta(days=1)
    delay = ((known_at - done) / day).to_numpy(dtype=float)
    matured_pos = (split != "test") & (label == 1) & ~np.isnan(delay)
    delays = np.sort(np.clip(delay[matured_pos], 0, rework_window_days))
    rows = np.flatnonzero((split == "calib") & np.isnan(label))
    if not len(delays):
        rows = rows[:0]
    age = ((cutoff - done.iloc[rows]) / day).to_numpy(dtype=float)
    return PendingLabels(
        rows=rows,
        # +1: never 0, so a repeat reported sooner than any matured one stays possible
        exposure=(np.searchsorted(delays, age, side="right") + 1) / (len(delays) + 1),
        partial=(known_at.iloc[rows] <= cutoff).fillna(False).to_numpy(dtype=float),
        completed_at=done.iloc[rows].to_numpy(),
    )


def training_frame(
    orders: pd.DataFrame,
    *,
    technicians: pd.DataFrame | None = None,
    units: pd.DataFrame | None = None,
    feature_config: FeatureConfig | None = None,
    config: TrainConfig | None = None,
    until: pd.Timestamp | None = None,
    text_scorer: TextScorer | None = None,
    labels: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Features, split and as-of labels of every completed order known before ``until``.

    Orders reported after ``until`` are dropped first (the data as it was at ``until``), and
    only orders completed before it are scored. Fit and calibration labels are taken as known at
    the test start, test labels as of the end (``until``), so a model fitted on ``fit`` and
    calibrated on ``calib`` used only what was known when ``test`` began.

    ``labels`` (``rework_order_id``, ``rework_known_at``, ``dissatisfied``,
    ``dissatisfied_known_at`` aligned with ``orders``) reuses the label stage's output, e.g. with
    comment-derived dissatisfaction; default: derived here with the feature config's windows.

    Returns
    -------
    The frame (features + ``completed_at``, ``community_id``, ``split``, ``rework``,
    ``dissatisfied``) and the split boundaries.
    """
    from models.labels import data_end, label_orders

    fcfg = feature_config or FeatureConfig()
    cfg = config or TrainConfig()
    if until is not None:
        orders = orders[(orders["reported_at"] < until).to_numpy()]
        labels = None  # labels must be re-derived as of ``until``
    if not len(orders):
        raise ValueError("no orders to train on (check --until)")
    labelled = (
        labels if labels is not None else label_orders(orders[ORDERS.names], fcfg.label_config())
    )
    labelled = labelled.assign(completed_at=orders["completed_at"])
    history = build_history(
        orders, technicians=technicians, units=units, config=fcfg, text_scorer=text_scorer
    )
    done = (orders["status"] == "completed").fillna(False) & orders["completed_at"].notna()
    if until is not None:  # an order completed after ``until`` was still open then
        done &= (orders["completed_at"] < until).fillna(False)
    scored = orders[done.to_numpy()]
    frame = features_for(history, scored)
    frame["completed_at"] = scored["completed_at"]
    frame["community_id"] = scored["community_id"].astype("string")
    frame[DESCRIPTION_COLUMN] = scored["description"].astype("string")
    end = until if until is not None else data_end(orders)
    return assign_split_and_labels(
        frame, labelled.loc[frame.index], cfg, fcfg.rework_window_days, end
    )


#: Label events kept in a training frame (``_``-prefixed, so never model inputs): when the
#: rework became known (NaT: none), the dissatisfaction label and when it became known. With
#: them the frame can be split and labelled again as of another cut-off (the final fit).
LABEL_EVENTS = ("_rework_known_at", "_dissatisfied", "_dissatisfied_known_at")


def assign_split_and_labels(
    frame: pd.DataFrame,
    labelled: pd.DataFrame,
    config: TrainConfig,
    rework_window_days: float,
    end: pd.Timestamp,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Add ``split``, ``rework`` and ``dissatisfied`` (as-of labels) to a feature frame.

    ``labelled`` carries the full-data labels and their known-at times aligned with ``frame``;
    ``end`` is the moment the data describe (``--until`` or the data's end). The label events
    are kept in the frame (:data:`LABEL_EVENTS`) for :func:`final_training_frame`.
    """
    frame = frame.copy()
    has_rework = labelled["rework_order_id"].notna().to_numpy()
    frame["_rework_known_at"] = labelled["rework_known_at"].where(has_rework).to_numpy()
    frame["_dissatisfied"] = labelled["dissatisfied"].to_numpy(dtype=float)
    frame["_dissatisfied_known_at"] = labelled["dissatisfied_known_at"].to_numpy()
    return split_and_label(frame, config, rework_window_days, end)


def split_and_label(
    frame: pd.DataFrame,
    config: TrainConfig,
    rework_window_days: float,
    end: pd.Timestamp,
    holdout: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(Re)assign ``split`` and the as-of labels from the frame's label events.

    ``holdout``: fit and calibration labels as known at the test start, test labels at ``end``
    (the evaluation). Without: the cut-off is ``end`` itself, every order completed before it
    goes to fit or calibration with its label as known at ``end`` (the final fit).
    The boundaries are returned and kept in ``frame.attrs["split"]`` (parquet keeps them).
    """
    missing = [c for c in LABEL_EVENTS if c not in frame]
    if missing:
        raise ValueError(
            f"the training frame has no label events {missing}: rebuild it "
            "(`repairqc features`) with this version"
        )
    frame = frame.copy(deep=False)  # copy-on-write (pandas 3): only the label columns are new
    split, bounds = time_split(
        frame["completed_at"], config, rework_window_days, test_start=None if holdout else end
    )
    frame["split"] = split
    bounds["end"] = end
    known = frame["_rework_known_at"]
    events = pd.DataFrame(
        {
            "completed_at": frame["completed_at"],
            "rework_order_id": np.where(known.notna(), "known", None),
            "rework_known_at": known,
            "dissatisfied": frame["_dissatisfied"],
            "dissatisfied_known_at": frame["_dissatisfied_known_at"],
        },
        index=frame.index,
    )
    # fit and calibration labels as known at the cut-off (the test start), test labels at the end
    for rows, as_of in (
        ((frame["split"] != "test").to_numpy(), bounds["test_start"]),
        ((frame["split"] == "test").to_numpy(), end),
    ):
        la = labels_as_of(events[rows], as_of, rework_window_days)
        frame.loc[rows, "rework"] = la["rework"].to_numpy()
        frame.loc[rows, "dissatisfied"] = la["dissatisfied"].to_numpy()
    frame.attrs["split"] = {k: str(v) for k, v in bounds.items()}
    return frame, bounds


def final_training_frame(
    frame: pd.DataFrame, config: TrainConfig, rework_window_days: float
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The frame of the final fit: every order before the data's end in fit or calibration.

    Same fractions (fit : calib of the mature orders), labels as known at the end recorded in
    ``frame.attrs["split"]`` by :func:`split_and_label`, so no label after ``--until`` is used.
    """
    end = (frame.attrs.get("split") or {}).get("end")
    if end is None:
        raise ValueError(
            "the training frame does not record the moment its labels describe "
            "(attrs['split']['end']): rebuild it (`repairqc features`) with this version"
        )
    return split_and_label(frame, config, rework_window_days, pd.Timestamp(end), holdout=False)
