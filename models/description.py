"""A head's own reading of the report text: a character n-gram model of the description.

Why: the keyword cues of :class:`models.features.TextCues` know the words someone wrote down;
a company's residents write their own (a region's idioms, a system's templates, typos). A
logistic regression on the description's character n-grams, trained on the head's labels, reads
whatever wording goes with the outcome in this company's history. It lives next to the heads,
not in the feature builder, because it learns from labels:

* its training rows are the head's labelled *fit* rows (newest ``max_rows``), and those rows get
  **out-of-fold** values (``folds``-fold cross-fitting), so the trees never see a value that
  learnt the row's own label;
* every other row (calibration, test, and every order scored later) gets the model fitted on all
  training rows, which never saw them either.

The description is known when the order is reported, so the value is as-of by construction.

Measured (``bench_forward``, shipped heads, three months after the cut-off; seeds 42/7, with and
without a 2.0 rework drift, June and September cut-offs): dissatisfaction AUC ratio to the
oracle .9364 -> .9491, .9690 -> .9729, .9404 -> .9533, .9680 -> .9729, .9516 -> .9622,
.9589 -> .9648 (mean +.0085); rework within +-.001. On the default data's test slice
.9645 -> .9746. Offline, with the keyword cues removed, it recovered more than the cues gave
the dissatisfaction head. A rework-label model added nothing to the rework head (-.001 to
-.005), so ``params.yaml`` turns it on for the dissatisfaction head only.

The **urgency model** reads how bad the fault is. Residents say it in their own words (冒烟了,
全屋停电, 漫水了 against 有点潮, 偶尔跳闸), and a bad fault is harder to repair right the first
time; keyword lists know only the words someone wrote down. The company's dispatchers already
judged every order's urgency from those words, so a model of "priority above the lowest" on the
description learns the wording of severity from *every* order (no label censoring, no 12 %
base rate). The priority itself is a feature too: within one priority, the value says the
wording sounded worse (or milder) than the dispatcher judged. It is not a head's label, so
both heads may use it; it is cross-fitted like the heads' models (its training rows' own
priority would otherwise be memorised by their unique wording).

Measured (``bench_forward``, shipped heads, three months after the cut-off): on data of the
independent simulator (``bench/independent_sim.py``, whose descriptions name the symptom at its
severity) the rework AUC ratio to the oracle went .9386 -> .9425 (seed 1, June), .9368 ->
.9459 (seed 1, September), .9458 -> .9506 (seed 3, June), .9506 -> .9581 (seed 2 with a 2.0
drift, June); dissatisfaction -.001 to +.002. Offline, the true latent severity as a feature
gave the same +.011 as this model did. On the project's own generator, whose descriptions carry
little severity, both heads moved by at most .0008 either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: The frame column carrying each order's description (bookkeeping, never a model input).
DESCRIPTION_COLUMN = "_description"


def description_texts(column: pd.Series) -> np.ndarray:
    """A frame's descriptions as an object array of ``str`` (``""`` where missing)."""
    s = column.astype(object)
    return s.where(s.notna(), "").to_numpy(dtype=object)


def feature_name(target: str) -> str:
    """The feature column of the description model of ``target`` (a head or :data:`URGENCY`)."""
    return f"desc_text_{target}"


#: The target of the urgency model (``params.yaml: train.urgency_text_model``, feature
#: ``desc_text_urgency``): whether the dispatcher marked the order above the lowest priority.
URGENCY = "urgency"


@dataclass(frozen=True)
class DescriptionModelConfig:
    """``params.yaml: train.heads.<head>.text_model``.

    Attributes
    ----------
    C
        Inverse L2 strength of the logistic regression (fixed: the sentiment model's accuracy
        search is meaningless at a 12 % base rate).
    min_df
        n-grams seen in fewer descriptions are dropped (ids, typos).
    folds
        Cross-fitting folds of the training rows' own values.
    max_rows
        The newest labelled fit rows it trains on: the wording saturates long before a million
        orders, and each fit costs a vectorisation of its rows.
    """

    C: float = 1.0
    min_df: int = 5
    folds: int = 3
    max_rows: int = 100_000

    @classmethod
    def from_dict(cls, d: dict | None) -> DescriptionModelConfig | None:
        """None (switched off) or the config; unknown keys are refused."""
        if d is None or d is False:
            return None
        d = {} if d is True else dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown text_model parameters: {sorted(unknown)}")
        cfg = cls(**d)
        if cfg.folds < 2 or cfg.max_rows < 100 or cfg.C <= 0 or cfg.min_df < 1:
            raise ValueError(
                f"text_model needs folds >= 2, max_rows >= 100, C > 0, min_df >= 1; got {cfg}"
            )
        return cfg


class DescriptionScorer:
    """``texts -> log-odds`` of a fitted description model; NaN for a blank description.

    The :data:`models.features.TextScorer` shape, so the feature builder computes the same
    value at scoring time (``History.text_models``) as the training frame got.
    """

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, texts) -> np.ndarray:
        """Log-odds per text (NaN where blank)."""
        from models.sentiment import blank_mask

        tx = ["" if t is None or t is pd.NA else str(t) for t in texts]
        out = np.full(len(tx), np.nan)
        keep = ~blank_mask(tx)
        if keep.any():
            if keep.sum() == 1:  # one order through the API: the model's sparse-free path
                p = self.model.score_one(tx[int(np.flatnonzero(keep)[0])])
                out[keep] = np.log(p / (1.0 - p))
            else:
                kept = [t for t, k in zip(tx, keep, strict=True) if k]
                out[keep] = self.model.decision_function(kept)
        return out


@dataclass
class DescriptionMatrix:
    """A frame's descriptions vectorised once, for every description model fitted on it.

    Vectorising is most of a model's cost (at 300k orders, 86 s of the two models' 109 s when
    each fold and each model vectorised its own rows); the folds and both targets share this.
    The vocabulary and idf come from the newest ``max_rows`` fit rows' texts, whatever their
    labels: they are label-free, so a held-out fold's texts in the vocabulary teach its values
    nothing about its labels (an n-gram only the held-out rows have gets no weight).
    """

    vectorizer: Any
    A: Any  # CSR, one row per frame row
    blank: np.ndarray

    @classmethod
    def of(
        cls, frame: pd.DataFrame, order: np.ndarray, cfg: DescriptionModelConfig
    ) -> DescriptionMatrix:
        """Fit the vocabulary on the newest ``cfg.max_rows`` fit rows, vectorise every row."""
        from models.char_ngrams import tfidf_transform
        from models.sentiment import blank_mask, char_ngram_vectorizer

        texts = description_texts(frame[DESCRIPTION_COLUMN])
        blank = blank_mask(texts)
        fit = (frame["split"].to_numpy() == "fit") & ~blank
        rows = order[fit[order]][-cfg.max_rows :]
        if len(rows) == 0:
            return cls(None, None, blank)
        # as the sentiment model does: a tiny company's few texts keep a vocabulary
        min_df = cfg.min_df if len(rows) >= 10 * cfg.min_df else 1
        vec = char_ngram_vectorizer((1, 3), min_df)
        vec.fit(list(texts[rows]))
        return cls(vec, tfidf_transform(vec, texts), blank)


def _fit(cfg: DescriptionModelConfig, M: DescriptionMatrix, rows: np.ndarray, y: np.ndarray):
    from models.sentiment import CommentSentimentModel

    return CommentSentimentModel.from_matrix(M.vectorizer, M.A[rows], y[rows].astype(int), cfg.C)


def urgency_target(frame: pd.DataFrame) -> np.ndarray:
    """1 where the dispatcher marked the order above the lowest priority, 0 at it, NaN unknown.

    What the urgency model learns to read from the wording (:data:`URGENCY`).
    """
    from models.schemas import PRIORITIES

    pri = frame["priority"].astype(object)
    known = pri.notna().to_numpy()
    return np.where(known, (pri != PRIORITIES[0]).to_numpy(dtype=float), np.nan)


def description_target(frame: pd.DataFrame, target: str) -> np.ndarray:
    """The 0/1 target (NaN: none) of the description model of ``target``.

    A head's label, or the dispatcher's priority for :data:`URGENCY`.
    """
    return urgency_target(frame) if target == URGENCY else frame[target].to_numpy(dtype=float)


def description_feature(
    frame: pd.DataFrame,
    y: np.ndarray,
    cfg: DescriptionModelConfig,
    order: np.ndarray,
    seed: int,
    *,
    param: str,
    matrices: dict | None = None,
) -> tuple[np.ndarray, DescriptionScorer | None]:
    """Description values for every frame row of a model of target ``y``, and its scorer.

    ``y``: the 0/1 target per frame row (NaN: not a training row). ``order``: the frame's row
    positions in completion order (the newest ``max_rows`` fit rows with a target train).
    ``param``: the ``params.yaml`` key that asked for the model, for the error message.
    ``matrices``: a dict shared by the calls on one frame, so the descriptions are vectorised
    once for every model with the same ``min_df`` and ``max_rows`` (:class:`DescriptionMatrix`).
    Returns all-NaN and None when there is nothing to learn from (no description column is an
    error: the frame predates this feature).
    """
    from sklearn.model_selection import KFold

    if DESCRIPTION_COLUMN not in frame:
        raise ValueError(
            f"{param} needs the descriptions in the training frame: "
            "rebuild it (`repairqc features`) with this version"
        )
    key = (cfg.min_df, cfg.max_rows)
    shared = {} if matrices is None else matrices
    if key not in shared:
        shared[key] = DescriptionMatrix.of(frame, order, cfg)
    M = shared[key]
    y = np.asarray(y, dtype=float)
    split = frame["split"].to_numpy()
    usable = (split == "fit") & ~np.isnan(y) & ~M.blank
    rows = order[usable[order]][-cfg.max_rows :]
    values = np.full(len(frame), np.nan)
    if M.A is None or len(rows) < 2 * cfg.folds or len(np.unique(y[rows])) < 2:
        return values, None
    for a, b in KFold(cfg.folds, shuffle=True, random_state=seed).split(rows):
        if len(np.unique(y[rows[a]])) < 2:
            return np.full(len(frame), np.nan), None
        m = _fit(cfg, M, rows[a], y)
        values[rows[b]] = M.A[rows[b]] @ m.coef_ + m.intercept_
    model = _fit(cfg, M, rows, y)
    rest = ~M.blank
    rest[rows] = False
    values[rest] = M.A[rest] @ model.coef_ + model.intercept_
    scorer = DescriptionScorer(model)
    return values, scorer
