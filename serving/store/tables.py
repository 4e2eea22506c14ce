"""Tables of the audit store (SQLAlchemy Core), the contract columns derived from the schema.

Order, technician and unit columns come from :mod:`models.schemas` (declared once); alembic
migrations under ``serving/migrations`` are frozen snapshots of this metadata, and a test checks
that the latest migration and this module agree.

Timestamps are stored in UTC (``DateTime(timezone=True)``): PostgreSQL keeps the offset, SQLite
keeps the naive UTC value, and the reader converts back to Asia/Shanghai either way.
"""

from __future__ import annotations

import sqlalchemy as sa

from models.sampling import POLICY_VERSION_LENGTH
from models.schemas import ORDERS, TECHNICIANS, UNITS, Table

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Longest id / enum value stored (ids in real exports are < 40 characters).
ID_LENGTH = 64
#: Length of a hex SHA-256 digest.
HASH_LENGTH = 64

_SQL_TYPES: dict[str, sa.types.TypeEngine] = {
    "string": sa.String(ID_LENGTH),
    "text": sa.Text(),
    "enum": sa.String(ID_LENGTH),
    "timestamp": sa.DateTime(timezone=True),
    "date": sa.Date(),
    "bool": sa.Boolean(),
    # 64-bit: the contract bounds integers by int64 only (urge_count has no maximum), and
    # PostgreSQL's INTEGER is 32-bit (an order with 3e9 urges was a 500 there; 0005). SQLite's
    # INTEGER is 64-bit already: declared as before, so its tables need no copy
    "int": sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
    "float": sa.Float(),
    "list": sa.Text(),
}


def _contract_columns(table: Table) -> list[sa.Column]:
    """One SQL column per contract column; the key is the primary key.

    The key is NOT NULL: PostgreSQL makes every primary key column so, and SQLite would
    otherwise accept a NULL key (migration 0004).
    """
    return [
        sa.Column(
            c.name,
            _SQL_TYPES[c.dtype],
            primary_key=c.name == table.key,
            nullable=c.name != table.key,
        )
        for c in table.columns
    ]


orders = sa.Table(
    "orders",
    metadata,
    *_contract_columns(ORDERS),
    sa.Column("input_hash", sa.String(HASH_LENGTH), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_orders_unit_id", "unit_id"),
    sa.Index("ix_orders_received_at", "received_at"),
    # 0002: children of an order, for the automatic rework links on every ingest
    sa.Index("ix_orders_parent_order_id", "parent_order_id"),
)

technicians = sa.Table(
    "technicians",
    metadata,
    *_contract_columns(TECHNICIANS),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)

units = sa.Table(
    "units",
    metadata,
    *_contract_columns(UNITS),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("decision_id", sa.String(32), primary_key=True),
    sa.Column("order_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("input_hash", sa.String(HASH_LENGTH), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("model_versions", sa.JSON(), nullable=False),
    sa.Column("policy_version", sa.String(POLICY_VERSION_LENGTH), nullable=False),
    sa.Column("rework_risk", sa.Float(), nullable=False),
    sa.Column("dissatisfaction_prob", sa.Float(), nullable=False),
    sa.Column("risk_level", sa.String(16), nullable=False),
    sa.Column("mandatory_inspection", sa.Boolean(), nullable=False),
    sa.Column("inspection_reasons", sa.JSON(), nullable=False),
    sa.Column("third_party_sample", sa.Boolean(), nullable=False),
    sa.Column("inclusion_probability", sa.Float(), nullable=False),
    sa.Column("draw_u", sa.Float(), nullable=False),
    sa.Column("reasons", sa.JSON(), nullable=False),
    sa.Column("community_id", sa.String(ID_LENGTH), nullable=True),
    sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # idempotency: one decision per order content and model; a re-score adds a row
    sa.UniqueConstraint(
        "order_id", "input_hash", "model_version", name="uq_decisions_order_input_model"
    ),
    sa.Index("ix_decisions_order_id", "order_id"),
    sa.Index("ix_decisions_created_at", "created_at"),
    # 0002: a community's decisions of a period (inspection queue, capacity slots)
    sa.Index("ix_decisions_community_id", "community_id", "completed_at"),
)

# Follow-up results (kind ``followup``: rating, comment, complaint) and automatic rework links
# (kind ``rework``: the later order that reworks this one) of stored orders. Append-only: a
# correction is a new row and the latest row of an order and kind wins for reads; identical
# re-sends are absorbed by the content hash (idempotent).
outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("value", sa.JSON(), nullable=True),
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    # 0002: when the outcome happened (follow-up call, rework report) and the idempotency key
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("content_hash", sa.String(HASH_LENGTH), nullable=True),
    sa.Index("ix_outcomes_order_id", "order_id"),
    sa.UniqueConstraint("order_id", "kind", "content_hash", name="uq_outcomes_content"),
)

# Inspection results (内部质检 ``internal`` / 第三方抽检 ``third_party``), append-only.
inspection_results = sa.Table(
    "inspection_results",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("passed", sa.Boolean(), nullable=False),
    sa.Column("defect_codes", sa.JSON(), nullable=False),
    sa.Column("inspector", sa.String(ID_LENGTH), nullable=False),
    sa.Column("agency", sa.String(200), nullable=True),
    sa.Column("notes", sa.Text(), nullable=True),
    sa.Column("photos", sa.JSON(), nullable=False),
    sa.Column("inspected_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("content_hash", sa.String(HASH_LENGTH), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_inspection_results_order_id", "order_id"),
    sa.UniqueConstraint("order_id", "kind", "content_hash", name="uq_inspection_results_content"),
)

# Who was sent to inspect a flagged order (append-only; the latest assignment wins).
inspection_assignments = sa.Table(
    "inspection_assignments",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("inspector", sa.String(ID_LENGTH), nullable=False),
    sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_inspection_assignments_order_id", "order_id"),
)

# Rectification items (问题整改): the current state; every change is also an event below.
rectifications = sa.Table(
    "rectifications",
    metadata,
    sa.Column("rectification_id", sa.String(32), primary_key=True),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("owner", sa.String(ID_LENGTH), nullable=False),
    sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("cause_category", sa.String(ID_LENGTH), nullable=True),
    sa.Column("cause_defect_code", sa.String(ID_LENGTH), nullable=True),
    sa.Column("cause_technician_id", sa.String(ID_LENGTH), nullable=True),
    sa.Column("cause_community_id", sa.String(ID_LENGTH), nullable=True),
    sa.Column("source_order_id", sa.String(ID_LENGTH), nullable=True),
    sa.Column("evidence", sa.JSON(), nullable=False),
    sa.Column("reinspection_passed", sa.Boolean(), nullable=True),
    sa.Column("reinspection_note", sa.Text(), nullable=True),
    sa.Column("reinspected_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

rectification_events = sa.Table(
    "rectification_events",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("rectification_id", sa.String(32), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("changes", sa.JSON(), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_rectification_events_rectification_id", "rectification_id"),
)

# Appeals (申诉) of inspection results or of the labels (rework link, dissatisfaction); a
# decision is final and recorded on the row. ``inspection_id`` only for target ``inspection``;
# ``rework_order_id`` the repeat order a ``rework`` appeal disputes (as linked when filed).
appeals = sa.Table(
    "appeals",
    metadata,
    sa.Column("appeal_id", sa.String(32), primary_key=True),
    sa.Column("inspection_id", sa.Integer(), nullable=True),
    sa.Column("order_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("target", sa.String(16), nullable=False, server_default="inspection"),
    sa.Column("rework_order_id", sa.String(ID_LENGTH), nullable=True),
    sa.Column("technician_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reviewer", sa.String(ID_LENGTH), nullable=True),
    sa.Column("decision_note", sa.Text(), nullable=True),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_appeals_inspection_id", "inspection_id"),
    # one open (pending) or upheld appeal per result, even under concurrent submissions
    sa.Index(
        "uq_appeals_open",
        "inspection_id",
        unique=True,
        sqlite_where=sa.text("status IN ('pending', 'upheld')"),
        postgresql_where=sa.text("status IN ('pending', 'upheld')"),
    ),
    # one open or upheld label appeal per order and target
    sa.Index(
        "uq_appeals_open_label",
        "order_id",
        "target",
        unique=True,
        sqlite_where=sa.text("status IN ('pending', 'upheld') AND target <> 'inspection'"),
        postgresql_where=sa.text("status IN ('pending', 'upheld') AND target <> 'inspection'"),
    ),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("key_hash", sa.String(HASH_LENGTH), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("note", sa.String(200), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)
