"""``repairqc export``: the service's audit store back as contract files.

Why: so that ``dvc repro`` retrains on what the real operation recorded.

Written to ``--out``:

* ``orders.csv``, ``technicians.csv``, ``units.csv`` — exactly the contract's columns
  (``models.schemas``), rendered like every contract CSV of the project
  (``pipelines.generate.render_csv_frame``). The outcome columns (``rating``,
  ``feedback_comment``, ``complaint``) are filled from the recorded follow-ups: per field, the
  latest follow-up that gives a value wins, else the value the order arrived with.
* ``inspections.csv`` — one row per inspection result (internal | third_party) with
  ``counts_as_failure`` (failed and not overturned by an upheld appeal) and the order's latest
  decision: ``inclusion_probability`` (π), ``draw_u``, ``third_party_sample``,
  ``mandatory_inspection`` — what Horvitz–Thompson estimates need.
* ``decisions.csv`` — the latest decision of every scored order (π and draw of the whole
  population, not only of the inspected sample).

* ``label_overrides.csv`` — the label overrides of upheld ``rework`` / ``dissatisfaction``
  appeals (``models.labels.LABEL_OVERRIDE_COLUMNS``): ``order_id``, ``label`` (``rework`` |
  ``dissatisfied``), ``value`` (0), ``source`` (the appeal id), ``decided_at`` (ISO time),
  ``reason`` (the appeal's reason and the reviewer's note). Always written (header only when
  there are none); ``repairqc label --overrides`` and ``repairqc report --orders`` apply it.

* ``ground_truth.parquet`` — an oracle table *without* oracle columns: the DVC stages read the
  generator's oracle file, and a real operation has none.

Rework needs no column of its own: it is derived from the orders (same unit + category within
the window, or ``parent_order_id``) by ``models.labels``, exactly as for any contract file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from models.labels import LABEL_OVERRIDES_FILE
from models.schemas import ORDERS, TECHNICIANS, UNITS
from serving.store.quality import DECISION_COLUMNS, FOLLOWUP_TO_ORDER

#: Columns of ``inspections.csv`` (list fields are ``;``-joined like the contract's lists).
INSPECTION_EXPORT_COLUMNS = [
    "inspection_id",
    "order_id",
    "kind",
    "passed",
    "counts_as_failure",
    "overturned",
    "appeal_id",
    "defect_codes",
    "inspector",
    "agency",
    "notes",
    "photos",
    "inspected_at",
    "recorded_at",
    "decision_id",
    "policy_version",
    "risk_level",
    "mandatory_inspection",
    "third_party_sample",
    "inclusion_probability",
    "draw_u",
]
#: The store's decision columns, order id first; the reasons (JSON for the API) stay in the store.
DECISION_EXPORT_COLUMNS = [
    "order_id",
    *(c for c in DECISION_COLUMNS if c not in ("order_id", "reasons")),
]


class EmptyStoreError(ValueError):
    """The store holds no orders: there is nothing to export."""


def open_store(database_url: str | None = None) -> Any:
    """The service's store (``REPAIRQC_DATABASE_URL`` or the default), migrated to head."""
    from serving.store.db import Store, make_engine, upgrade

    if database_url is None:
        from pipelines.serve import _settings

        database_url = _settings(dev_mode=True).database_url  # no secret needed to read
    engine = make_engine(database_url)
    upgrade(engine)
    return Store(engine)


def apply_followups(orders: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Orders with their outcome columns filled from recorded follow-ups (latest value wins)."""
    out = orders.copy()
    fu = outcomes[outcomes["kind"] == "followup"].sort_values(["recorded_at", "outcome_id"])
    if fu.empty:
        return out
    idx = pd.Index(out["order_id"].astype(str))
    for src, dst in FOLLOWUP_TO_ORDER.items():
        given = fu[fu[src].notna()]
        if given.empty:
            continue
        latest = given.groupby("order_id", sort=False)[src].last()
        pos = idx.get_indexer(latest.index)
        ok = pos >= 0
        col = out[dst].copy()
        col.iloc[pos[ok]] = latest.to_numpy()[ok]
        out[dst] = col.astype(out[dst].dtype)
    return out


def _joined(values: Any) -> str:
    return ";".join(str(v) for v in values) if isinstance(values, list | tuple) else ""


def _render(frame: pd.DataFrame) -> pd.DataFrame:
    """Times as local ``YYYY-MM-DD HH:MM:SS``, lists ``;``-joined, booleans true/false."""
    from pipelines.generate import render_csv_frame

    if frame.empty:  # e.g. no inspection result yet: the header only (numpy cannot render none)
        return pd.DataFrame(columns=frame.columns)
    frame = frame.copy()
    for c in frame.columns:
        if frame[c].dtype != object:
            continue
        given = frame[c].dropna()
        if given.map(lambda v: isinstance(v, list)).any():
            frame[c] = frame[c].map(_joined)
        elif len(given) and given.map(lambda v: isinstance(v, bool)).all():
            frame[c] = frame[c].astype("boolean")  # e.g. a decision flag after a left join
    return render_csv_frame(frame)


def inspections_export(inspections: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """Inspection results joined with their order's latest decision (π, draw)."""
    dec = decisions[
        [
            "order_id",
            "decision_id",
            "policy_version",
            "risk_level",
            "mandatory_inspection",
            "third_party_sample",
            "inclusion_probability",
            "draw_u",
        ]
    ]
    merged = inspections.merge(dec, on="order_id", how="left")
    return merged[INSPECTION_EXPORT_COLUMNS]


def export_store(out_dir: Path, store: Any) -> dict[str, Any]:
    """Write the contract files and the loop's tables; returns row counts and paths."""
    orders = store.orders_frame()
    if orders.empty:
        raise EmptyStoreError("the store holds no orders: nothing to export")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = store.outcomes_frame()
    orders = apply_followups(orders, outcomes)
    decisions = store.decisions_frame()
    files: dict[str, pd.DataFrame] = {
        "orders.csv": orders[ORDERS.names],
        "inspections.csv": inspections_export(store.inspections_frame(), decisions),
        "decisions.csv": decisions[DECISION_EXPORT_COLUMNS],
        LABEL_OVERRIDES_FILE: store.label_overrides_frame(),
    }
    for name, contract in (("technicians", TECHNICIANS), ("units", UNITS)):
        side = store.side_frame(name)
        if side is not None and len(side):
            files[f"{name}.csv"] = side[contract.names]
    counts = {}
    for name, frame in files.items():
        _render(frame).to_csv(out_dir / name, index=False, encoding="utf-8")
        counts[name] = len(frame)
    # the DVC stages after ``generate`` read the generator's oracle file; a real operation has
    # no oracle, so the export writes one without oracle columns (evaluate then reports none)
    pd.DataFrame({"order_id": pd.Series([], dtype="string")}).to_parquet(
        out_dir / "ground_truth.parquet", index=False
    )
    followed = outcomes[outcomes["kind"] == "followup"]["order_id"].nunique()
    summary = {"out": str(out_dir), "rows": counts, "orders_with_followups": int(followed)}
    (out_dir / "export_summary.json").write_text(
        json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return summary
