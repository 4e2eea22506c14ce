"""The repairqc order data contract (v1), declared once.

Every other part of repairqc derives from these declarations: validation (``models.validation``),
typing of valid rows, the API models, the feature builder (which must never read an
``outcome`` column of the order being scored) and the contract documentation
(``docs/order-data-contract.md``; ``contract_markdown`` renders the column tables).

The contract says timestamps without an offset are Asia/Shanghai local time; typed frames carry
timezone-aware ``datetime64[ns, Asia/Shanghai]`` columns so that orders from systems that export
offsets and systems that export local time compare correctly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TIMEZONE = "Asia/Shanghai"

DType = Literal["string", "text", "enum", "timestamp", "date", "bool", "int", "float", "list"]

AREA_TYPES = ("indoor", "public")
CHANNELS = ("app", "phone", "wechat", "walk_in", "patrol")
CATEGORIES = (
    "plumbing",
    "electrical",
    "hvac",
    "fire_safety",
    "door_window",
    "waterproofing",
    "wall_floor",
    "elevator",
    "public_facility",
    "other",
)
PRIORITIES = ("normal", "urgent", "emergency")
STATUSES = ("open", "dispatched", "in_progress", "completed", "cancelled")
EMPLOYMENT = ("in_house", "subcontractor")

CATEGORY_ZH = {
    "plumbing": "水电-给排水",
    "electrical": "电气",
    "hvac": "暖通空调",
    "fire_safety": "消防",
    "door_window": "门窗",
    "waterproofing": "防水",
    "wall_floor": "墙地面",
    "elevator": "电梯",
    "public_facility": "公共设施",
    "other": "其他",
}
PRIORITY_ZH = {"normal": "一般", "urgent": "紧急", "emergency": "特急"}
CHANNEL_ZH = {"app": "App", "phone": "电话", "wechat": "微信", "walk_in": "前台", "patrol": "巡检"}
AREA_ZH = {"indoor": "户内", "public": "公区"}


@dataclass(frozen=True)
class Column:
    """One column of a contract table.

    ``outcome`` marks values that only exist after the order is completed (follow-up rating,
    comment, complaint); they are labels, never inputs of a completion-time score.
    """

    name: str
    dtype: DType
    required: bool
    meaning: str
    enum: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    outcome: bool = False


@dataclass(frozen=True)
class Table:
    """A contract table: its columns and its key."""

    name: str
    key: str
    columns: tuple[Column, ...]
    required_table: bool = True
    doc: str = ""
    by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # noqa: D401 - dataclass hook
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})

    @property
    def names(self) -> list[str]:
        """All column names in contract order."""
        return [c.name for c in self.columns]

    @property
    def required_names(self) -> list[str]:
        """Columns that must be present in a file and non-empty in every row."""
        return [c.name for c in self.columns if c.required]

    def of_type(self, *dtypes: DType) -> list[str]:
        """Names of the columns of the given types."""
        return [c.name for c in self.columns if c.dtype in dtypes]


ORDERS = Table(
    name="orders",
    key="order_id",
    doc="one row per work order",
    columns=(
        Column("order_id", "string", True, "unique id of the work order (工单编号)"),
        Column("community_id", "string", True, "project / residential community (项目/小区)"),
        Column("unit_id", "string", True, "the home (房号), or a public-area location id"),
        Column("area_type", "enum", True, "户内 / 公区", enum=AREA_TYPES),
        Column("resident_id", "string", False, "who reported it (报事人); empty for patrol/public"),
        Column("channel", "enum", True, "报事渠道", enum=CHANNELS),
        Column("category", "enum", True, "报修分类", enum=CATEGORIES),
        Column("priority", "enum", True, "紧急程度", enum=PRIORITIES),
        Column("description", "text", True, "the resident's report (报事内容)"),
        Column("reported_at", "timestamp", True, "报修时间"),
        Column("dispatched_at", "timestamp", False, "派工时间"),
        Column("arrived_at", "timestamp", False, "上门时间"),
        Column("completed_at", "timestamp", False, "完工时间"),
        Column("status", "enum", True, "工单状态", enum=STATUSES),
        Column("technician_id", "string", False, "who did the repair (维修人员)"),
        Column("paid", "bool", False, "paid service (有偿服务)"),
        Column("cost_yuan", "float", False, "amount charged", min=0.0),
        Column("parts_replaced", "bool", False, "parts or materials replaced"),
        Column("urge_count", "int", False, "times the resident chased the order (催单次数)", min=0),
        Column(
            "rating",
            "int",
            False,
            "follow-up satisfaction (回访评价: 5 非常满意 … 1 非常不满意)",
            min=1,
            max=5,
            outcome=True,
        ),
        Column("feedback_comment", "text", False, "resident's comment at follow-up", outcome=True),
        Column(
            "complaint",
            "bool",
            False,
            "a complaint was filed about this order (投诉)",
            outcome=True,
        ),
        Column(
            "parent_order_id",
            "string",
            False,
            "set when the source system links a rework order to the order it reworks",
        ),
    ),
)

TECHNICIANS = Table(
    name="technicians",
    key="technician_id",
    required_table=False,
    doc="optional",
    columns=(
        Column("technician_id", "string", True, "维修人员编号"),
        Column("team", "string", False, "班组"),
        Column("hire_date", "date", False, "入职日期"),
        Column(
            "certifications",
            "list",
            False,
            "`;`-separated categories the technician is qualified for (持证)",
            enum=CATEGORIES,
        ),
        Column("employment", "enum", False, "in-house or subcontractor", enum=EMPLOYMENT),
    ),
)

UNITS = Table(
    name="units",
    key="unit_id",
    required_table=False,
    doc="optional",
    columns=(
        Column("unit_id", "string", True, "房号 / location id"),
        Column("community_id", "string", False, "项目/小区"),
        Column(
            "building_year", "int", False, "year the building was completed", min=1900, max=2100
        ),
        Column("floor", "int", False, "楼层 (negative for basements)", min=-10, max=200),
        Column("area_m2", "float", False, "建筑面积", min=0.0, max=100000.0),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (ORDERS, TECHNICIANS, UNITS)}

#: Columns of an order that are outcomes: never features of that order's own score.
OUTCOME_COLUMNS: tuple[str, ...] = tuple(c.name for c in ORDERS.columns if c.outcome)

#: Order timestamps in lifecycle order; each must not precede the ones before it.
LIFECYCLE = ("reported_at", "dispatched_at", "arrived_at", "completed_at")


def contract_markdown(table: Table) -> str:
    """Render a table's columns as the Markdown table used in the contract docs."""
    lines = ["| column | type | required | meaning |", "|---|---|---|---|"]
    for c in table.columns:
        if c.enum and c.dtype == "enum":
            typ = " \\| ".join(f"`{v}`" for v in c.enum)
        else:
            typ = {"text": "string (Chinese free text)", "int": "integer", "float": "number"}.get(
                c.dtype, c.dtype
            )
            if c.min is not None or c.max is not None:
                lo = "" if c.min is None else f"{c.min:g}"
                hi = "" if c.max is None else f"{c.max:g}"
                typ += f" [{lo}, {hi}]"
        extra = " (outcome)" if c.outcome else ""
        lines.append(f"| {c.name} | {typ} | {'yes' if c.required else 'no'} | {c.meaning}{extra} |")
    return "\n".join(lines)
