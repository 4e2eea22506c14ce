"""The five service KPIs of repair work orders, defined once (物业维修五项指标).

A period counts the orders *reported* in it (``reported_at`` in ``[start, end)``). Every KPI is
a share ``numerator / denominator``; a group whose denominator is 0 has no value (``None``),
never 0 or 1.

* ``response_timeliness`` — 报修及时率: non-cancelled orders whose technician arrived within the
  priority's arrival SLA from ``reported_at`` / non-cancelled orders. An order never arrived
  counts as late once its SLA has passed (by the end of the data); before that it is pending and
  not counted.
* ``dispatch_timeliness`` — 派工及时率: the same with ``dispatched_at`` and the dispatch SLA.
* ``completion_rate`` — 维修完成率: completed / non-cancelled orders.
* ``first_time_fix_rate`` — 一次维修合格率: completed orders whose rework window has closed and
  that were not reworked / completed orders whose rework window has closed (the rework label of
  ``models.labels``; censored windows are excluded, not counted as fixed) and, where inspected,
  passed (the latest internal or third-party result, an overturned failure counting as a pass;
  inspection results exist in the service's store, not in the contract files).
* ``satisfaction_rate`` — 业主满意度: ratings 4–5 / all ratings (unrated orders excluded).

Pure: DataFrames and values in, DataFrames and dicts out; the thresholds come from
``params.yaml: kpi`` through :class:`KpiConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.labels import LabelConfig, data_end, rework_labels
from models.schemas import TIMEZONE

KPI_NAMES: tuple[str, ...] = (
    "response_timeliness",
    "dispatch_timeliness",
    "completion_rate",
    "first_time_fix_rate",
    "satisfaction_rate",
)

KPI_ZH: dict[str, str] = {
    "response_timeliness": "报修及时率",
    "dispatch_timeliness": "派工及时率",
    "completion_rate": "维修完成率",
    "first_time_fix_rate": "一次维修合格率",
    "satisfaction_rate": "业主满意度",
}

#: One-line definitions, printed in the README and the report.
KPI_DEFINITIONS: dict[str, str] = {
    "response_timeliness": (
        "non-cancelled orders whose technician arrived within the priority's arrival SLA "
        "from reported_at / non-cancelled orders (never arrived = late once the SLA has passed)"
    ),
    "dispatch_timeliness": (
        "non-cancelled orders dispatched within the priority's dispatch SLA from reported_at "
        "/ non-cancelled orders (never dispatched = late once the SLA has passed)"
    ),
    "completion_rate": "completed / non-cancelled orders",
    "first_time_fix_rate": (
        "completed orders with a closed rework window that were not reworked (and, where "
        "inspected, passed) / completed orders with a closed rework window"
    ),
    "satisfaction_rate": "ratings 4-5 / all ratings (unrated orders excluded)",
}

#: The same definitions in Chinese, for the HTML report.
KPI_DEFINITIONS_ZH: dict[str, str] = {
    "response_timeliness": (
        "未取消工单中，自报修时间起在该紧急程度上门时限内上门的比例（超过时限仍未上门计为不及时）"
    ),
    "dispatch_timeliness": (
        "未取消工单中，自报修时间起在该紧急程度派工时限内派工的比例（超过时限仍未派工计为不及时）"
    ),
    "completion_rate": "已完工工单数 / 未取消工单数",
    "first_time_fix_rate": (
        "返修观察期已结束的完工单中未发生返修（且如经质检则合格）的比例（观察期未结束的不计入）"
    ),
    "satisfaction_rate": "回访评价 4–5 分的单数 / 有评价的单数（未评价的不计入）",
}

#: Grouping keys of the breakdowns (``by_<key>`` in the report).
GROUPS: tuple[str, ...] = ("community", "category", "team", "technician", "month")
_GROUP_COLUMN = {
    "community": "community_id",
    "category": "category",
    "team": "team",
    "technician": "technician_id",
    "month": "month",
}
#: Group label of orders without a value (no technician, technician without a team).
MISSING = "(none)"


def _default_arrival() -> dict[str, float]:
    return {"emergency": 0.5, "urgent": 2.0, "normal": 24.0}


def _default_dispatch() -> dict[str, float]:
    return {"emergency": 0.25, "urgent": 0.5, "normal": 2.0}


@dataclass(frozen=True)
class KpiConfig:
    """SLAs and thresholds of the KPIs (``params.yaml: kpi``).

    Attributes
    ----------
    arrival_sla_hours
        上门时限 per priority, hours from ``reported_at`` (报修及时率).
    dispatch_sla_hours
        派工时限 per priority, hours from ``reported_at`` (派工及时率).
    satisfied_min_rating
        Ratings at or above this are satisfied (业主满意度).
    """

    arrival_sla_hours: dict[str, float] = field(default_factory=_default_arrival)
    dispatch_sla_hours: dict[str, float] = field(default_factory=_default_dispatch)
    satisfied_min_rating: int = 4


def _within_sla(
    reported: pd.Series,
    done: pd.Series,
    priority: pd.Series,
    sla_hours: dict[str, float],
    as_of: pd.Timestamp,
) -> tuple[np.ndarray, np.ndarray]:
    """(on time, counted) per order for one SLA; never done and SLA not yet passed → not counted."""
    missing = sorted(set(priority.dropna().astype(str)) - set(sla_hours))
    if missing:
        raise ValueError(f"no SLA for priority {missing}; configured: {sorted(sla_hours)}")
    sla = pd.to_timedelta(priority.astype(str).map(sla_hours).astype(float), unit="h")
    deadline = reported + sla
    has = done.notna().to_numpy()
    on_time = has & (done <= deadline).fillna(False).to_numpy(dtype=bool)
    counted = has | (deadline < as_of).to_numpy(dtype=bool)
    return on_time, counted


def order_flags(
    orders: pd.DataFrame,
    config: KpiConfig | None = None,
    label_config: LabelConfig | None = None,
    technicians: pd.DataFrame | None = None,
    *,
    as_of: pd.Timestamp | None = None,
    inspection_failed: pd.Series | None = None,
) -> pd.DataFrame:
    """Per-order numerator/denominator flags of the five KPIs, plus the grouping keys.

    Computed on the *whole* history (a rework is observed through later orders), then cut to
    periods by :func:`kpi_report`.

    Parameters
    ----------
    orders
        Validated, typed orders of all statuses. A ``rework`` column (from
        ``models.labels.label_orders``) is used when present; otherwise it is computed here.
    config, label_config
        SLAs and the rework window.
    technicians
        Validated technicians, for the ``team`` grouping (optional).
    as_of
        End of observation (default: the last report, as for the labels).
    inspection_failed
        Per ``order_id`` (index): True when the order's inspection failed (not overturned).
        A failed order is not a first-time fix even if it was not reworked. None: no
        inspection results (contract files).

    Returns
    -------
    DataFrame indexed like ``orders`` with ``reported_at``, the group keys and, per KPI,
    ``<kpi>_num`` and ``<kpi>_den`` (0/1 integers; num ≤ den).
    """
    config = config or KpiConfig()
    end = data_end(orders) if as_of is None else as_of
    live = (orders["status"].astype(str) != "cancelled").to_numpy()
    completed = (orders["status"].astype(str) == "completed").to_numpy()

    out = pd.DataFrame(index=orders.index)
    out["reported_at"] = orders["reported_at"]
    out["community_id"] = orders["community_id"].astype(object)
    out["category"] = orders["category"].astype(object)
    tech = orders["technician_id"].astype(object).where(orders["technician_id"].notna(), None)
    out["technician_id"] = tech
    if technicians is not None and "team" in technicians:
        teams = technicians.drop_duplicates("technician_id").set_index("technician_id")["team"]
        teams = teams.astype(object).where(teams.notna(), None)
        out["team"] = tech.map(teams.to_dict())
    else:
        out["team"] = None
    local = orders["reported_at"].dt.tz_convert(TIMEZONE).dt.tz_localize(None)
    out["month"] = local.dt.strftime("%Y-%m")
    for c in ("community_id", "category", "technician_id", "team"):
        out[c] = out[c].where(out[c].notna(), MISSING)

    for kpi, col, sla in (
        ("response_timeliness", "arrived_at", config.arrival_sla_hours),
        ("dispatch_timeliness", "dispatched_at", config.dispatch_sla_hours),
    ):
        on_time, counted = _within_sla(
            orders["reported_at"], orders[col], orders["priority"], sla, end
        )
        den = live & counted
        out[f"{kpi}_num"] = (den & on_time).astype(int)
        out[f"{kpi}_den"] = den.astype(int)

    out["completion_rate_num"] = (live & completed).astype(int)
    out["completion_rate_den"] = live.astype(int)

    if "rework" in orders:
        rework = pd.to_numeric(orders["rework"], errors="coerce")
    else:
        rework = rework_labels(orders, label_config or LabelConfig(), as_of=as_of)["rework"]
    closed = (completed & rework.notna()).to_numpy()
    fixed = closed & (rework == 0).to_numpy()
    if inspection_failed is not None and len(inspection_failed):
        failed = orders["order_id"].astype(str).map(inspection_failed.astype(bool))
        fixed &= ~failed.fillna(False).astype(bool).to_numpy()
    out["first_time_fix_rate_num"] = fixed.astype(int)
    out["first_time_fix_rate_den"] = closed.astype(int)

    rating = pd.to_numeric(orders["rating"], errors="coerce")
    rated = rating.notna().to_numpy()
    good = (rating >= config.satisfied_min_rating).fillna(False).to_numpy(dtype=bool)
    out["satisfaction_rate_num"] = (rated & good).astype(int)
    out["satisfaction_rate_den"] = rated.astype(int)
    return out


def _value(num: int, den: int) -> float | None:
    return float(num) / float(den) if den else None


def kpi_fractions(flags: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Numerators, denominators and values of the five KPIs, overall or per group.

    Returns one row (overall, index ``"overall"``) or one row per group, with columns
    ``<kpi>_num``, ``<kpi>_den`` and ``<kpi>`` (float, NaN when the denominator is 0).
    """
    cols = [f"{k}_{p}" for k in KPI_NAMES for p in ("num", "den")]
    if by is None:
        sums = flags[cols].sum().to_frame("overall").T
    else:
        sums = flags.groupby(_GROUP_COLUMN[by], sort=True)[cols].sum()
    sums = sums.astype(int)
    for k in KPI_NAMES:
        den = sums[f"{k}_den"].astype(float)
        sums[k] = (sums[f"{k}_num"] / den.where(den > 0)).astype(float)
    return sums


def _values(row: pd.Series) -> dict[str, float | None]:
    return {k: _value(int(row[f"{k}_num"]), int(row[f"{k}_den"])) for k in KPI_NAMES}


def _fractions(row: pd.Series) -> dict[str, dict[str, int]]:
    return {
        k: {"numerator": int(row[f"{k}_num"]), "denominator": int(row[f"{k}_den"])}
        for k in KPI_NAMES
    }


def _change(cur: float | None, prev: float | None) -> float | None:
    return None if cur is None or prev is None else cur - prev


def _counts(flags: pd.DataFrame, orders_status: pd.Series) -> dict[str, int]:
    st = orders_status.reindex(flags.index).astype(str)
    return {
        "orders": int(len(flags)),
        "cancelled": int((st == "cancelled").sum()),
        "non_cancelled": int(flags["completion_rate_den"].sum()),
        "completed": int(flags["completion_rate_num"].sum()),
        "rework_window_closed": int(flags["first_time_fix_rate_den"].sum()),
        "rated": int(flags["satisfaction_rate_den"].sum()),
    }


def period_bounds(start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The previous period of the same length, ending where ``[start, end)`` starts."""
    if end <= start:
        raise ValueError(f"the period must end after it starts ({start} .. {end})")
    return start - (end - start), start


def kpi_trend(
    flags: pd.DataFrame, end: pd.Timestamp, months: int = 12, *, community: str | None = None
) -> dict[str, dict[str, Any]]:
    """Monthly KPI values of the ``months`` calendar months up to the one holding ``end``.

    Only orders reported before ``end`` count, so the last month may be partial. Returns
    ``{"YYYY-MM": {<kpi>: float | None, "orders": int}}`` in month order.
    """
    if community is not None:
        flags = flags[flags["community_id"] == community]
    last = (end - pd.Timedelta(nanoseconds=1)).tz_convert(TIMEZONE)
    first = (last.tz_localize(None).to_period("M") - (months - 1)).start_time.tz_localize(TIMEZONE)
    sel = flags[(flags["reported_at"] >= first) & (flags["reported_at"] < end)]
    tab = kpi_fractions(sel, "month")
    return {
        str(m): {**_values(r), "orders": int(len(sel[sel["month"] == m]))}
        for m, r in tab.iterrows()
    }


def kpi_report(
    flags: pd.DataFrame,
    status: pd.Series,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    community: str | None = None,
    trend_months: int = 12,
    unavailable: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The KPI section of the improvement report for orders reported in ``[start, end)``.

    Parameters
    ----------
    flags
        From :func:`order_flags` (whole history).
    status
        ``orders["status"]`` aligned with ``flags`` (for the cancelled count).
    start, end
        Timezone-aware bounds; the previous period is ``[start - (end - start), start)``.
    community
        Restrict to one community (the flags are still computed on the whole history).
    trend_months
        Calendar months of the monthly ``trend`` (see :func:`kpi_trend`; 0: none).
    unavailable
        KPI → why this source cannot measure it (e.g. the service's store holds completed
        orders only, so the completion rate would always be 100 %). Those KPIs are ``None``
        in ``kpis``, ``previous``, ``changes`` and ``trend`` (the fractions stay, for
        transparency), the reason is in ``unavailable`` and in ``definitions.<kpi>.unavailable``:
        a meaningless number is worse than none.

    Returns
    -------
    A JSON-ready dict: ``period``, ``previous_period``, ``definitions``, ``counts`` (current and
    previous), ``kpis`` (``overall`` and ``by_<group>``: KPI → float or None), ``fractions`` (same
    shape, numerator and denominator), ``previous`` (``overall`` and ``by_community``) and
    ``changes`` (current minus previous, same shape as ``previous``) and ``trend``.
    """
    prev_start, prev_end = period_bounds(start, end)
    if community is not None:
        flags = flags[flags["community_id"] == community]
    rep = flags["reported_at"]
    cur = flags[(rep >= start) & (rep < end)]
    prev = flags[(rep >= prev_start) & (rep < prev_end)]

    kpis: dict[str, Any] = {}
    fractions: dict[str, Any] = {}
    previous: dict[str, Any] = {}
    changes: dict[str, Any] = {}

    cur_all = kpi_fractions(cur).iloc[0]
    prev_all = kpi_fractions(prev).iloc[0]
    kpis["overall"] = _values(cur_all)
    fractions["overall"] = _fractions(cur_all)
    previous["overall"] = _values(prev_all)
    changes["overall"] = {k: _change(kpis["overall"][k], previous["overall"][k]) for k in KPI_NAMES}
    for g in GROUPS:
        key = f"by_{g}"
        tab = kpi_fractions(cur, g)
        kpis[key] = {str(i): _values(r) for i, r in tab.iterrows()}
        fractions[key] = {str(i): _fractions(r) for i, r in tab.iterrows()}
        if g == "month":  # months of the two periods never coincide
            continue
        ptab = kpi_fractions(prev, g)
        previous[key] = {str(i): _values(r) for i, r in ptab.iterrows()}
        changes[key] = {
            i: {k: _change(v[k], previous[key].get(i, {}).get(k)) for k in KPI_NAMES}
            for i, v in kpis[key].items()
        }

    trend = kpi_trend(flags, end, trend_months) if trend_months > 0 else {}
    unavailable = {k: v for k, v in (unavailable or {}).items() if k in KPI_NAMES}
    for k in unavailable:
        for block in (kpis, previous, changes):
            for key, vals in block.items():
                for row in vals.values() if key != "overall" else [vals]:
                    row[k] = None
        for row in trend.values():
            row[k] = None
    return {
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "previous_period": {"from": prev_start.isoformat(), "to": prev_end.isoformat()},
        "community": community,
        "unavailable": unavailable,
        "definitions": {
            k: {
                "name_zh": KPI_ZH[k],
                "definition": KPI_DEFINITIONS[k],
                "definition_zh": KPI_DEFINITIONS_ZH[k],
                **({"unavailable": unavailable[k]} if k in unavailable else {}),
            }
            for k in KPI_NAMES
        },
        "counts": {"current": _counts(cur, status), "previous": _counts(prev, status)},
        "kpis": kpis,
        "fractions": fractions,
        "previous": previous,
        "changes": changes,
        "trend": trend,
    }
