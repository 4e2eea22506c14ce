"""DVC stage: attach the contract's labels to validated orders and write label statistics."""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path

import pandas as pd

from models.labels import LabelConfig, label_orders, label_stats
from pipelines.params import section

log = logging.getLogger(__name__)


def label_config(params_path: str | Path) -> LabelConfig:
    """Build the label configuration from ``params.yaml: label`` (unknown keys are an error)."""
    block = section(params_path, "label")
    known = {f.name for f in fields(LabelConfig)}
    unknown = sorted(set(block) - known - {"use_comment_sentiment", "as_of"})
    if unknown:
        raise ValueError(f"params.yaml label: unknown key(s) {unknown}; known: {sorted(known)}")
    return LabelConfig(**{k: v for k, v in block.items() if k in known})


def label_file(
    orders_path: Path,
    out_dir: Path,
    params_path: str | Path = "params.yaml",
    comment_sentiment: pd.Series | None = None,
    sentiment_model: Path | None = None,
) -> dict[str, float | int]:
    """Label ``orders_path`` into ``out_dir/labelled.parquet`` and ``label_metrics.json``.

    With a ``sentiment_model`` (from ``repairqc sentiment train-orders``), orders that have only
    a follow-up comment are labelled from its sentiment (``dissatisfied_source == "comment"``).
    """
    block = section(params_path, "label")
    config = label_config(params_path)
    orders = pd.read_parquet(orders_path)
    as_of = block.get("as_of")
    as_of_ts = pd.Timestamp(as_of, tz="Asia/Shanghai") if as_of else None
    if comment_sentiment is None and sentiment_model is not None:
        from models.sentiment import load_model, score_texts

        scores = score_texts(load_model(sentiment_model), orders["feedback_comment"])
        comment_sentiment = pd.Series(scores, index=orders.index)
    labelled = label_orders(orders, config, as_of=as_of_ts, comment_sentiment=comment_sentiment)
    out_dir.mkdir(parents=True, exist_ok=True)
    labelled.to_parquet(out_dir / "labelled.parquet", index=False)
    stats = label_stats(labelled)
    (out_dir / "label_metrics.json").write_text(json.dumps(stats, indent=2) + "\n")
    log.info("labels: %s", stats)
    return stats
