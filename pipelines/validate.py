"""DVC stage / CLI: validate contract files into typed Parquet plus a quarantine.

Writes into ``out_dir``:

* ``orders.parquet`` — valid orders, typed (``source_row`` kept for traceability)
* ``quarantine.csv`` — every rejected order row: original columns, ``source_row``, ``reason``
* ``technicians.parquet`` / ``units.parquet`` (+ ``quarantine_technicians.csv`` /
  ``quarantine_units.csv``) when those tables are given
* ``validation_metrics.json`` — counts per table and per problem (DVC metrics)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from models.schemas import TECHNICIANS, UNITS
from models.validation import (
    ValidationResult,
    cross_table_warnings,
    validate_orders,
    validate_table,
)
from pipelines.io import read_raw_table

log = logging.getLogger(__name__)


def _write_quarantine(result: ValidationResult, path: Path) -> None:
    # Plain UTF-8 without BOM: what other programs' CSV readers expect by default.
    result.quarantine.to_csv(path, index=False, encoding="utf-8")


def validate_files(
    orders: Path,
    out_dir: Path,
    technicians: Path | None = None,
    units: Path | None = None,
    encoding: str | None = None,
) -> dict[str, dict[str, int]]:
    """Validate the given contract files and write the outputs; return the metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, dict[str, int]] = {}

    techs_valid: pd.DataFrame | None = None
    if technicians is not None:
        raw, bad = read_raw_table(technicians, encoding)
        res = validate_table(raw, TECHNICIANS, bad_rows=bad)
        res.valid.to_parquet(out_dir / "technicians.parquet", index=False)
        _write_quarantine(res, out_dir / "quarantine_technicians.csv")
        metrics["technicians"] = res.stats
        techs_valid = res.valid
    units_valid: pd.DataFrame | None = None
    if units is not None:
        raw, bad = read_raw_table(units, encoding)
        res = validate_table(raw, UNITS, bad_rows=bad)
        units_valid = res.valid
        res.valid.to_parquet(out_dir / "units.parquet", index=False)
        _write_quarantine(res, out_dir / "quarantine_units.csv")
        metrics["units"] = res.stats

    raw, bad = read_raw_table(orders, encoding)
    res = validate_orders(raw, techs_valid, bad_rows=bad)
    valid = res.valid
    # Extra columns arrive as text; Parquet needs one type per column.
    for c in valid.columns:
        if valid[c].dtype == object:
            valid[c] = valid[c].astype("string")
    valid.to_parquet(out_dir / "orders.parquet", index=False)
    _write_quarantine(res, out_dir / "quarantine.csv")
    metrics["orders"] = res.stats
    metrics["warnings"] = cross_table_warnings(valid, units_valid)

    (out_dir / "validation_metrics.json").write_text(
        json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    for table, st in metrics.items():
        if table == "warnings":
            log.info("cross-table warnings (counted, rows kept): %s", st)
            continue
        log.info(
            "%s: %d rows in, %d valid, %d quarantined, %d identical duplicates collapsed",
            table,
            st["input_rows"],
            st["valid_rows"],
            st["quarantined_rows"],
            st["duplicates_collapsed"],
        )
    return metrics
