"""Metrics of a risk score, shared by ``evaluate``, the benchmark and (later) the report.

Ranking (AUC, PR-AUC), probability quality (Brier, expected calibration error) and what a
quality team gets when it inspects the riskiest k % of orders (lift, recall), overall and per
slice. All functions ignore rows whose label is missing (censored).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

TOP_FRACTIONS: tuple[float, ...] = (0.05, 0.10, 0.20)


def _clean(y: Sequence[float], p: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    ok = ~np.isnan(y) & ~np.isnan(p)
    return y[ok], p[ok]


def auc(y: Sequence[float], p: Sequence[float]) -> float:
    """ROC AUC; NaN when only one class is present."""
    y, p = _clean(y, p)
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def pr_auc(y: Sequence[float], p: Sequence[float]) -> float:
    """Average precision (area under the precision-recall curve)."""
    y, p = _clean(y, p)
    return float(average_precision_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def brier(y: Sequence[float], p: Sequence[float]) -> float:
    """Mean squared error of the probability."""
    y, p = _clean(y, p)
    return float(brier_score_loss(y, np.clip(p, 0, 1))) if len(y) else float("nan")


def ece(
    y: Sequence[float], p: Sequence[float], n_bins: int = 10, strategy: str = "uniform"
) -> float:
    """Expected calibration error: bin-weighted |mean(p) − mean(y)|.

    ``strategy="uniform"`` uses equal-width bins on [0, 1] (the usual definition);
    ``"quantile"`` equal-count bins, which is stricter for low base rates where most scores
    sit in the first uniform bin.
    """
    y, p = _clean(y, p)
    if not len(y):
        return float("nan")
    if strategy == "uniform":
        edges = np.linspace(0, 1, n_bins + 1)
    else:
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    total = 0.0
    for b in np.unique(idx):
        m = idx == b
        total += m.sum() * abs(p[m].mean() - y[m].mean())
    return float(total / len(y))


def _top(p: np.ndarray, frac: float) -> np.ndarray:
    """Mask of the top ``frac`` by score (ties broken by position, deterministic)."""
    k = max(1, int(round(frac * len(p))))
    order = np.argsort(-p, kind="stable")[:k]
    m = np.zeros(len(p), dtype=bool)
    m[order] = True
    return m


def lift_at(y: Sequence[float], p: Sequence[float], frac: float) -> float:
    """Positive rate in the top ``frac`` divided by the base rate."""
    y, p = _clean(y, p)
    if not len(y) or y.mean() == 0:
        return float("nan")
    return float(y[_top(p, frac)].mean() / y.mean())


def recall_at(y: Sequence[float], p: Sequence[float], frac: float) -> float:
    """Share of all positives found by inspecting the top ``frac``."""
    y, p = _clean(y, p)
    if not len(y) or y.sum() == 0:
        return float("nan")
    return float(y[_top(p, frac)].sum() / y.sum())


def summary(
    y: Sequence[float], p: Sequence[float], fractions: Sequence[float] = TOP_FRACTIONS
) -> dict[str, float]:
    """All scalar metrics of one score against one label."""
    yy, _ = _clean(y, p)
    out = {
        "n": float(len(yy)),
        "base_rate": float(yy.mean()) if len(yy) else float("nan"),
        "auc": auc(y, p),
        "pr_auc": pr_auc(y, p),
        "brier": brier(y, p),
        "ece": ece(y, p),
        "ece_quantile": ece(y, p, strategy="quantile"),
    }
    for f in fractions:
        pct = int(round(f * 100))
        out[f"lift_top{pct}"] = lift_at(y, p, f)
        out[f"recall_top{pct}"] = recall_at(y, p, f)
    return out


def slice_metrics(
    frame: pd.DataFrame, by: str, label: str, score: str, min_rows: int = 200
) -> pd.DataFrame:
    """AUC, base rate, mean score and ECE per value of ``by`` (skips slices under ``min_rows``)."""
    rows = []
    for key, g in frame[frame[label].notna()].groupby(by, observed=True):
        if len(g) < min_rows:
            continue
        rows.append(
            {
                by: key,
                "n": len(g),
                "base_rate": float(g[label].mean()),
                "mean_score": float(g[score].mean()),
                "auc": auc(g[label], g[score]),
                "ece": ece(g[label], g[score]),
            }
        )
    return pd.DataFrame(rows)


def roc_points(y: Sequence[float], p: Sequence[float], n: int = 101) -> pd.DataFrame:
    """ROC curve thinned to about ``n`` points (for DVC plots); empty without both classes.

    A short ``train --until`` history can leave a test slice whose labels are all still
    censored: the evaluation then says so (NaN metrics) instead of failing the training.
    """
    y, p = _clean(y, p)
    if len(np.unique(y)) < 2:
        return pd.DataFrame({"fpr": pd.Series(dtype=float), "tpr": pd.Series(dtype=float)})
    fpr, tpr, _ = roc_curve(y, p)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(n, len(fpr))).astype(int))
    return pd.DataFrame({"fpr": fpr[keep], "tpr": tpr[keep]})


def calibration_points(y: Sequence[float], p: Sequence[float], n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed rate per equal-count bin (reliability diagram)."""
    y, p = _clean(y, p)
    bins = pd.qcut(p, n_bins, labels=False, duplicates="drop")
    g = pd.DataFrame({"p": p, "y": y, "b": bins}).groupby("b")
    return pd.DataFrame(
        {"predicted": g["p"].mean(), "observed": g["y"].mean(), "n": g.size()}
    ).reset_index(drop=True)


def lift_points(y: Sequence[float], p: Sequence[float], n: int = 20) -> pd.DataFrame:
    """Cumulative lift and recall when inspecting the top 5 %, 10 %, … 100 %."""
    fr = np.linspace(1 / n, 1, n)
    return pd.DataFrame(
        {
            "inspected": fr,
            "lift": [lift_at(y, p, f) for f in fr],
            "recall": [recall_at(y, p, f) for f in fr],
        }
    )
