"""API models, derived from the contract in :mod:`models.schemas` (not retyped).

Request fields accept what the contract's files accept (``"是"`` for a boolean, a timestamp with
or without offset) and are typed loosely on purpose: the contract checks belong to
``models.validation`` so that a bad field gets the same ``field:problem`` reason through the
API as in a file's quarantine.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from models.schemas import ORDERS, TECHNICIANS, UNITS, Column, Table

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

OrderIn = _model(ORDERS, "OrderIn", ORDER_EXAMPLE)
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


class OutcomeIn(BaseModel):
    """A later outcome of a scored order (inspection result, rating, complaint)."""

    order_id: str
    kind: str = Field(..., examples=["inspection_result"], max_length=32)
    value: Any = Field(None, examples=[{"passed": False, "note": "防水层未做闭水试验"}])
    source: str | None = Field(None, examples=["third_party"], max_length=64)


class OutcomesIn(BaseModel):
    """Outcomes to record."""

    outcomes: list[OutcomeIn] = Field(..., min_length=1, max_length=10_000)
