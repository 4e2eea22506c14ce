"""Label definitions: rework (返修) and dissatisfaction (不满意), exactly as the contract says.

Both labels are *censored*, never guessed: an order whose rework window is still open at the end
of the data is unlabelled (NaN), not a negative; an order nobody rated, complained about or
commented on is unlabelled, not satisfied. Treating censored orders as negatives would teach the
models that recent orders are safe.

Besides the label, each row carries the moment the label became *known*
(``rework_known_at``, ``dissatisfied_known_at``): the as-of feature builder uses it so that a
past order's outcome only enters a later order's features once it could have been known.

**Overrides** (申诉改判): a reviewer may decide that a definitional label is wrong — the repeat
order was a different fault or the resident's doing (not a rework), the complaint was not about
the repair (not dissatisfied). Such a decision is an *override* (``LABEL_OVERRIDE_COLUMNS``),
applied by :func:`apply_label_overrides` *after* the definitional labels and flagged in
``rework_overridden`` / ``dissatisfied_overridden``. The service's upheld appeals produce them;
``repairqc export`` writes them to ``label_overrides.csv`` and ``repairqc label`` applies that
file. An override is an outcome: it changes training targets and dossiers, never features —
``models.features`` re-derives its history labels without overrides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LabelConfig:
    """Windows and thresholds of the labels (``params.yaml: label``).

    Attributes
    ----------
    rework_window_days
        A later order on the same unit and category reported within this many days after
        completion makes the order a rework.
    dissatisfied_max_rating
        Ratings at or below this are dissatisfied.
    comment_negative_below, comment_positive_above
        For orders with only a ``feedback_comment``: sentiment P(positive) below the first labels
        them dissatisfied, above the second satisfied; in between stays unlabelled.
    followup_delay_hours
        When a rating/comment/complaint becomes known after completion (回访 delay).
    """

    rework_window_days: float = 30.0
    dissatisfied_max_rating: int = 2
    comment_negative_below: float = 0.3
    comment_positive_above: float = 0.7
    followup_delay_hours: float = 72.0


def data_end(orders: pd.DataFrame) -> pd.Timestamp:
    """The end of the observed data: the last moment an order was reported.

    Reworks are observed through *new reports*, so the last report is the honest horizon.
    """
    return orders["reported_at"].max()


def rework_labels(
    orders: pd.DataFrame, config: LabelConfig, as_of: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Rework label of every completed order.

    A completed order O is reworked when a later, not-cancelled order on the same ``unit_id`` and
    ``category`` was reported within the window after ``O.completed_at``, or a later,
    not-cancelled order names O as its ``parent_order_id``.

    Parameters
    ----------
    orders
        Validated, typed orders (all statuses: cancelled ones are needed to be ignored
        explicitly, open ones can still be reworks).
    config
        Windows.
    as_of
        End of observation; defaults to :func:`data_end`. Orders reported after it are ignored.

    Returns
    -------
    DataFrame indexed like ``orders`` with ``rework`` (1.0, 0.0, NaN when not completed or
    censored), ``rework_known_at`` (when the label became known: the report of the first repeat,
    or the window's close for a negative) and ``rework_order_id`` (the first repeat order).
    """
    end = data_end(orders) if as_of is None else as_of
    window = pd.Timedelta(days=config.rework_window_days)
    n = len(orders)
    out = pd.DataFrame(index=orders.index)
    completed = (orders["status"] == "completed") & orders["completed_at"].notna()

    first_repeat_at = pd.Series(pd.NaT, index=orders.index, dtype=orders["reported_at"].dtype)
    first_repeat_id = pd.Series(None, index=orders.index, dtype=object)

    live = orders[(orders["status"] != "cancelled") & (orders["reported_at"] <= end)]

    # 1) same unit + category, reported in (completed_at, completed_at + window]
    if n and completed.any():
        src = orders.loc[completed, ["unit_id", "category", "completed_at"]].copy()
        src["_row"] = np.flatnonzero(completed.to_numpy())
        src = src.sort_values("completed_at", kind="stable")
        cand = live[["unit_id", "category", "reported_at", "order_id"]].sort_values(
            "reported_at", kind="stable"
        )
        # first later report strictly after completion on the same unit + category
        m = pd.merge_asof(
            src,
            cand.rename(columns={"reported_at": "_next_at", "order_id": "_next_id"}),
            left_on="completed_at",
            right_on="_next_at",
            by=["unit_id", "category"],
            direction="forward",
            allow_exact_matches=False,
        )
        hit = m["_next_at"].notna() & (m["_next_at"] - m["completed_at"] <= window)
        rows = orders.index[m.loc[hit, "_row"].to_numpy()]
        first_repeat_at.loc[rows] = m.loc[hit, "_next_at"].to_numpy()
        first_repeat_id.loc[rows] = m.loc[hit, "_next_id"].to_numpy()

    # 2) a later order names O as its parent (any distance in time)
    if "parent_order_id" in orders and live["parent_order_id"].notna().any():
        kids = live.loc[
            live["parent_order_id"].notna(), ["parent_order_id", "reported_at", "order_id"]
        ]
        kids = kids.sort_values("reported_at", kind="stable").drop_duplicates("parent_order_id")
        pos = pd.Series(np.arange(n), index=orders["order_id"].to_numpy())
        pos = pos[~pos.index.duplicated()]
        idx = pos.reindex(kids["parent_order_id"].to_numpy())
        ok = idx.notna().to_numpy()
        kids = kids[ok]
        rows = orders.index[idx[ok].astype(int).to_numpy()]
        parent_completed = orders.loc[rows, "completed_at"].to_numpy()
        later = (kids["reported_at"].to_numpy() > parent_completed) & completed.loc[rows].to_numpy()
        rows, kids = rows[later], kids[later]
        cur = first_repeat_at.loc[rows].to_numpy()
        new = kids["reported_at"].to_numpy()
        take = pd.isna(cur) | (new < cur)
        first_repeat_at.loc[rows[take]] = new[take]
        first_repeat_id.loc[rows[take]] = kids["order_id"].to_numpy()[take]

    closes_at = orders["completed_at"] + window
    positive = completed & first_repeat_at.notna()
    closed = completed & (closes_at <= end)
    out["rework"] = np.where(positive & closed, 1.0, np.where(closed, 0.0, np.nan))
    # A rework observed before the window closed is still censored by the contract (the label
    # is defined only once the window closes), but its known-at time is the repeat's report.
    out["rework_known_at"] = first_repeat_at.where(positive, closes_at.where(completed))
    out["rework_order_id"] = first_repeat_id.where(positive)
    return out


def dissatisfied_labels(
    orders: pd.DataFrame,
    config: LabelConfig,
    comment_sentiment: pd.Series | None = None,
) -> pd.DataFrame:
    """Dissatisfaction label of every completed order.

    ``complaint`` true or ``rating`` ≤ threshold → 1; a rating above it without a complaint → 0;
    neither rating nor complaint: labelled from the comment's sentiment when it is clear enough
    (``dissatisfied_source == "comment"``, counted in the label statistics), else NaN.

    Parameters
    ----------
    orders
        Validated, typed orders.
    config
        Thresholds.
    comment_sentiment
        P(positive) of ``feedback_comment`` aligned with ``orders`` (NaN where no comment), from
        ``models.sentiment``; ``None`` leaves comment-only orders unlabelled.
    """
    completed = (orders["status"] == "completed") & orders["completed_at"].notna()
    rating = pd.to_numeric(orders["rating"], errors="coerce")
    complaint = orders["complaint"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    has_rating = rating.notna().to_numpy()
    low = (rating <= config.dissatisfied_max_rating).fillna(False).to_numpy(dtype=bool)

    label = np.full(len(orders), np.nan)
    source = np.full(len(orders), None, dtype=object)
    label[has_rating] = 0.0
    source[has_rating] = "rating"
    bad = complaint | low
    label[bad] = 1.0
    source[bad] = np.where(complaint[bad], "complaint", "rating")

    if comment_sentiment is not None:
        s = pd.to_numeric(comment_sentiment, errors="coerce").reindex(orders.index).to_numpy()
        unl = np.isnan(label) & ~np.isnan(s)
        neg = unl & (s < config.comment_negative_below)
        pos = unl & (s > config.comment_positive_above)
        label[neg], label[pos] = 1.0, 0.0
        source[neg | pos] = "comment"

    comp = completed.to_numpy()
    label[~comp] = np.nan
    source[~comp] = None
    out = pd.DataFrame(index=orders.index)
    out["dissatisfied"] = label
    out["dissatisfied_source"] = source
    out["dissatisfied_known_at"] = (
        orders["completed_at"] + pd.Timedelta(hours=config.followup_delay_hours)
    ).where(~np.isnan(label))
    return out


#: Columns of a label-override table (``label_overrides.csv``): the order, which label
#: (``rework`` | ``dissatisfied``), the value it takes (0 or 1), where the decision comes from
#: (e.g. the appeal id), when it was decided (ISO time, may be empty) and why (free text).
LABEL_OVERRIDE_COLUMNS: list[str] = ["order_id", "label", "value", "source", "decided_at", "reason"]
#: File name of the override table next to the contract files (export, label, report).
LABEL_OVERRIDES_FILE = "label_overrides.csv"
#: Labels an override may set.
OVERRIDABLE_LABELS: tuple[str, ...] = ("rework", "dissatisfied")


def _shown(value: object) -> str:
    """A cell as an error message shows it: numbers bare, text quoted."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def empty_label_overrides() -> pd.DataFrame:
    """An override table without rows (the columns of :data:`LABEL_OVERRIDE_COLUMNS`)."""
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in LABEL_OVERRIDE_COLUMNS})


def validate_label_overrides(overrides: pd.DataFrame) -> pd.DataFrame:
    """Check and normalise an override table; raise ``ValueError`` naming the field and row.

    Required columns: ``order_id``, ``label``, ``value``; ``source``, ``decided_at`` and
    ``reason`` are optional. Rows are returned in decision order (``decided_at``, then file
    order), so the *last* override of an (order, label) is the one that holds.
    """
    missing = [c for c in ("order_id", "label", "value") if c not in overrides]
    if missing:
        raise ValueError(f"label overrides: missing column(s) {missing}")
    out = overrides.copy()
    for c in LABEL_OVERRIDE_COLUMNS:
        if c not in out:
            out[c] = None
    out = out[LABEL_OVERRIDE_COLUMNS].reset_index(drop=True)
    oid = out["order_id"].astype("string").str.strip()
    bad = oid.isna() | (oid == "")
    if bad.any():
        raise ValueError(f"label overrides row {int(np.flatnonzero(bad)[0]) + 1}: order_id: empty")
    label = out["label"].astype("string").str.strip()
    bad = ~label.isin(OVERRIDABLE_LABELS).fillna(False)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"label overrides row {i + 1}: label: {_shown(out['label'].iloc[i])} is not one of "
            f"{', '.join(OVERRIDABLE_LABELS)}"
        )
    value = pd.to_numeric(out["value"], errors="coerce")
    bad = ~value.isin([0, 1]).fillna(False)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"label overrides row {i + 1}: value: {_shown(out['value'].iloc[i])} is not 0 or 1"
        )
    decided = pd.to_datetime(out["decided_at"].replace("", None), errors="coerce", utc=True)
    given = out["decided_at"].notna() & (out["decided_at"].astype("string").str.strip() != "")
    bad = given.fillna(False) & decided.isna()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"label overrides row {i + 1}: decided_at: "
            f"{_shown(out['decided_at'].iloc[i])} is not a time"
        )
    out["order_id"] = oid.astype(object)
    out["label"] = label.astype(object)
    out["value"] = value.astype(float)
    out["_decided"] = decided
    out["_pos"] = np.arange(len(out))
    out = out.sort_values(["_decided", "_pos"], na_position="first", kind="stable")
    return out.drop(columns=["_decided", "_pos"]).reset_index(drop=True)


def apply_label_overrides(
    labelled: pd.DataFrame,
    overrides: pd.DataFrame | None,
    config: LabelConfig | None = None,
    as_of: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """``labelled`` (from the definitional labels) with the overrides applied on top.

    Adds ``rework_overridden`` / ``dissatisfied_overridden`` (bool) and
    ``rework_override_source`` / ``dissatisfied_override_source`` (the override's ``source``).
    Only completed orders carry labels, so an override of another order (or of an order not in
    ``labelled``) is not applied; :func:`label_stats` counts those as ``overrides_unmatched``.

    * ``rework`` = 0: the repeat is not this order's rework — the link is dropped
      (``rework_order_id`` empty) and the order is a negative once its window closes (censored
      before, like any negative), known at the window's close.
    * ``rework`` = 1: a rework whatever the orders say, once the window closes; the repeat
      link (if any) stays, else ``rework_order_id`` is ``override:<source>`` (known at the
      window's close) — the training targets count a rework by its link.
    * ``dissatisfied`` = 0/1: the label is set (its known-at is the follow-up time).

    The training targets (``models.estimators.labels_as_of``) read ``rework_order_id`` and
    ``rework_known_at``, so both kinds of rework override reach them too.
    """
    config = config or LabelConfig()
    out = labelled.copy()
    for lab in OVERRIDABLE_LABELS:
        out[f"{lab}_overridden"] = False
        out[f"{lab}_override_source"] = pd.Series(None, index=out.index, dtype=object)
    out.attrs["overrides_applied"] = 0
    out.attrs["overrides_unmatched"] = 0
    if overrides is None or not len(overrides):
        return out
    ov = validate_label_overrides(overrides)
    ov = ov.drop_duplicates(["order_id", "label"], keep="last")
    completed = (out["status"] == "completed") & out["completed_at"].notna()
    pos = pd.Series(np.arange(len(out)), index=out["order_id"].astype(str).to_numpy())
    pos = pos[~pos.index.duplicated(keep="last")]
    idx = pos.reindex(ov["order_id"].to_numpy())
    ok = idx.notna().to_numpy().copy()
    ok[ok] = completed.to_numpy()[idx[ok].astype(int).to_numpy()]
    out.attrs["overrides_unmatched"] = int((~ok).sum())
    out.attrs["overrides_applied"] = int(ok.sum())
    end = data_end(out) if as_of is None else as_of
    window = pd.Timedelta(days=config.rework_window_days)
    for lab in OVERRIDABLE_LABELS:
        sel = ok & (ov["label"] == lab).to_numpy()
        if not sel.any():
            continue
        rows = out.index[idx[sel].astype(int).to_numpy()]
        value = ov.loc[sel, "value"].to_numpy()
        src = ov.loc[sel, "source"].to_numpy()
        out.loc[rows, f"{lab}_overridden"] = True
        out.loc[rows, f"{lab}_override_source"] = src
        if lab == "rework":
            closes = out.loc[rows, "completed_at"] + window
            closed = (closes <= end).to_numpy()
            out.loc[rows, "rework"] = np.where(closed, value, np.nan)
            neg = rows[value == 0]
            if len(neg):
                out.loc[neg, "rework_order_id"] = None
                out.loc[neg, "rework_known_at"] = out.loc[neg, "completed_at"] + window
            unlinked = (value == 1) & out.loc[rows, "rework_order_id"].isna().to_numpy()
            if unlinked.any():
                pos_rows = rows[unlinked]
                out.loc[pos_rows, "rework_order_id"] = [
                    f"override:{s if isinstance(s, str) and s else 'manual'}" for s in src[unlinked]
                ]
                out.loc[pos_rows, "rework_known_at"] = out.loc[pos_rows, "completed_at"] + window
        else:
            out.loc[rows, "dissatisfied"] = value
            known = out.loc[rows, "completed_at"] + pd.Timedelta(hours=config.followup_delay_hours)
            out.loc[rows, "dissatisfied_known_at"] = out.loc[rows, "dissatisfied_known_at"].fillna(
                known
            )
    return out


def label_orders(
    orders: pd.DataFrame,
    config: LabelConfig | None = None,
    *,
    as_of: pd.Timestamp | None = None,
    comment_sentiment: pd.Series | None = None,
    overrides: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Return a copy of ``orders`` with both labels and their known-at times.

    ``overrides`` (:data:`LABEL_OVERRIDE_COLUMNS`, e.g. from upheld appeals) are applied after
    the definitional labels (:func:`apply_label_overrides`); the ``*_overridden`` columns are
    always present (False without overrides).
    """
    config = config or LabelConfig()
    labelled = pd.concat(
        [
            orders,
            rework_labels(orders, config, as_of=as_of),
            dissatisfied_labels(orders, config, comment_sentiment=comment_sentiment),
        ],
        axis=1,
    )
    return apply_label_overrides(labelled, overrides, config, as_of=as_of)


def label_stats(labelled: pd.DataFrame) -> dict[str, float | int]:
    """Counts and rates of both labels, including how many were censored or comment-labelled."""
    completed = int(((labelled["status"] == "completed") & labelled["completed_at"].notna()).sum())
    rw = labelled["rework"]
    ds = labelled["dissatisfied"]
    return {
        "orders": len(labelled),
        "completed": completed,
        "rework_labelled": int(rw.notna().sum()),
        "rework_censored": int(completed - rw.notna().sum()),
        "rework_rate": float(rw.mean()) if rw.notna().any() else float("nan"),
        "dissatisfied_labelled": int(ds.notna().sum()),
        "dissatisfied_unlabelled": int(completed - ds.notna().sum()),
        "dissatisfied_rate": float(ds.mean()) if ds.notna().any() else float("nan"),
        "dissatisfied_from_comment": int((labelled["dissatisfied_source"] == "comment").sum()),
        "dissatisfied_from_complaint": int((labelled["dissatisfied_source"] == "complaint").sum()),
        "rework_overridden": _count(labelled, "rework_overridden"),
        "dissatisfied_overridden": _count(labelled, "dissatisfied_overridden"),
        "overrides_unmatched": int(labelled.attrs.get("overrides_unmatched", 0)),
    }


def _count(frame: pd.DataFrame, col: str) -> int:
    return int(frame[col].fillna(False).astype(bool).sum()) if col in frame else 0
