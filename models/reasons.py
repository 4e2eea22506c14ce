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

import bisect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.estimators import HEADS, RiskModel
from models.features import CATEGORICAL_LEVELS
from models.schemas import AREA_ZH, CATEGORY_ZH, CHANNEL_ZH, PRIORITY_ZH

#: Features some wordings read besides their own (the arrival SLA overrun).
_CONTEXT = ("arrival_sla_ratio", "arrival_hours")
#: Quantile bins per numeric feature in the reference tables.
N_BINS = 16
#: Candidates looked at beyond ``k`` so that features sharing a reason code count once.
_SPARE = 3
#: Decimals of a reason's contribution and value as shown.
DIGITS = 4
#: Features that describe the whole operation at the order's time, not the order: the recent
#: company-wide rates, equal for every order of a day. They move scores with the drift, but
#: they are no reason to inspect *this* order rather than another one of the same day, and as
#: a reason they crowded out the order's own ones (the most frequent reason of a week's scores:
#: 近期整体不满意率, on 44 % of the orders). An order's reasons leave them out; the report's
#: global drivers (``pipelines.report_sections``) still show them.
CONTEXT_FEATURES = frozenset({"global_rework_rate", "global_dissat_rate"})


def _overdue(f: Mapping[str, Any]) -> str:
    ratio, hours = f.get("arrival_sla_ratio"), f.get("arrival_hours")
    if ratio and hours and ratio > 1:
        return f"上门超时{hours * (1 - 1 / ratio):.1f}小时"
    return f"上门用时{hours:.1f}小时" if hours == hours and hours is not None else "上门时效"


def _fmt(template: str) -> Callable[[Mapping[str, Any], Any], str]:
    return lambda _f, v: template.format(v=v)


def _pct(v: Any) -> str:
    return f"{min(max(float(v), 0.0), 1.0):.0%}"


def _times(v: Any) -> str:
    return f"{float(v):.1f}倍"


def _wording(outcome: str) -> Callable[[Mapping[str, Any], Any], str]:
    """A description model's log-odds, read as the probability the wording alone gives."""
    return lambda _f, v: f"按报事描述措辞估计的{outcome}概率{_pct(1.0 / (1.0 + math.exp(-v)))}"


_WEEKDAYS = "一二三四五六日"

#: feature -> (reason code, Chinese name, wording from (feature row, value)). One declaration for
#: every model feature (a test checks none is missing): the API's reasons, the batch-scoring file
#: and the report's drivers all read it. The name is used when the value is missing.
REASONS: dict[str, tuple[str, str, Callable[[Mapping[str, Any], Any], str]]] = {
    # order facts
    "category": ("category", "报修类别", lambda f, v: f"报修类别：{CATEGORY_ZH.get(str(v), v)}"),
    "priority": ("priority", "紧急程度", lambda f, v: f"紧急程度：{PRIORITY_ZH.get(str(v), v)}"),
    "channel": ("channel", "报修渠道", lambda f, v: f"报修渠道：{CHANNEL_ZH.get(str(v), v)}"),
    "area_type": ("area_type", "户内/公区", lambda f, v: f"区域：{AREA_ZH.get(str(v), v)}"),
    "report_hour": ("report_hour", "报修时段", _fmt("{v:.0f}点报修")),
    "report_weekday": (
        "report_weekday",
        "报修星期",
        lambda f, v: f"星期{_WEEKDAYS[int(v) % 7]}报修",
    ),
    "report_month": ("report_season", "报修月份（季节）", _fmt("{v:.0f}月报修")),
    "complete_hour": ("complete_hour", "完工时段", _fmt("{v:.0f}点完工")),
    "report_night": ("night_report", "夜间报修", lambda f, v: "夜间报修" if v else "日间报修"),
    "report_holiday": (
        "holiday_report",
        "节假日报修",
        lambda f, v: "节假日报修" if v else "工作日报修",
    ),
    "report_offday": (
        "offday_report",
        "休息日报修",
        lambda f, v: "休息日报修" if v else "工作日报修",
    ),
    "paid": ("paid_service", "有偿维修", lambda f, v: "有偿维修" if v else "无偿维修"),
    "cost_yuan": ("cost", "维修费用", _fmt("维修收费{v:.0f}元")),
    "parts_replaced": ("parts_replaced", "更换配件", lambda f, v: "更换配件" if v else "未换配件"),
    "urge_count": ("urged", "催单次数", _fmt("催单{v:.0f}次")),
    "linked_rework": (
        "linked_rework",
        "关联返修单",
        lambda f, v: "本单为返修单" if v else "非返修单",
    ),
    # timeliness
    "dispatch_hours": ("dispatch_delay", "派工用时", _fmt("派工用时{v:.1f}小时")),
    "arrival_overdue": ("arrival_overdue", "上门超时", lambda f, v: _overdue(f)),
    "arrival_sla_ratio": ("arrival_overdue", "上门用时/时限", lambda f, v: _overdue(f)),
    "arrival_hours": ("arrival_slow", "上门用时", _fmt("上门用时{v:.1f}小时")),
    "arrival_vs_category": (
        "arrival_vs_category",
        "上门用时与同类均值之比",
        _fmt("上门用时为同类均值的{v:.1f}倍"),
    ),
    "repair_hours": ("repair_duration", "维修用时", _fmt("维修用时{v:.1f}小时")),
    "repair_vs_category": (
        "repair_vs_category",
        "维修用时与同类均值之比",
        _fmt("维修用时为同类均值的{v:.1f}倍"),
    ),
    "total_hours": ("total_duration", "报修到完工用时", _fmt("报修到完工{v:.1f}小时")),
    # the report's text
    "desc_len": ("desc_length", "报事描述长度", _fmt("报事描述{v:.0f}字")),
    "cue_repeat": (
        "desc_repeat",
        "描述提及反复故障",
        lambda f, v: "报事描述提及反复故障" if v else "描述未提及反复",
    ),
    "cue_annoyed": (
        "desc_annoyed",
        "描述带不满情绪",
        lambda f, v: "报事描述带不满情绪" if v else "描述平和",
    ),
    "cue_urgent": (
        "desc_urgent",
        "描述紧急",
        lambda f, v: "报事描述紧急" if v else "描述不紧急",
    ),
    "desc_sentiment": ("desc_sentiment", "报事描述情绪", _fmt("报事描述情绪得分{v:.2f}")),
    # the heads' own reading of the description (models.description): its log-odds, shown as
    # the probability the wording alone gives
    "desc_text_dissatisfied": (
        "desc_wording_dissatisfied",
        "描述措辞的不满意概率",
        _wording("不满意"),
    ),
    "desc_text_rework": ("desc_wording_rework", "描述措辞的返修概率", _wording("返修")),
    "desc_text_urgency": ("desc_wording_urgency", "描述措辞的紧急程度", _wording("加急")),
    # the home
    "unit_cat_orders_30d": (
        "unit_repeat_30d",
        "同户30天同类报修",
        _fmt("同户30天内同类报修{v:.0f}次"),
    ),
    "unit_cat_orders_90d": (
        "unit_repeat_90d",
        "同户90天同类报修",
        _fmt("同户90天内同类报修{v:.0f}次"),
    ),
    "unit_cat_orders_365d": (
        "unit_repeat_365d",
        "同户一年同类报修",
        _fmt("同户一年内同类报修{v:.0f}次"),
    ),
    "unit_cat_orders_all": (
        "unit_repeat_all",
        "同户同类累计报修",
        _fmt("同户同类累计报修{v:.0f}次"),
    ),
    "unit_cat_orders_per_year": (
        "unit_repeat_rate",
        "同户同类年均报修",
        _fmt("同户同类年均报修{v:.1f}次"),
    ),
    "unit_orders_365d": ("unit_orders_365d", "该户一年内报修", _fmt("该户一年内报修{v:.0f}次")),
    "unit_orders_all": ("unit_orders_all", "该户累计报修", _fmt("该户累计报修{v:.0f}次")),
    "unit_orders_per_year": ("unit_orders_rate", "该户年均报修", _fmt("该户年均报修{v:.1f}次")),
    "unit_reworks_365d": ("unit_reworks_365d", "该户一年内返修", _fmt("该户一年内返修{v:.0f}次")),
    "unit_reworks_all": ("unit_reworks_all", "该户累计返修", _fmt("该户累计返修{v:.0f}次")),
    "unit_cat_reworks_365d": (
        "unit_cat_reworks",
        "该户同类一年内返修",
        _fmt("该户同类一年内返修{v:.0f}次"),
    ),
    "unit_rework_rate": ("unit_rework_rate", "该户返修率", lambda f, v: f"该户返修率{_pct(v)}"),
    "days_since_unit_cat_done": (
        "recent_same_repair",
        "距上次同类完工天数",
        _fmt("距上次同类完工{v:.0f}天"),
    ),
    "days_since_unit_cat_report": (
        "recent_same_report",
        "距上次同类报修天数",
        _fmt("距上次同类报修{v:.0f}天"),
    ),
    "history_days": ("unit_history_days", "该户有记录的时长", _fmt("该户有{v:.0f}天的报修记录")),
    "unit_proneness": (
        "unit_fault_prone",
        "该户故障倾向",
        lambda f, v: f"该户报修频率为一般住户的{_times(v)}",
    ),
    "unit_cat_proneness": (
        "unit_cat_fault_prone",
        "该户该类故障倾向",
        lambda f, v: f"该户同类报修频率为一般住户的{_times(v)}",
    ),
    "unit_other_cat_proneness": (
        "unit_other_fault_prone",
        "该户其他类别故障倾向",
        lambda f, v: f"该户其他类别报修频率为一般住户的{_times(v)}",
    ),
    "unit_rework_lift": (
        "unit_rework_lift",
        "该户返修偏高程度",
        lambda f, v: f"该户返修次数为预期的{_times(v)}",
    ),
    "building_proneness": (
        "building_fault_prone",
        "楼栋故障倾向",
        lambda f, v: f"所在楼栋报修频率为一般楼栋的{_times(v)}",
    ),
    "unit_proneness_in_building": (
        "unit_vs_building",
        "该户相对楼栋的故障倾向",
        lambda f, v: f"该户报修频率为同楼栋住户的{_times(v)}",
    ),
    "building_rework_lift": (
        "building_rework_lift",
        "楼栋返修偏高程度",
        lambda f, v: f"所在楼栋返修为预期的{_times(v)}",
    ),
    "cohort_proneness": (
        "cohort_fault_prone",
        "同楼龄房屋故障倾向",
        lambda f, v: f"同楼龄房屋报修频率为一般住户的{_times(v)}",
    ),
    "unit_proneness_in_cohort": (
        "unit_vs_cohort",
        "该户相对同楼龄房屋的故障倾向",
        lambda f, v: f"该户报修频率为同楼龄住户的{_times(v)}",
    ),
    "cohort_rework_lift": (
        "cohort_rework_lift",
        "同楼龄房屋返修偏高程度",
        lambda f, v: f"同楼龄房屋返修为预期的{_times(v)}",
    ),
    "vintage_proneness": (
        "vintage_fault_prone",
        "同年建成房屋故障倾向",
        lambda f, v: f"全部同年建成房屋报修频率为一般住户的{_times(v)}",
    ),
    "unit_proneness_in_vintage": (
        "unit_vs_vintage",
        "该户相对同年建成房屋的故障倾向",
        lambda f, v: f"该户报修频率为同年建成住户的{_times(v)}",
    ),
    "vintage_rework_lift": (
        "vintage_rework_lift",
        "同年建成房屋返修偏高程度",
        lambda f, v: f"同年建成房屋返修为预期的{_times(v)}",
    ),
    "unit_proneness_hier": (
        "unit_fault_prone",
        "该户故障倾向(以同年建成房屋为基准)",
        lambda f, v: f"该户报修频率估计为一般住户的{_times(v)}",
    ),
    "background_expected_hier": (
        "seasonal_expected",
        "该户当季预期报修(按楼龄校正)",
        _fmt("该户当季预计再报修{v:.2f}次"),
    ),
    "expected_rework": (
        "expected_rework",
        "按房屋、类别与维修人员估计的返修概率",
        lambda f, v: f"按房屋、类别与维修人员估计返修概率{_pct(v)}",
    ),
    "unit_prone_x_cat": (
        "unit_prone_x_cat",
        "该户故障倾向×类别返修率",
        lambda f, v: f"故障倾向与类别叠加的返修概率{_pct(v)}",
    ),
    "background_expected": (
        "seasonal_expected",
        "该户当季预期报修",
        _fmt("该户当季预计再报修{v:.2f}次"),
    ),
    "background_expected_cat": (
        "seasonal_expected_cat",
        "该户当季预期同类报修",
        _fmt("该户当季预计同类再报修{v:.2f}次"),
    ),
    "building_age": ("building_age", "楼龄", _fmt("楼龄{v:.0f}年")),
    "floor": ("floor", "楼层", _fmt("{v:.0f}层")),
    "area_m2": ("area", "房屋面积", _fmt("房屋面积{v:.0f}平方米")),
    # category and operation-wide context
    "global_rework_rate": (
        "global_rework_rate",
        "近期整体返修率",
        lambda f, v: f"近期整体返修率{_pct(v)}",
    ),
    "global_dissat_rate": (
        "global_dissat_rate",
        "近期整体不满意率",
        lambda f, v: f"近期整体不满意率{_pct(v)}",
    ),
    "category_rework_rate": (
        "category_rework_rate",
        "该类别近期返修率",
        lambda f, v: f"该类别近期返修率{_pct(v)}",
    ),
    "cat_rate_window": (
        "category_season",
        "该类别近期报修强度",
        _fmt("该类别近一个返修窗口内每户报修{v:.3f}次"),
    ),
    "cat_rate_window_last_year": (
        "category_season_last_year",
        "该类别去年同期报修强度",
        _fmt("该类别去年同期每户报修{v:.3f}次"),
    ),
    # the technician and the team
    "tech_rework_rate": (
        "tech_rework_rate",
        "维修人员历史返修率",
        lambda f, v: f"维修人员历史返修率{_pct(v)}",
    ),
    "tech_rework_rate_90d": (
        "tech_rework_recent",
        "维修人员近90天返修率",
        lambda f, v: f"维修人员近90天返修率{_pct(v)}",
    ),
    "tech_cat_rework_rate": (
        "tech_cat_rework_rate",
        "维修人员该类别返修率",
        lambda f, v: f"维修人员该类别返修率{_pct(v)}",
    ),
    "tech_cat_rework_hier": (
        "tech_cat_rework_rate",
        "维修人员该类别返修率（分层估计）",
        lambda f, v: f"维修人员该类别返修率{_pct(v)}",
    ),
    "tech_rework_oe": (
        "tech_rework_oe",
        "维修人员返修实际/预期比",
        lambda f, v: f"维修人员返修为预期的{_times(v)}",
    ),
    "tech_rework_oe_180d": (
        "tech_rework_oe_recent",
        "维修人员近180天返修实际/预期比",
        lambda f, v: f"维修人员近180天返修为预期的{_times(v)}",
    ),
    "tech_rework_known": (
        "tech_track_record",
        "维修人员已知返修结果的工单数",
        _fmt("维修人员有{v:.0f}单已知返修结果"),
    ),
    "tech_dissat_rate": (
        "tech_dissat_rate",
        "维修人员不满意率",
        lambda f, v: f"维修人员不满意率{_pct(v)}",
    ),
    "tech_quality_complaint_rate": (
        "tech_quality_complaints",
        "维修人员回访质量差评率",
        lambda f, v: f"维修人员回访中质量/复发差评占{_pct(v)}",
    ),
    "tech_quality_complaint_rate_recent": (
        "tech_quality_complaints",
        "维修人员近期回访质量差评率",
        lambda f, v: f"维修人员近期回访中质量/复发差评占{_pct(v)}",
    ),
    "tech_attitude_complaint_rate": (
        "tech_attitude_complaints",
        "维修人员回访态度差评率",
        lambda f, v: f"维修人员回访中态度差评占{_pct(v)}",
    ),
    "unit_quality_complaints": (
        "unit_quality_complaints",
        "该户回访提及维修质量问题",
        _fmt("该户此前回访提及维修质量问题{v:.0f}次"),
    ),
    "repair_time_z": (
        "repair_time_vs_norm",
        "维修用时与同类常规用时之差(标准差)",
        lambda f, v: f"维修用时比同类常规{'短' if v < 0 else '长'}{abs(v):.1f}个标准差",
    ),
    "desc_severity": (
        "desc_severity",
        "描述的故障严重程度",
        lambda f, v: (
            "报事描述故障严重" if v > 0 else ("报事描述问题轻微" if v < 0 else "描述未提严重程度")
        ),
    ),
    "tech_recent_reworks": (
        "tech_recent_reworks",
        "维修人员近期返修",
        _fmt("维修人员近期返修{v:.0f}次"),
    ),
    "tech_certified": (
        "tech_uncertified",
        "维修人员该类别持证",
        lambda f, v: "维修人员无该类别持证" if v == 0 else "维修人员持该类别证书",
    ),
    "tech_tenure_days": ("tech_tenure", "维修人员入职天数", _fmt("维修人员入职{v:.0f}天")),
    "tech_subcontractor": (
        "subcontractor",
        "外包维修人员",
        lambda f, v: "外包维修人员" if v else "自有维修人员",
    ),
    "tech_orders_workload": (
        "tech_workload",
        "维修人员24小时完工量",
        _fmt("维修人员24小时内完工{v:.0f}单"),
    ),
    "tech_orders": ("tech_experience", "维修人员累计完工", _fmt("维修人员累计完工{v:.0f}单")),
    "team_load_24h": ("team_load", "班组24小时人均工单", _fmt("班组24小时人均工单{v:.1f}")),
    "team_orders_today": ("team_orders_today", "班组当日工单", _fmt("班组当日工单{v:.0f}")),
    # the resident
    "res_dissat_rate": (
        "resident_dissat_rate",
        "报事人历史不满意率",
        lambda f, v: f"报事人历史不满意率{_pct(v)}",
    ),
    "res_dissat_known": ("resident_ratings", "报事人已知评价数", _fmt("报事人有{v:.0f}次已知评价")),
    "res_rated_share": (
        "resident_rated_share",
        "报事人评价比例",
        lambda f, v: f"报事人评价比例{_pct(v)}",
    ),
    "res_complaints": ("resident_complaints", "报事人历史投诉", _fmt("报事人历史投诉{v:.0f}次")),
    "res_mean_rating": ("resident_rating", "报事人历史平均评分", _fmt("报事人历史平均评分{v:.1f}")),
    "res_mean_urge": ("resident_urging", "报事人平均催单", _fmt("报事人平均催单{v:.1f}次")),
    "res_orders_365d": ("resident_orders", "报事人一年内报修", _fmt("报事人一年内报修{v:.0f}次")),
    "res_comment_sentiment": (
        "resident_comments",
        "报事人历史评价情绪",
        _fmt("报事人历史评价情绪{v:.2f}"),
    ),
    # the community
    "comm_dissat_rate": (
        "community_dissat_rate",
        "小区不满意率",
        lambda f, v: f"小区不满意率{_pct(v)}",
    ),
    "comm_rework_rate": (
        "community_rework_rate",
        "小区返修率",
        lambda f, v: f"小区返修率{_pct(v)}",
    ),
    "comm_orders_workload": (
        "community_load",
        "小区24小时报修量",
        _fmt("小区24小时报修{v:.0f}单"),
    ),
    "comm_orders_7d": ("community_load_7d", "小区7天报修量", _fmt("小区7天报修{v:.0f}单")),
    "comm_cat_orders_30d": (
        "community_cat_load",
        "小区该类30天报修量",
        _fmt("小区该类30天报修{v:.0f}单"),
    ),
    "comm_cat_intensity": (
        "community_cat_surge",
        "小区该类报修强度",
        lambda f, v: f"小区该类近30天报修为平常的{_times(v)}",
    ),
}

#: feature -> (code, wording): the view most consumers need.
REASON_TEXTS: dict[str, tuple[str, Callable[[Mapping[str, Any], Any], str]]] = {
    k: (code, fn) for k, (code, _name, fn) in REASONS.items()
}
#: feature -> Chinese name (report drivers, missing values).
FEATURE_NAMES_ZH: dict[str, str] = {k: name for k, (_c, name, _f) in REASONS.items()}


def reason_item(
    feature: str,
    row: Mapping[str, Any],
    contribution: float,
    memo: dict[tuple[str, type, Any], tuple[str, str, Any]] | None = None,
) -> dict[str, Any]:
    """One reason: code, Chinese text, feature, value, log-odds contribution (both heads).

    A missing value reads "<中文名>未知" (e.g. a technician without a certification record):
    the reason is that the information is absent, which a quality team can act on.

    ``memo``: wordings already made in this batch, by feature and value (a batch of 10,000
    orders has ~30,000 reasons but a few thousand distinct ones); not for the features whose
    wording reads other cells of the row (``_READS_ROW``) nor for values it could confuse.
    """
    return _reason(feature, row, row.get(feature), round(float(contribution), DIGITS), memo)


def _reason(
    feature: str,
    row: Mapping[str, Any],
    v: Any,
    rounded: float,
    memo: dict[tuple[str, type, Any], tuple[str, str, Any]] | None,
) -> dict[str, Any]:
    """:func:`reason_item` of the feature's value ``v`` read by the caller (``row[feature]``).

    ``rounded``: the contribution as shown, ``round(contribution, DIGITS)``.
    """
    value: Any = None if v is None or (isinstance(v, float) and v != v) else v  # NaN: missing
    if isinstance(value, np.generic):
        value = value.item()
    kind = type(value)
    if (
        memo is None
        or feature in _READS_ROW
        or kind not in _MEMO_TYPES
        or (kind is float and value == 0.0)  # 0.0 and -0.0 are one key but two texts
    ):
        code, text, shown = _wording(feature, row, value)
    else:
        key = (feature, kind, value)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = _wording(feature, row, value)
        code, text, shown = hit
    return {
        "code": code,
        "text": text,
        "feature": feature,
        "value": shown,
        "contribution": rounded,
    }


#: Features whose wording reads other cells of the order's row (the arrival context), so their
#: text is not a function of their own value (a test checks that no other wording reads it).
_READS_ROW = frozenset({"arrival_overdue", "arrival_sla_ratio"})
#: Value types a wording memo keys on (hashable, compared by value).
_MEMO_TYPES = frozenset({str, int, float, bool, type(None)})


def _wording(feature: str, row: Mapping[str, Any], value: Any) -> tuple[str, str, Any]:
    """Reason code, Chinese text and the value as shown, of a feature's (present) value."""
    code, name, fn = REASONS.get(feature, (feature, feature, None))  # type: ignore[arg-type]
    if value is None:
        text = f"{name}未知"
    elif fn is None:
        text = f"{name}={value}"
    else:
        try:
            text = fn(row, value)
        except (TypeError, ValueError):
            text = f"{name}：{value}"
    return code, text, value if not isinstance(value, float) else round(value, DIGITS)


def round_like_python(a: np.ndarray, ndigits: int) -> np.ndarray:
    """``round(x, ndigits)`` of every element, equal to Python's ``round`` of each float.

    Why: Python's ``round`` is correctly rounded (half-even on the exact binary value) but
    costs ~0.7 us per call. ``rint(x * 10**n) / 10**n`` gives the same integer ``k`` and the
    same double ``k / 10**n`` (a correctly rounded IEEE division) except where ``x * 10**n`` is
    within rounding error of a half-integer, or too large to tell; those elements (rare), and
    non-finite ones, are rounded by Python.
    """
    if a.size <= _ROUND_IN_PYTHON:  # one order's candidates: numpy's fixed cost is more
        return np.array([round(x, ndigits) for x in a.ravel().tolist()]).reshape(a.shape)
    scale = 10.0**ndigits
    with np.errstate(over="ignore", invalid="ignore"):  # inf / NaN: rounded by Python below
        p = a * scale
        out = np.rint(p) / scale
        unsure = ~(np.abs(p) < _SURE_BELOW) | (np.abs(np.abs(p - np.floor(p)) - 0.5) < _SURE_GAP)
    for idx in zip(*np.nonzero(unsure), strict=True):
        out[idx] = round(float(a[idx]), ndigits)
    return out


#: :func:`round_like_python` trusts numpy below this magnitude of ``x * 10**n`` (the product's
#: error, ~1e-7 there, is far below ``_SURE_GAP``) and when the product is not within
#: ``_SURE_GAP`` of a half-integer.
_SURE_BELOW = 2.0**30
#: Up to this many elements, :func:`round_like_python` calls ``round`` per element.
_ROUND_IN_PYTHON = 64
_SURE_GAP = 1e-6


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
    #: The same tables as Python lists, for :meth:`lookup` of a few rows (built on first use).
    _lists: list[tuple[list[float], list[float], float]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

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
        if len(M) <= _SCALAR_ROWS:
            return self._lookup_scalar(M)
        out = np.empty_like(M)
        for j in range(M.shape[1]):
            x = M[:, j]
            b = np.searchsorted(self.edges[j], np.nan_to_num(x), side="right")
            out[:, j] = np.where(np.isnan(x), self.nan_means[j], self.means[j][b])
        return out

    def _lookup_scalar(self, M: np.ndarray) -> np.ndarray:
        """:meth:`lookup` in Python floats (a few rows).

        Why: a single API order has ~100 features, and three numpy calls per feature on one
        element cost ~0.5 ms. ``bisect_right`` on the same edges is
        ``searchsorted(side="right")``; ±inf is clipped as ``nan_to_num`` does.
        """
        tables = self._lists
        if tables is None:
            tables = self._lists = [
                (e.tolist(), m.tolist(), float(n))
                for e, m, n in zip(self.edges, self.means, self.nan_means, strict=True)
            ]
        out = np.empty_like(M)
        for i, row in enumerate(M.tolist()):
            out[i] = [
                n if x != x else m[bisect.bisect_right(e, min(max(x, -_BIG), _BIG))]
                for x, (e, m, n) in zip(row, tables, strict=True)
            ]
        return out


#: Up to this many rows, :meth:`BinnedContributions.lookup` works in Python scalars.
_SCALAR_ROWS = 4
_BIG = float(np.finfo(float).max)


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
        """Up to ``k`` positive contributions per order, largest first (no ``CONTEXT_FEATURES``).

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
        context = [j for j, name in enumerate(names) if name in CONTEXT_FEATURES]
        if context:  # never a reason (``contrib`` is this call's own array)
            contrib[:, context] = 0.0
        # a few spare candidates: features sharing a code (the SLA ratio and the overrun say the
        # same thing) are one reason, the first and largest of them
        order = np.argsort(-contrib, axis=1)[:, : k + _SPARE]
        # the candidates' contributions as Python floats (numpy scalar access is ~10x slower),
        # and as shown (Python's ``round`` costs ~0.7 us per call: ~20 ms of 10,000 orders)
        top_contrib = np.take_along_axis(contrib, order, axis=1)
        values = top_contrib.tolist()
        shown = round_like_python(top_contrib, DIGITS).tolist()
        # column arrays once: per-row DataFrame access would cost ~50 us per order
        needed = {names[j] for j in np.unique(order)} | set(_CONTEXT)
        cols = {c: features[c].to_numpy() for c in needed if c in features}
        # a reason's code depends on its feature only: a candidate whose code is taken already
        # is skipped before its wording is made. Its cell comes from the column as a Python
        # list (``tolist`` converts as ``.item()`` does, ~10x faster than a numpy scalar read
        # per cell); the arrival wordings read their context from ``row`` as before.
        codes = [REASON_TEXTS.get(f, (f, None))[0] for f in names]
        cells: dict[str, list[Any]] = {}
        out: list[list[dict[str, Any]]] = []
        memo: dict[tuple[str, type, Any], tuple[str, str, Any]] = {}  # this batch's wordings
        for i, (top, tops, tops_shown) in enumerate(
            zip(order.tolist(), values, shown, strict=True)
        ):
            row = _Row(cols, i)  # the few cells a wording reads, not a dict of every column
            items: list[dict[str, Any]] = []
            seen: set[str] = set()
            for j, c, c_shown in zip(top, tops, tops_shown, strict=True):
                if c <= 0 or len(items) == k:
                    break
                if codes[j] in seen:
                    continue
                seen.add(codes[j])
                name = names[j]
                cell = cells.get(name)
                if cell is None:
                    col = cols.get(name)
                    cell = cells[name] = [None] * len(order) if col is None else col.tolist()
                items.append(_reason(name, row, cell[i], c_shown, memo))
            out.append(items)
        return out


class _Row(Mapping[str, Any]):
    """One order's feature values, read lazily from the batch's columns (``row.get(name)``).

    Why: a wording reads its own feature and at most the arrival context; a dict of every
    candidate column per order cost ~7 us per order (a 10,000-order batch: ~70 ms).
    """

    __slots__ = ("cols", "i")

    def __init__(self, cols: dict[str, np.ndarray], i: int):
        self.cols = cols
        self.i = i

    def __getitem__(self, name: str) -> Any:
        return self.cols[name][self.i]

    def get(self, name: str, default: Any = None) -> Any:
        col = self.cols.get(name)
        return default if col is None else col[self.i]

    def __iter__(self) -> Any:
        return iter(self.cols)

    def __len__(self) -> int:
        return len(self.cols)


def format_reasons(items: list[dict[str, Any]]) -> str:
    """One order's reasons as a single cell: ``text (code)`` joined by ``"; "``.

    The batch-scoring file carries the same wording and codes as the API's ``reasons``; the
    code keeps the cell machine-readable (e.g. ``同户90天内同类报修2次 (unit_repeat_90d)``).
    """
    return "; ".join(f"{r['text']} ({r['code']})" for r in items)
