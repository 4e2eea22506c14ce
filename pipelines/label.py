"""DVC stage: attach the contract's labels to validated orders and write label statistics.

Label overrides (upheld appeals, ``label_overrides.csv`` written by ``repairqc export`` and —
empty — by ``repairqc generate``) are applied after the definitional labels when the file is
given and present; an absent file is said in the statistics (``label_overrides_file``), never
guessed at.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path

import pandas as pd

from models.labels import LabelConfig, label_orders, label_stats, validate_label_overrides
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


def read_label_overrides(path: Path) -> pd.DataFrame:
    """``label_overrides.csv`` as a validated table (``ValueError`` naming the file and field)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    try:
        return validate_label_overrides(frame)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def label_file(
    orders_path: Path,
    out_dir: Path,
    params_path: str | Path = "params.yaml",
    comment_sentiment: pd.Series | None = None,
    sentiment_model: Path | None = None,
    overrides: Path | None = None,
) -> dict[str, float | int]:
    """Label ``orders_path`` into ``out_dir/labelled.parquet`` and ``label_metrics.json``.

    With a ``sentiment_model`` (from ``repairqc sentiment train-orders``), orders that have only
    a follow-up comment are labelled from its sentiment (``dissatisfied_source == "comment"``).
    With ``overrides`` (a ``label_overrides.csv``), its overrides are applied after the
    definitional labels when the file exists; a missing file applies none and says so.
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
    table = None
    overrides_file: str | None = None
    if overrides is not None:
        if Path(overrides).is_file():
            table = read_label_overrides(Path(overrides))
            overrides_file = str(overrides)
        else:
            overrides_file = f"absent: {overrides}"
            log.warning("no label overrides file at %s: no override applied", overrides)
    labelled = label_orders(
        orders, config, as_of=as_of_ts, comment_sentiment=comment_sentiment, overrides=table
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    labelled.to_parquet(out_dir / "labelled.parquet", index=False)
    stats: dict = label_stats(labelled)
    stats["label_overrides_file"] = overrides_file
    stats["label_overrides_rows"] = 0 if table is None else len(table)
    (out_dir / "label_metrics.json").write_text(json.dumps(stats, indent=2) + "\n")
    log.info("labels: %s", stats)
    return stats
