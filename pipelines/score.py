"""Batch scoring: every completed order in ``[start, end)`` as of its completion.

All orders in the file serve as history, but each score only sees what was known at that
order's completion (the feature builder's as-of rule), so outcome columns of the scored orders
and orders reported after them cannot move their scores. The heads are those that had not
learnt from the scored orders (:func:`models.registry.model_for_period`): the shipped heads
for orders completed after their training labels' cut-off, the evaluated heads before it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from models.features import completed_mask
from pipelines.features import load_orders

log = logging.getLogger(__name__)

#: Orders scored per batch (bounds memory of the SHAP reasons; drives the progress bar).
CHUNK = 20_000


def score_files(
    model_dir: Path,
    orders: Path,
    out: Path,
    start: pd.Timestamp,
    end: pd.Timestamp | None = None,
    technicians: Path | None = None,
    units: Path | None = None,
    reasons: int = 3,
    progress: bool = True,
) -> int:
    """Write ``order_id, rework_risk, dissatisfaction_prob, top_reasons`` to ``out`` (CSV).

    ``top_reasons``: up to ``reasons`` reasons per order in the API's business language
    (:mod:`models.reasons`), ``text (code)`` joined by ``"; "``, e.g.
    ``同户90天内同类报修2次 (unit_repeat_90d); 上门超时3.5小时 (arrival_overdue)``.
    """
    from models.registry import model_for_period

    model, which = model_for_period(model_dir, start)
    if which == "holdout":
        log.info("scoring with the evaluated heads: the shipped ones learnt from these orders")
    elif which == "in-sample":
        log.warning(
            "the model learnt labels up to %s, after --from %s: these scores are in-sample",
            model.info["split"]["test_start"],
            start,
        )
    typed, techs, unit_tab = load_orders(orders, technicians, units)
    t = typed["completed_at"]
    mask = completed_mask(typed) & (t >= start)
    if end is not None:
        mask &= t < end
    mask = mask.fillna(False).to_numpy(dtype=bool)
    history = model.history(typed, techs, unit_tab)
    rows = np.flatnonzero(mask)
    parts = []
    chunks = range(0, len(rows), CHUNK)
    for i in tqdm(chunks, desc="scoring", unit="chunk", disable=not progress or len(chunks) < 2):
        parts.append(model.score_orders(history, typed.iloc[rows[i : i + CHUNK]], reasons=reasons))
    cols = ["order_id", "rework_risk", "dissatisfaction_prob", "top_reasons"]
    result = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False, encoding="utf-8")
    log.info("scored %d completed orders into %s", len(result), out)
    return len(result)
