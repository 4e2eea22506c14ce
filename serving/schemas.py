"""API models, derived from the contract in :mod:`models.schemas` (not retyped).

Request fields accept what the contract's files accept (``"是"`` for a boolean, a timestamp with
or without offset) and are typed loosely on purpose: the contract checks belong to
``models.validation`` so that a bad field gets the same ``field:problem`` reason through the
API as in a file's quarantine.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    create_model,
    model_validator,
)
from typing_extensions import TypedDict

from models.schemas import CATEGORIES, ORDERS, TECHNICIANS, UNITS, Column, Table

_LOOSE: dict[str, Any] = {
    "string": str | None,
    "text": str | None,
    "enum": str | None,
    "timestamp": str | None,
    "date": str | None,
    "list": str | None,
    "bool": bool | str | int | None,
    "int": int | float | str | None,
    "float": float | int | str | None,
}


def _describe(c: Column) -> str:
    parts = [c.meaning]
    if c.enum:
        parts.append("one of: " + ", ".join(c.enum))
    if c.min is not None or c.max is not None:
        parts.append(f"range [{c.min}, {c.max}]")
    if c.required:
        parts.append("required")
    if c.outcome:
        parts.append("outcome: stored as history, never an input of this order's own score")
    return "; ".join(parts)


def _model(table: Table, name: str, example: dict[str, Any]) -> type[BaseModel]:
    fields = {
        c.name: (_LOOSE[c.dtype], Field(None, description=_describe(c))) for c in table.columns
    }
    return create_model(  # type: ignore[call-overload]
        name,
        __config__=ConfigDict(extra="ignore", json_schema_extra={"examples": [example]}),
        __doc__=f"One row of the contract's {table.name} table ({table.doc}).",
        **fields,
    )


ORDER_EXAMPLE: dict[str, Any] = {
    "order_id": "WO202405010001",
    "community_id": "C001",
    "unit_id": "C001-3-2-1201",
    "area_type": "indoor",
    "resident_id": "R88231",
    "channel": "app",
    "category": "plumbing",
    "priority": "urgent",
    "description": "卫生间水管又漏水了，上次修完没几天，楼下说天花板在滴水，请尽快处理",
    "reported_at": "2024-05-01 21:40:00",
    "dispatched_at": "2024-05-01 21:55:00",
    "arrived_at": "2024-05-02 02:10:00",
    "completed_at": "2024-05-02 03:20:00",
    "status": "completed",
    "technician_id": "T017",
    "paid": False,
    "cost_yuan": 0,
    "parts_replaced": True,
    "urge_count": 2,
    "parent_order_id": None,
}
TECHNICIAN_EXAMPLE = {
    "technician_id": "T017",
    "team": "水电一班",
    "hire_date": "2023-03-01",
    "certifications": "plumbing;electrical",
    "employment": "in_house",
}
UNIT_EXAMPLE = {
    "unit_id": "C001-3-2-1201",
    "community_id": "C001",
    "building_year": 2008,
    "floor": 12,
    "area_m2": 89.5,
}


def _typed_dict(table: Table, name: str, example: dict[str, Any]) -> type:
    """:func:`_model` as a ``TypedDict``: the same fields, documentation and examples.

    Why for the orders: a 10,000-order request validated into models and dumped back to dicts
    for the contract checks cost ~56 ms; a ``TypedDict`` validates to dicts at once (~17 ms).
    Absent fields are absent from the dict (:data:`ORDER_NONE` fills them, as ``model_dump``
    did).
    """
    fields = {
        c.name: Annotated[  # type: ignore[valid-type]
            _LOOSE[c.dtype],
            Field(description=_describe(c), json_schema_extra={"default": None}),
        ]
        for c in table.columns
    }
    td = TypedDict(name, fields, total=False)  # type: ignore[operator]
    td.__doc__ = f"One row of the contract's {table.name} table ({table.doc})."
    td.__pydantic_config__ = ConfigDict(  # type: ignore[attr-defined]
        extra="ignore", json_schema_extra={"examples": [example]}
    )
    return cast(type, td)


OrderIn = _typed_dict(ORDERS, "OrderIn", ORDER_EXAMPLE)
#: An order with every contract field ``None`` (a validated order's absent fields).
ORDER_NONE: dict[str, Any] = dict.fromkeys(ORDERS.names)
TechnicianIn = _model(TECHNICIANS, "TechnicianIn", TECHNICIAN_EXAMPLE)
UnitIn = _model(UNITS, "UnitIn", UNIT_EXAMPLE)


class ScoreRequest(BaseModel):
    """Completed orders to score (1 to the service's ``max_batch``), optional master data."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "orders": [ORDER_EXAMPLE],
                    "technicians": [TECHNICIAN_EXAMPLE],
                    "units": [UNIT_EXAMPLE],
                }
            ]
        }
    )
    orders: list[OrderIn] = Field(..., description="Completed work orders (报修工单).")  # type: ignore[valid-type]
    technicians: list[TechnicianIn] | None = Field(None, description="维修人员 (optional).")  # type: ignore[valid-type]
    units: list[UnitIn] | None = Field(None, description="房屋 (optional).")  # type: ignore[valid-type]


class Reason(BaseModel):
    """A feature that pushed the risk up, in business language."""

    code: str = Field(..., examples=["unit_repeat_90d"])
    text: str = Field(..., examples=["同户90天内同类报修2次"])
    feature: str
    value: Any = None
    contribution: float = Field(..., description="Log-odds added, summed over both heads.")


class InspectionReason(BaseModel):
    """Why an order must be inspected: a hard rule or a model signal."""

    code: str = Field(..., examples=["fire_safety"])
    source: str = Field(..., description="`rule` or `model`.")
    text: str = Field(..., examples=["消防类工单必检"])


class Decision(BaseModel):
    """The whole decision on one order, as recorded in the audit store."""

    decision_id: str
    order_id: str
    rework_risk: float
    dissatisfaction_prob: float
    risk_level: str = Field(..., description="low / medium / high")
    mandatory_inspection: bool
    inspection_reasons: list[InspectionReason]
    third_party_sample: bool
    inclusion_probability: float
    reasons: list[Reason]
    model_versions: dict[str, str]
    policy_version: str
    created_at: str
    replayed: bool = Field(False, description="True when this is a previously recorded decision.")


class Rejected(BaseModel):
    """A rejected order: its position, id and every defect as ``field:problem``."""

    index: int
    order_id: str | None
    errors: list[str]
    message: str


class ScoreResponse(BaseModel):
    """Decisions in request order; with ``partial=true`` also the rejected orders."""

    decisions: list[Decision]
    rejected: list[Rejected] = Field(default_factory=list)


class ModelInfo(BaseModel):
    """What is being served."""

    name: str
    version: str
    alias: str | None
    source: str
    run_id: str | None
    trained_until: str | None
    heads: dict[str, str]
    metrics: dict[str, float]
    reasons_mode: str
    policy_version: str


# --------------------------------------------------------------------------------------------
# Quality loop (质量闭环): outcomes, inspection queue, rectification, appeals
# --------------------------------------------------------------------------------------------

#: Longest id-like field (inspector, owner, technician, defect code): the store's id length.
_ID = 64
#: Longest free text (comment, notes, reason, evidence item).
_TEXT = 2000
#: Most outcomes (follow-ups + inspections) in one request.
MAX_OUTCOMES = 10_000
#: Most defect codes / photos / evidence items on one record.
_ITEMS = 50


def _no_nul(value: str) -> str:
    """Refuse a NUL character (code point 0): PostgreSQL text cannot hold one.

    The insert failed there (a 500) while SQLite stored it; now a 422 names the field on
    every backend.
    """
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


_Id = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=_ID),
    AfterValidator(_no_nul),
]
_Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=_TEXT),
    AfterValidator(_no_nul),
]
_Url = Annotated[str, AfterValidator(lambda v: _http_url(v))]


def _http_url(value: str) -> str:
    """A photo / evidence link must be an absolute http(s) URL (files live elsewhere)."""
    AnyHttpUrl(value)  # raises a ValueError naming the problem
    return value


class _Strict(BaseModel):
    """Unknown fields are errors: a typo (``ratting``) must not be dropped silently."""

    model_config = ConfigDict(extra="forbid")


FOLLOWUP_EXAMPLE: dict[str, Any] = {
    "order_id": "WO202405010001",
    "rating": 2,
    "comment": "修完第二天又开始滴水，师傅也没留联系方式",
    "complaint": True,
    "followed_up_at": "2024-05-04 10:30:00",
    "source": "客服回访",
}
INTERNAL_EXAMPLE: dict[str, Any] = {
    "order_id": "WO202405010001",
    "kind": "internal",
    "passed": False,
    "defect_codes": ["leak_remains", "site_not_cleaned"],
    "inspector": "质检员-张伟",
    "notes": "接口处仍有渗水，现场未清理",
    "photos": ["https://files.example.com/qc/WO202405010001/1.jpg"],
    "inspected_at": "2024-05-02 15:00:00",
}
THIRD_PARTY_EXAMPLE: dict[str, Any] = {
    "order_id": "WO202405010002",
    "kind": "third_party",
    "passed": True,
    "defect_codes": [],
    "inspector": "李工",
    "agency": "上海建科工程质量检测有限公司",
    "notes": "维修到位，业主认可",
    "photos": [],
    "inspected_at": "2024-05-06 09:20:00",
}


class FollowupIn(_Strict):
    """A follow-up result (回访): at least one of rating, comment, complaint."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [FOLLOWUP_EXAMPLE]})
    order_id: _Id
    rating: int | None = Field(None, ge=1, le=5, description="回访评价 5 非常满意 … 1 非常不满意")
    comment: _Text | None = Field(None, description="业主意见 (free text)")
    complaint: bool | None = Field(None, description="a complaint was filed (投诉)")
    followed_up_at: dt.datetime = Field(..., description="回访时间; no offset = Asia/Shanghai")
    source: _Id | None = Field(None, description="who recorded it (客服, 系统名)")

    @model_validator(mode="after")
    def _something(self) -> FollowupIn:
        if self.rating is None and self.comment is None and self.complaint is None:
            raise ValueError("give at least one of rating, comment, complaint")
        return self


class InspectionIn(_Strict):
    """An inspection result: internal (内部质检) or third-party (第三方抽检, needs ``agency``).

    A failed inspection names at least one defect code (what to rectify).
    """

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [INTERNAL_EXAMPLE, THIRD_PARTY_EXAMPLE]}
    )
    order_id: _Id
    kind: Literal["internal", "third_party"]
    passed: StrictBool = Field(..., description="合格 true / 不合格 false")
    defect_codes: list[_Id] = Field(default_factory=list, max_length=_ITEMS)
    inspector: _Id = Field(..., description="质检员")
    agency: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = Field(  # noqa: E501
        None, description="第三方机构 (third_party only, required there)"
    )
    notes: _Text | None = None
    photos: list[_Url] = Field(default_factory=list, max_length=_ITEMS, description="照片 URL")
    inspected_at: dt.datetime = Field(..., description="质检时间; no offset = Asia/Shanghai")
    source: _Id | None = None

    @model_validator(mode="after")
    def _consistent(self) -> InspectionIn:
        if self.kind == "third_party" and self.agency is None:
            raise ValueError("agency: required for a third_party result")
        if self.kind == "internal" and self.agency is not None:
            raise ValueError("agency: only third_party results name an agency")
        if not self.passed and not self.defect_codes:
            raise ValueError("defect_codes: a failed inspection needs at least one defect code")
        return self


class OutcomesIn(_Strict):
    """Outcomes to record (1 to 10,000 in total); the request is atomic (all or nothing)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"followups": [FOLLOWUP_EXAMPLE], "inspections": [INTERNAL_EXAMPLE]},
                {"inspections": [THIRD_PARTY_EXAMPLE]},
            ]
        },
    )
    followups: list[FollowupIn] = Field(default_factory=list, max_length=MAX_OUTCOMES)
    inspections: list[InspectionIn] = Field(default_factory=list, max_length=MAX_OUTCOMES)

    @model_validator(mode="after")
    def _not_empty(self) -> OutcomesIn:
        n = len(self.followups) + len(self.inspections)
        if not n:
            raise ValueError("give at least one follow-up or inspection")
        if n > MAX_OUTCOMES:
            raise ValueError(f"at most {MAX_OUTCOMES} outcomes per request (got {n})")
        return self


class Recorded(BaseModel):
    """One recorded outcome: its id and whether the same content was already recorded."""

    id: int
    order_id: str
    duplicate: bool


class OutcomesOut(BaseModel):
    """What was recorded; ``duplicate`` entries were identical re-sends (nothing added)."""

    recorded: int
    duplicates: int
    followups: list[Recorded]
    inspections: list[Recorded]


class AssignIn(_Strict):
    """Send an inspector to a flagged order (指派质检员)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"inspector": "质检员-张伟"}]}
    )
    inspector: _Id


class QueueCounts(BaseModel):
    """Items of the queue per status."""

    open: int
    assigned: int
    done: int
    overdue: int


class QueueItem(BaseModel):
    """A flagged order in the queue, with its expected harm and status."""

    decision_id: str
    order_id: str
    community_id: str | None
    category: str | None
    priority: str | None
    technician_id: str | None
    completed_at: str
    rework_risk: float
    dissatisfaction_prob: float
    severity: float
    expected_harm: float = Field(
        ..., description="max(rework_risk, dissatisfaction_prob) × severity"
    )
    status: Literal["open", "assigned", "done", "overdue"]
    assignee: str | None
    due_at: str
    inspection_reasons: list[InspectionReason]
    reasons: list[Reason]


QUEUE_EXAMPLE: dict[str, Any] = {
    "date": "2024-05-02",
    "community": "C001",
    "capacity": 5,
    "counts": {"open": 1, "assigned": 0, "done": 0, "overdue": 0},
    "overflow": 0,
    "items": [
        {
            "decision_id": "9f2c1e7a4b3d4c55",
            "order_id": "WO202405010001",
            "community_id": "C001",
            "category": "plumbing",
            "priority": "urgent",
            "technician_id": "T017",
            "completed_at": "2024-05-02T03:20:00+08:00",
            "rework_risk": 0.42,
            "dissatisfaction_prob": 0.31,
            "severity": 3.0,
            "expected_harm": 1.26,
            "status": "open",
            "assignee": None,
            "due_at": "2024-05-04T03:20:00+08:00",
            "inspection_reasons": [
                {"code": "rework_order", "source": "rule", "text": "本单为返修单"},
                {
                    "code": "model_rework_risk",
                    "source": "model",
                    "text": "模型返修风险42%≥阈值35%",
                },
            ],
            "reasons": [
                {
                    "code": "unit_repeat_90d",
                    "text": "同户90天内同类报修2次",
                    "feature": "unit_cat_orders_90d",
                    "value": 2,
                    "contribution": 0.61,
                }
            ],
        }
    ],
}


class QueueOut(BaseModel):
    """The day's inspection queue (质检任务队列) of a community, or of all communities."""

    model_config = ConfigDict(json_schema_extra={"examples": [QUEUE_EXAMPLE]})

    date: str
    community: str | None
    capacity: int = Field(..., description="inspections per community per day (policy)")
    counts: QueueCounts
    overflow: int = Field(..., description="flagged orders beyond capacity (not listed)")
    items: list[QueueItem]


RECTIFICATION_EXAMPLE: dict[str, Any] = {
    "title": "C001 防水类返修偏高：闭水试验48小时后方可完工",
    "owner": "工程部-王经理",
    "deadline": "2024-06-30 18:00:00",
    "cause_category": "waterproofing",
    "cause_defect_code": "leak_remains",
    "cause_community_id": "C001",
    "source_order_id": "WO202405010001",
    "evidence": ["https://files.example.com/rx/plan.pdf"],
}


class RectificationIn(_Strict):
    """A rectification item (问题整改): what, who, by when, and the cause it targets."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [RECTIFICATION_EXAMPLE]}
    )
    title: _Text
    owner: _Id = Field(..., description="责任人")
    deadline: dt.datetime = Field(..., description="整改期限; no offset = Asia/Shanghai")
    cause_category: Literal[CATEGORIES] | None = None  # type: ignore[valid-type]
    cause_defect_code: _Id | None = None
    cause_technician_id: _Id | None = None
    cause_community_id: _Id | None = None
    source_order_id: _Id | None = None
    evidence: list[_Text] = Field(default_factory=list, max_length=_ITEMS, description="整改证据")

    @model_validator(mode="after")
    def _has_cause(self) -> RectificationIn:
        if not any(
            (self.cause_category, self.cause_defect_code, self.cause_technician_id,
             self.cause_community_id)
        ):  # fmt: skip
            raise ValueError(
                "cause: give at least one of cause_category, cause_defect_code, "
                "cause_technician_id, cause_community_id"
            )
        return self


class RectificationUpdate(_Strict):
    """Changes to an item; evidence is appended; a re-inspection result may move the status."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"status": "done", "evidence": ["https://files.example.com/rx/after.jpg"]},
                {
                    "reinspection_passed": True,
                    "reinspection_note": "复查合格",
                    "status": "verified",
                },
            ]
        },
    )
    title: _Text | None = None
    owner: _Id | None = None
    deadline: dt.datetime | None = None
    status: Literal["open", "in_progress", "done", "verified"] | None = None
    cause_category: Literal[CATEGORIES] | None = None  # type: ignore[valid-type]
    cause_defect_code: _Id | None = None
    cause_technician_id: _Id | None = None
    cause_community_id: _Id | None = None
    evidence: list[_Text] = Field(default_factory=list, max_length=_ITEMS)
    reinspection_passed: StrictBool | None = Field(None, description="复查结果")
    reinspection_note: _Text | None = None


class RectificationOut(BaseModel):
    """A rectification item; ``status`` is ``overdue`` past the deadline while not done."""

    rectification_id: str
    title: str
    owner: str
    deadline: str
    status: Literal["open", "in_progress", "done", "verified", "overdue"]
    stored_status: str
    cause_category: str | None
    cause_defect_code: str | None
    cause_technician_id: str | None
    cause_community_id: str | None
    source_order_id: str | None
    evidence: list[str]
    reinspection_passed: bool | None
    reinspection_note: str | None
    reinspected_at: str | None
    done_at: str | None
    created_at: str
    updated_at: str
    history: list[dict[str, Any]] | None = Field(None, description="every change, oldest first")


class AppealIn(_Strict):
    """A technician's appeal (申诉) of an inspection result or of a label of an order.

    ``target``: ``inspection`` (default) disputes a failed result (``inspection_id``);
    ``rework`` disputes the rework link of ``order_id`` (the earlier order: the repeat was a
    different fault or caused by the resident); ``dissatisfaction`` disputes the order's
    dissatisfaction (the complaint or low rating was not about the repair). An upheld label
    appeal sets that label to 0 in dossiers, reports and retraining.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "inspection_id": 12,
                    "technician_id": "T017",
                    "reason": "渗水来自楼上住户管道，不是本次维修的部位，有现场照片为证",
                },
                {
                    "target": "rework",
                    "order_id": "WO000123",
                    "technician_id": "T017",
                    "reason": "返修单是卫生间地漏堵塞，与上次更换的厨房水龙头不是同一故障",
                },
                {
                    "target": "dissatisfaction",
                    "order_id": "WO000456",
                    "technician_id": "T017",
                    "reason": "业主投诉的是物业停车收费，与本次维修无关，有回访录音为证",
                },
            ]
        },
    )
    target: Literal["inspection", "rework", "dissatisfaction"] = Field(
        "inspection",
        description="what is appealed: inspection result, rework link, dissatisfaction",
    )
    inspection_id: int | None = Field(None, ge=1, description="target inspection: the result")
    order_id: _Id | None = Field(None, description="target rework / dissatisfaction: the order")
    technician_id: _Id
    reason: _Text

    @model_validator(mode="after")
    def _addressed(self) -> AppealIn:
        if self.target == "inspection":
            if self.inspection_id is None:
                raise ValueError("inspection_id: required when target is inspection")
            if self.order_id is not None:
                raise ValueError("order_id: not allowed when target is inspection")
        else:
            if self.order_id is None:
                raise ValueError(f"order_id: required when target is {self.target}")
            if self.inspection_id is not None:
                raise ValueError(f"inspection_id: not allowed when target is {self.target}")
        return self


class AppealDecisionIn(_Strict):
    """A reviewer's final decision: ``upheld`` overturns the result or overrides the label."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"decision": "upheld", "reviewer": "品质部-刘经理", "note": "复核属实，撤销不合格"}
            ]
        },
    )
    decision: Literal["upheld", "rejected"]
    reviewer: _Id
    note: _Text | None = None


class AppealOut(BaseModel):
    """An appeal and, once decided, its decision."""

    appeal_id: str
    target: Literal["inspection", "rework", "dissatisfaction"]
    inspection_id: int | None
    order_id: str
    rework_order_id: str | None = Field(None, description="target rework: the disputed repeat")
    technician_id: str
    reason: str
    status: Literal["pending", "upheld", "rejected"]
    submitted_at: str
    reviewer: str | None
    decision_note: str | None
    decided_at: str | None
