"""DVC stage / shared loading: typed inputs, configs from ``params.yaml``, the training frame.

Writes ``features.parquet`` (features + ``split`` + as-of labels of every completed order) and
``split.json`` (the slice boundaries) into the output directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from models.estimators import TrainConfig, training_frame
from models.features import FeatureConfig, TextScorer, coerce_orders
from pipelines.params import section

log = logging.getLogger(__name__)

#: Label columns whose presence means the orders file is the label stage's output.
LABEL_COLUMNS = ("rework_order_id", "rework_known_at", "dissatisfied", "dissatisfied_known_at")


def feature_config(params_path: str | Path = "params.yaml") -> FeatureConfig:
    """``params.yaml: features``, with the label windows taken from ``label`` (declared once)."""
    block = section(params_path, "features")
    label = section(params_path, "label")
    for key in ("rework_window_days", "followup_delay_hours"):
        if key in label:
            block[key] = label[key]
    return FeatureConfig.from_dict(block)


def train_config(params_path: str | Path = "params.yaml") -> TrainConfig:
    """``params.yaml: train``."""
    return TrainConfig.from_dict(section(params_path, "train"))


def _is_typed(df: pd.DataFrame) -> bool:
    return "reported_at" in df and isinstance(df["reported_at"].dtype, pd.DatetimeTZDtype)


def load_orders(
    orders: Path, technicians: Path | None = None, units: Path | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    """Read contract files into typed frames.

    Files this project wrote (validated / labelled Parquet) are used as they are; anything else
    goes through :mod:`models.validation`, and rejected rows are reported (not silently used).

    Raises
    ------
    ValueError
        A file is unreadable or breaks the contract as a whole; or no valid orders remain.
    """
    from models.schemas import TECHNICIANS, UNITS
    from models.validation import validate_orders, validate_table
    from pipelines.io import read_raw_table

    def side(path: Path | None, table) -> pd.DataFrame | None:
        if path is None:
            return None
        raw, bad = read_raw_table(path)
        if _is_typed(raw) or table.name != "orders" and "source_row" in raw:
            return raw
        res = validate_table(raw, table, bad_rows=bad)
        if res.stats.get("quarantined_rows"):
            log.warning("%s: %d rows quarantined", path, res.stats["quarantined_rows"])
        return res.valid

    techs = side(technicians, TECHNICIANS)
    unit_tab = side(units, UNITS)
    raw, bad = read_raw_table(orders)
    if _is_typed(raw):
        typed = coerce_orders(raw)
    else:
        res = validate_orders(raw, techs, bad_rows=bad)
        if res.stats.get("quarantined_rows"):
            log.warning(
                "%s: %d of %d order rows quarantined (run `repairqc validate` for the reasons)",
                orders,
                res.stats["quarantined_rows"],
                res.stats["input_rows"],
            )
        typed = res.valid
    if not len(typed):
        raise ValueError(f"{orders}: no valid orders")
    return typed, techs, unit_tab


def load_text_scorer(directory: Path | None) -> TextScorer | None:
    """``texts -> P(positive)`` from a ``repairqc sentiment`` model directory (None: lexicon).

    Train that model on comments known before the training cut (e.g. ``--until``), so that the
    evaluation slice's own comments never taught it.
    """
    if directory is None:
        return None
    from functools import partial

    from models.sentiment import load_model, score_texts

    if not Path(directory).exists():
        raise FileNotFoundError(f"{directory}: no sentiment model directory")
    return partial(score_texts, load_model(directory))


def parse_time(value: str | None) -> pd.Timestamp | None:
    """A CLI timestamp; without an offset it is Asia/Shanghai local time (as in the contract)."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except ValueError as e:
        raise ValueError(
            f"not a timestamp: {value!r} (use e.g. 2025-06-01 or 2025-06-01T08:00)"
        ) from e
    return ts.tz_localize("Asia/Shanghai") if ts.tz is None else ts.tz_convert("Asia/Shanghai")


def make_training_frame(
    orders: pd.DataFrame,
    technicians: pd.DataFrame | None,
    units: pd.DataFrame | None,
    params_path: str | Path = "params.yaml",
    until: pd.Timestamp | None = None,
    text_scorer: TextScorer | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The training frame with the configs from ``params.yaml`` (labels reused when present)."""
    labels = orders[list(LABEL_COLUMNS)] if set(LABEL_COLUMNS) <= set(orders) else None
    return training_frame(
        orders,
        technicians=technicians,
        units=units,
        feature_config=feature_config(params_path),
        config=train_config(params_path),
        until=until,
        labels=labels,
        text_scorer=text_scorer,
    )


def build_feature_file(
    orders: Path,
    out_dir: Path,
    technicians: Path | None = None,
    units: Path | None = None,
    params_path: str | Path = "params.yaml",
    sentiment_model: Path | None = None,
) -> dict:
    """DVC ``features`` stage: write ``features.parquet`` and ``split.json``."""
    typed, techs, unit_tab = load_orders(orders, technicians, units)
    scorer = load_text_scorer(sentiment_model)
    frame, bounds = make_training_frame(typed, techs, unit_tab, params_path, text_scorer=scorer)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out_dir / "features.parquet")
    info = {k: str(v) for k, v in bounds.items()}
    info.update(
        {
            f"{s}_{h}": int(((frame["split"] == s) & frame[h].notna()).sum())
            for s in ("fit", "calib", "test")
            for h in ("rework", "dissatisfied")
        }
    )
    (out_dir / "split.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log.info("features: %d orders x %d columns; %s", len(frame), frame.shape[1], info)
    return info
