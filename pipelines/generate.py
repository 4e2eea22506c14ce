"""Stage ``generate``: write the embedded default data set (seeded, realistic, with ground truth).

A thin shell around :func:`pipelines.simulator.simulate`: it only renders the contract formats
(``2024-05-01 10:00:00`` Asia/Shanghai local time, ``true``/``false``, ``;``-separated
certifications, empty cells for missing values) and writes the files, so the generated CSVs go
through exactly the same reading and validation as a customer's export.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.labels import LABEL_OVERRIDES_FILE, empty_label_overrides
from pipelines.simulator import SimulationConfig, simulate

log = logging.getLogger(__name__)

DEFAULT_SEED = 42
#: Homes of the default data set: ~100k orders over the default 24 months.
DEFAULT_UNITS = 32_000
DEFAULT_MONTHS = 24
DEFAULT_START = "2024-01-01"


def _render_timestamp(col: pd.Series) -> np.ndarray:
    """``YYYY-MM-DD HH:MM:SS`` local time, empty for NaT (vectorised, no strftime)."""
    values = col.to_numpy(dtype="datetime64[s]")
    text = np.strings.replace(np.datetime_as_string(values, unit="s"), "T", " ")
    return np.where(np.isnat(values), "", text).astype(object)


def _render_bool(col: pd.Series) -> np.ndarray:
    """``true``/``false``, empty for missing."""
    arr = col.astype("boolean")
    out = np.where(arr.fillna(False).to_numpy(dtype=bool), "true", "false").astype(object)
    out[arr.isna().to_numpy()] = ""
    return out


def _render_number(col: pd.Series, fmt: str) -> np.ndarray:
    """Numbers with a fixed format, empty for missing."""
    values = pd.to_numeric(col).to_numpy(dtype=float, na_value=np.nan)
    ok = ~np.isnan(values)
    out = np.full(len(values), "", dtype=object)
    out[ok] = np.char.mod(fmt, values[ok])
    return out


def render_csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Render a typed contract table as the text cells of a contract CSV."""
    out = {}
    for name in df.columns:
        col = df[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            if name == "hire_date":
                v = col.to_numpy(dtype="datetime64[D]")
                out[name] = np.where(np.isnat(v), "", np.datetime_as_string(v)).astype(object)
            else:
                out[name] = _render_timestamp(col)
        elif pd.api.types.is_bool_dtype(col):
            out[name] = _render_bool(col)
        elif pd.api.types.is_integer_dtype(col):
            out[name] = _render_number(col, "%d")
        elif pd.api.types.is_float_dtype(col):
            out[name] = _render_number(col, "%.2f" if name == "cost_yuan" else "%g")
        else:
            out[name] = col.astype(object).where(col.notna(), "").to_numpy()
    return pd.DataFrame(out, columns=df.columns)


def generate(
    out_dir: Path,
    seed: int = DEFAULT_SEED,
    units: int = DEFAULT_UNITS,
    months: int = DEFAULT_MONTHS,
    start: str = DEFAULT_START,
    config: SimulationConfig | None = None,
) -> dict:
    """Simulate a repair history and write it as contract files.

    Parameters
    ----------
    out_dir
        Directory for ``orders.csv``, ``technicians.csv``, ``units.csv``,
        ``ground_truth.parquet``, ``generate_metrics.json`` and an empty
        ``label_overrides.csv`` (header only: a simulated history has no appeals, and the
        label stage reads the file like the one ``repairqc export`` writes) (created if absent).
    seed
        Random seed; the same seed and sizes give byte-identical files.
    units
        Number of homes (public locations, communities and staff scale with it).
    months
        Length of the history in calendar months.
    start
        First day, ``YYYY-MM-DD`` (Asia/Shanghai).
    config
        Simulation knobs (default :class:`~pipelines.simulator.SimulationConfig`).

    Returns
    -------
    Summary: row counts, file paths, timings and the mean true label probabilities.
    """
    t0 = time.perf_counter()
    result = simulate(seed=seed, units=units, months=months, start=start, config=config)
    t_sim = time.perf_counter() - t0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "orders": out_dir / "orders.csv",
        "technicians": out_dir / "technicians.csv",
        "units": out_dir / "units.csv",
        "ground_truth": out_dir / "ground_truth.parquet",
    }
    for name in ("orders", "technicians", "units"):
        render_csv_frame(getattr(result, name)).to_csv(paths[name], index=False)
    result.ground_truth.to_parquet(paths["ground_truth"], index=False)
    empty_label_overrides().to_csv(out_dir / LABEL_OVERRIDES_FILE, index=False)
    elapsed = time.perf_counter() - t0

    o, gt = result.orders, result.ground_truth
    completed = o["status"] == "completed"
    summary = {
        "seed": seed,
        "units": units,
        "months": months,
        "start": start,
        "orders": len(o),
        "technicians": len(result.technicians),
        "locations": len(result.units),
        "status_counts": o["status"].value_counts().to_dict(),
        "mean_p_rework": float(gt.loc[completed, "p_rework"].mean()),
        # expected share dissatisfied among orders with a rating or complaint
        "expected_dissatisfied_rate": float(
            gt.loc[completed, "p_dissatisfied"].sum()
            / (
                gt.loc[completed, "p_dissatisfied"]
                / gt.loc[completed, "p_dissatisfied_if_labelled"]
            )
            .replace([np.inf], np.nan)
            .sum()
        ),
        "simulate_seconds": round(t_sim, 2),
        "seconds": round(elapsed, 2),
        "files": {k: str(v) for k, v in paths.items()},
    }
    (out_dir / "generate_metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("generated %d orders in %.1fs -> %s", len(o), elapsed, out_dir)
    return summary
