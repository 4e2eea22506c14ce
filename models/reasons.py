"""Reasons in business language: which features pushed an order's risk up, and by how much.

One source for every consumer: the API (``serving``) returns the items of :class:`Reasoner`,
batch scoring (``repairqc score``) writes the same items as ``text (code)`` strings
(:func:`format_reasons`), so a quality team reads the same wording in both.

Why binned contributions instead of per-request TreeSHAP: LightGBM's ``pred_contrib`` costs
milliseconds per row (2 ms at 100 trees, 10 ms at 500), which alone would break the latency and
batch-throughput goals. Instead, when a model (or a refreshed history) is loaded, the exact
TreeSHAP contributions of both heads are computed once on a reference sample of stored orders,
and for every feature the mean contribution is tabulated per quantile bin of its value. At
request time each order's contribution of a feature is looked up from its bin: a vectorised
``searchsorted`` per feature, microseconds per order. The lookup is the expected contribution
given the feature's value — close to the exact one for trees with weak interactions, and exact
reasons are used when there is no reference sample (yet): ``Reasoner(model, None, 0)``, which is
also what batch scoring uses (it has the time; the API has not).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.estimators import HEADS, RiskModel
from models.features import CATEGORICAL_LEVELS
from models.schemas import CATEGORY_ZH, PRIORITY_ZH

#: Features some wordings read besides their own (the arrival SLA overrun).
_CONTEXT = ("arrival_sla_ratio", "arrival_hours")
#: Quantile bins per numeric feature in the reference tables.
N_BINS = 16


def _overdue(f: Mapping[str, Any]) -> str:
    ratio, hours = f.get("arrival_sla_ratio"), f.get("arrival_hours")
    if ratio and hours and ratio > 1:
        return f"上门超时{hours * (1 - 1 / ratio):.1f}小时"
    return f"上门用时{hours:.1f}小时" if hours == hours and hours is not None else "上门时效"


def _fmt(template: str) -> Callable[[Mapping[str, Any], Any], str]:
    return lambda _f, v: template.format(v=v)


#: feature -> (reason code, wording from (feature row, value)). One declaration; features
#: without an entry are reported as ``feature=value`` with the feature name as code.
REASON_TEXTS: dict[str, tuple[str, Callable[[Mapping[str, Any], Any], str]]] = {
    "unit_cat_orders_30d": ("unit_repeat_30d", _fmt("同户30天内同类报修{v:.0f}次")),
    "unit_cat_orders_90d": ("unit_repeat_90d", _fmt("同户90天内同类报修{v:.0f}次")),
    "unit_cat_orders_365d": ("unit_repeat_365d", _fmt("同户一年内同类报修{v:.0f}次")),
    "unit_cat_orders_all": ("unit_repeat_all", _fmt("同户同类累计报修{v:.0f}次")),
    "unit_cat_orders_per_year": ("unit_repeat_rate", _fmt("同户同类年均报修{v:.1f}次")),
    "unit_orders_365d": ("unit_orders_365d", _fmt("该户一年内报修{v:.0f}次")),
    "unit_orders_all": ("unit_orders_all", _fmt("该户累计报修{v:.0f}次")),
    "unit_orders_per_year": ("unit_orders_rate", _fmt("该户年均报修{v:.1f}次")),
    "unit_reworks_365d": ("unit_reworks_365d", _fmt("该户一年内返修{v:.0f}次")),
    "unit_reworks_all": ("unit_reworks_all", _fmt("该户累计返修{v:.0f}次")),
    "unit_cat_reworks_365d": ("unit_cat_reworks", _fmt("该户同类一年内返修{v:.0f}次")),
    "unit_rework_rate": ("unit_rework_rate", _fmt("该户返修率{v:.0%}")),
    "days_since_unit_cat_done": ("recent_same_repair", _fmt("距上次同类完工{v:.0f}天")),
    "days_since_unit_cat_report": ("recent_same_report", _fmt("距上次同类报修{v:.0f}天")),
    "arrival_overdue": ("arrival_overdue", lambda f, v: _overdue(f)),
    "arrival_sla_ratio": ("arrival_overdue", lambda f, v: _overdue(f)),
    "arrival_hours": ("arrival_slow", _fmt("上门用时{v:.1f}小时")),
    "arrival_vs_category": ("arrival_vs_category", _fmt("上门用时为同类均值的{v:.1f}倍")),
    "repair_hours": ("repair_duration", _fmt("维修用时{v:.1f}小时")),
    "repair_vs_category": ("repair_vs_category", _fmt("维修用时为同类均值的{v:.1f}倍")),
    "total_hours": ("total_duration", _fmt("报修到完工{v:.1f}小时")),
    "dispatch_hours": ("dispatch_delay", _fmt("派工用时{v:.1f}小时")),
    "urge_count": ("urged", _fmt("催单{v:.0f}次")),
    "tech_rework_rate": ("tech_rework_rate", _fmt("维修人员历史返修率{v:.0%}")),
    "tech_cat_rework_rate": ("tech_cat_rework_rate", _fmt("维修人员该类别返修率{v:.0%}")),
    "tech_dissat_rate": ("tech_dissat_rate", _fmt("维修人员不满意率{v:.0%}")),
    "tech_recent_reworks": ("tech_recent_reworks", _fmt("维修人员近期返修{v:.0f}次")),
    "tech_certified": (
        "tech_uncertified",
        lambda f, v: "维修人员无该类别持证" if v == 0 else "持证",
    ),
    "tech_tenure_days": ("tech_tenure", _fmt("维修人员入职{v:.0f}天")),
    "tech_subcontractor": ("subcontractor", lambda f, v: "外包维修人员" if v else "自有维修人员"),
    "tech_orders_workload": ("tech_workload", _fmt("维修人员24小时内完工{v:.0f}单")),
    "tech_orders": ("tech_experience", _fmt("维修人员累计完工{v:.0f}单")),
    "team_load_24h": ("team_load", _fmt("班组24小时人均工单{v:.1f}")),
    "team_orders_today": ("team_orders_today", _fmt("班组当日工单{v:.0f}")),
    "res_dissat_rate": ("resident_dissat_rate", _fmt("报事人历史不满意率{v:.0%}")),
    "res_complaints": ("resident_complaints", _fmt("报事人历史投诉{v:.0f}次")),
    "res_mean_rating": ("resident_rating", _fmt("报事人历史平均评分{v:.1f}")),
    "res_mean_urge": ("resident_urging", _fmt("报事人平均催单{v:.1f}次")),
    "res_orders_365d": ("resident_orders", _fmt("报事人一年内报修{v:.0f}次")),
    "res_comment_sentiment": ("resident_comments", _fmt("报事人历史评价情绪{v:.2f}")),
    "report_night": ("night_report", lambda f, v: "夜间报修" if v else "日间报修"),
    "report_holiday": ("holiday_report", lambda f, v: "节假日报修" if v else "工作日报修"),
    "report_offday": ("offday_report", lambda f, v: "休息日报修" if v else "工作日报修"),
    "cue_repeat": ("desc_repeat", lambda f, v: "报事描述提及反复故障" if v else "描述无反复"),
    "cue_annoyed": ("desc_annoyed", lambda f, v: "报事描述带不满情绪" if v else "描述平和"),
    "cue_urgent": ("desc_urgent", lambda f, v: "报事描述紧急" if v else "描述不紧急"),
    "desc_sentiment": ("desc_sentiment", _fmt("报事描述情绪得分{v:.2f}")),
    "linked_rework": ("linked_rework", lambda f, v: "关联返修单" if v else "非关联返修"),
    "parts_replaced": ("parts_replaced", lambda f, v: "更换配件" if v else "未换配件"),
    "comm_dissat_rate": ("community_dissat_rate", _fmt("小区不满意率{v:.0%}")),
    "comm_rework_rate": ("community_rework_rate", _fmt("小区返修率{v:.0%}")),
    "comm_orders_workload": ("community_load", _fmt("小区24小时报修{v:.0f}单")),
    "building_age": ("building_age", _fmt("楼龄{v:.0f}年")),
    "category": ("category", lambda f, v: f"报修类别：{CATEGORY_ZH.get(str(v), v)}"),
    "priority": ("priority", lambda f, v: f"紧急程度：{PRIORITY_ZH.get(str(v), v)}"),
}


def reason_item(feature: str, row: Mapping[str, Any], contribution: float) -> dict[str, Any]:
    """One reason: code, Chinese text, feature, value, log-odds contribution (both heads)."""
    v = row.get(feature)
    value: Any = None if v is None or (isinstance(v, float) and np.isnan(v)) else v
    if isinstance(value, np.generic):
        value = value.item()
    code, text = feature, f"{feature}={value}"
    if feature in REASON_TEXTS:
        code, fn = REASON_TEXTS[feature]
        try:
            text = fn(row, value) if value is not None else f"{feature}缺失"
        except (TypeError, ValueError):
            text = f"{feature}={value}"
    return {
        "code": code,
        "text": text,
        "feature": feature,
        "value": value if not isinstance(value, float) else round(value, 4),
        "contribution": round(float(contribution), 4),
    }


def numeric_matrix(features: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Features as a float matrix; categoricals as their contract level codes (NaN missing)."""
    out = np.empty((len(features), len(names)))
    for j, c in enumerate(names):
        s = features[c]
        if c in CATEGORICAL_LEVELS:
            codes = _LEVEL_CODES.setdefault(
                c, {v: float(i) for i, v in enumerate(CATEGORICAL_LEVELS[c])}
            )
            out[:, j] = [codes.get(v, np.nan) for v in s.to_numpy(dtype=object)]
        elif pd.api.types.is_numeric_dtype(s.dtype):  # float, Int64, boolean: no parsing
            out[:, j] = s.to_numpy(dtype=float, na_value=np.nan)
        else:
            out[:, j] = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return out


#: Contract level -> code per categorical feature (the codes LightGBM was trained with).
_LEVEL_CODES: dict[str, dict[Any, float]] = {}


@dataclass
class BinnedContributions:
    """Per feature: bin edges and the mean summed contribution of each bin (+ a NaN bin)."""

    names: list[str]
    edges: list[np.ndarray]
    means: list[np.ndarray]
    nan_means: np.ndarray

    @classmethod
    def fit(cls, model: RiskModel, reference: pd.DataFrame) -> BinnedContributions:
        """Exact TreeSHAP of both heads on ``reference``, tabulated per quantile bin."""
        names = list(model.feature_names)
        X = reference[names]
        contrib = sum(model.heads[h].contributions(X).to_numpy() for h in HEADS)
        M = numeric_matrix(reference, names)
        edges, means, nan_means = [], [], np.zeros(len(names))
        for j in range(len(names)):
            x, c = M[:, j], contrib[:, j]
            ok = ~np.isnan(x)
            nan_means[j] = float(c[~ok].mean()) if (~ok).any() else 0.0
            if not ok.any():
                edges.append(np.array([]))
                means.append(np.zeros(1))
                continue
            e = np.unique(np.quantile(x[ok], np.linspace(0, 1, N_BINS + 1)[1:-1]))
            b = np.searchsorted(e, x[ok], side="right")
            sums = np.bincount(b, weights=c[ok], minlength=len(e) + 1)
            counts = np.bincount(b, minlength=len(e) + 1)
            means.append(np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0))
            edges.append(e)
        return cls(names, edges, means, nan_means)

    def lookup(self, M: np.ndarray) -> np.ndarray:
        """Approximate contributions of each order (rows) and feature (columns)."""
        out = np.empty_like(M)
        for j in range(M.shape[1]):
            x = M[:, j]
            b = np.searchsorted(self.edges[j], np.nan_to_num(x), side="right")
            out[:, j] = np.where(np.isnan(x), self.nan_means[j], self.means[j][b])
        return out


class Reasoner:
    """Top-k reasons per order, from binned contributions or (no reference yet) exact ones."""

    def __init__(self, model: RiskModel, reference: pd.DataFrame | None, min_reference: int):
        self.model = model
        self.binned = (
            BinnedContributions.fit(model, reference)
            if reference is not None and len(reference) >= min_reference
            else None
        )

    @property
    def mode(self) -> str:
        """``binned`` or ``exact``."""
        return "binned" if self.binned is not None else "exact"

    def top(
        self, features: pd.DataFrame, k: int, matrix: np.ndarray | None = None
    ) -> list[list[dict[str, Any]]]:
        """Up to ``k`` positive contributions per order, largest first.

        ``matrix``: ``numeric_matrix(features, model.feature_names)`` when already computed.
        """
        if k <= 0 or not len(features):
            return [[] for _ in range(len(features))]
        names = self.model.feature_names
        if self.binned is not None:
            M = matrix if matrix is not None else numeric_matrix(features, names)
            contrib = self.binned.lookup(M)
        else:
            X = features[names]
            contrib = sum(self.model.heads[h].contributions(X).to_numpy() for h in HEADS)
        order = np.argsort(-contrib, axis=1)[:, :k]
        # column arrays once: per-row DataFrame access would cost ~50 us per order
        needed = {names[j] for j in np.unique(order)} | set(_CONTEXT)
        cols = {c: features[c].to_numpy() for c in needed if c in features}
        out: list[list[dict[str, Any]]] = []
        for i, top in enumerate(order):
            row = {c: v[i] for c, v in cols.items()}
            out.append(
                [reason_item(names[j], row, contrib[i, j]) for j in top if contrib[i, j] > 0]
            )
        return out


def format_reasons(items: list[dict[str, Any]]) -> str:
    """One order's reasons as a single cell: ``text (code)`` joined by ``"; "``.

    The batch-scoring file carries the same wording and codes as the API's ``reasons``; the
    code keeps the cell machine-readable (e.g. ``同户90天内同类报修2次 (unit_repeat_90d)``).
    """
    return "; ".join(f"{r['text']} ({r['code']})" for r in items)
