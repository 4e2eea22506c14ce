"""Baselines the risk models must beat, evaluated on the same rows.

* :func:`rule_score` — what a quality team does today: count the red flags (overdue response,
  repeat order, emergency, uncertified technician). A score from 0 to 4, a ranking only.
* :class:`LogisticBaseline` — a regularised logistic regression on the same as-of features
  (imputed, standardised, categoricals one-hot): tells whether the trees earn their keep.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.features import CATEGORICAL_LEVELS


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the quality team's rule (``params.yaml: baselines``).

    Attributes
    ----------
    repeat_window_days
        An earlier order on the same unit and category within this many days makes a repeat.
        Must be one of the feature config's ``history_windows_days``.
    """

    repeat_window_days: int = 30


def rule_score(features: pd.DataFrame, config: RuleConfig | None = None) -> np.ndarray:
    """Number of red flags per order (missing facts count as no flag)."""
    cfg = config or RuleConfig()
    flags = [
        features["arrival_overdue"].fillna(0).to_numpy() > 0,
        features[f"unit_cat_orders_{cfg.repeat_window_days}d"].fillna(0).to_numpy() > 0,
        (features["priority"].astype(str) == "emergency").to_numpy(),
        features["tech_certified"].fillna(1).to_numpy() == 0,
    ]
    return np.sum(flags, axis=0).astype(float)


class LogisticBaseline:
    """Logistic regression on the as-of features (scikit-learn estimator contract)."""

    def __init__(self, C: float = 1.0, max_iter: int = 500):
        self.C = C
        self.max_iter = max_iter

    def _numeric(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The numeric columns (NaN → median, then sign(x)·log1p(|x|)) and their NaN mask.

        log1p tames heavy tails (hours, counts, cost). One fresh copy transformed in place: at a
        million rows each temporary of the plain expression is ~0.8 GB.
        """
        num = X[self.numeric_].to_numpy(dtype=float, copy=True, na_value=np.nan)
        nan = np.isnan(num)
        np.copyto(num, np.broadcast_to(self.medians_, num.shape), where=nan)
        sign = np.sign(num)
        np.abs(num, out=num)
        np.log1p(num, out=num)
        num *= sign
        return num, nan

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        num, nan = self._numeric(X)
        num -= self.means_
        num /= self.scales_
        k = num.shape[1]
        widths = [len(levels) for levels in self.categorical_.values()]
        design = np.empty((len(X), 2 * k + sum(widths)))
        design[:, :k] = num
        del num
        design[:, k : 2 * k] = nan
        off = 2 * k
        for (c, levels), w in zip(self.categorical_.items(), widths, strict=True):
            values = X[c].astype(str).to_numpy()[:, None]
            design[:, off : off + w] = values == np.array(levels)[None, :]
            off += w
        return design

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> LogisticBaseline:
        """Learn medians / scales and the coefficients."""
        from sklearn.linear_model import LogisticRegression

        self.categorical_ = {c: CATEGORICAL_LEVELS[c] for c in X.columns if c in CATEGORICAL_LEVELS}
        self.numeric_ = [c for c in X.columns if c not in self.categorical_]
        raw = X[self.numeric_].to_numpy(dtype=float, na_value=np.nan)
        # column by column: np.nanmedian of the whole matrix copies it. A column with no value
        # yet (last year's rate in a first year) has median 0 and only its missing flag speaks;
        # numpy's "All-NaN slice" warning about it is expected, not news
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = [np.nanmedian(raw[:, j]) for j in range(raw.shape[1])]
        self.medians_ = np.nan_to_num(np.array(medians, dtype=float))
        del raw
        t, _ = self._numeric(X)
        self.means_ = t.mean(axis=0)
        sd = t.std(axis=0)
        self.scales_ = np.where(sd > 0, sd, 1.0)
        del t
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter)
        self.model_.fit(self._design(X), np.asarray(y, dtype=float))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probability of the positive class."""
        return self.model_.predict_proba(self._design(X))[:, 1]

    def predict_proba_matrix(self, M: np.ndarray, names: list[str]) -> np.ndarray:
        """:meth:`predict_proba` of a float matrix whose columns are ``names``.

        Categoricals are their contract level codes (NaN missing). The serving path: no
        DataFrame, no sklearn input checks, and no design matrix either: the standardisation
        scale is folded into the numeric weights and a one-hot block is a lookup of its level's
        coefficient (the same linear function; a 10,000-order batch built and multiplied
        ~100 x 10,000 design entries per head). Equal to :meth:`predict_proba` up to float
        rounding (the service checks it at load).
        """
        w_num, w_nan, b, blocks = self._matrix_weights()
        pos = {c: j for j, c in enumerate(names)}
        raw = M[:, [pos[c] for c in self.numeric_]].astype(float, copy=False)
        nan = np.isnan(raw)
        np.copyto(raw, np.broadcast_to(self.medians_, raw.shape), where=nan)  # raw: a copy
        num = np.abs(raw)
        np.log1p(num, out=num)
        np.copysign(num, raw, out=num)
        num -= self.means_
        z = num @ w_num + nan.astype(float) @ w_nan + b
        for c, w in blocks.items():
            code = M[:, pos[c]]
            # a one-hot row is all zero for a missing, fractional or unknown code
            ok = (code >= 0) & (code < len(w)) & (code == np.floor(code))
            z += np.where(ok, w[np.where(ok, code, 0).astype(np.intp)], 0.0)
        return 1.0 / (1.0 + np.exp(-z))

    def _matrix_weights(self) -> tuple[np.ndarray, np.ndarray, float, dict[str, np.ndarray]]:
        """Coefficients of :meth:`predict_proba_matrix`, derived once per fitted model."""
        cached = self.__dict__.get("_matrix_weights_")
        if cached is not None and cached[0] is self.model_:
            return cached[1]
        coef, k = self.model_.coef_[0], len(self.numeric_)
        w_num = coef[:k] / self.scales_
        # the means stay out of the fold: a near-constant column's scale can be ~1e-16, and
        # ``means @ w_num`` would then cancel catastrophically
        b = float(self.model_.intercept_[0])
        blocks, off = {}, 2 * k
        for c, levels in self.categorical_.items():
            blocks[c] = coef[off : off + len(levels)]
            off += len(levels)
        out = (w_num, coef[k : 2 * k], b, blocks)
        self.__dict__["_matrix_weights_"] = (self.model_, out)
        return out


def fit_logistic_baselines(
    frame: pd.DataFrame,
    features: list[str],
    heads: list[str],
    C: float = 1.0,
    max_rows: int | None = None,
) -> dict[str, LogisticBaseline]:
    """One logistic baseline per head, fitted on the ``fit`` slice rows with a label.

    ``max_rows``: only the newest this many of them (by ``completed_at``). A model of ~150
    coefficients is pinned down by 200k rows; lbfgs on all ~700k of a 1M-order history cost
    40 s of the evaluation. None: all.
    """
    out = {}
    for head in heads:
        rows = frame[(frame["split"] == "fit") & frame[head].notna()]
        if max_rows is not None and len(rows) > max_rows:
            newest = np.argsort(rows["completed_at"].to_numpy(), kind="stable")[-max_rows:]
            rows = rows.iloc[np.sort(newest)]
        out[head] = LogisticBaseline(C=C).fit(rows[features], rows[head].to_numpy())
    return out
