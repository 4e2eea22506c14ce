"""Contract keys NOT NULL: ``orders.order_id``, ``technicians.technician_id``, ``units.unit_id``.

Why: 0001 declared these primary keys nullable. PostgreSQL makes every primary key column NOT
NULL anyway, so there the tables and the migrations disagreed (autogenerate saw a change), and
SQLite, which keeps a legacy exception for non-integer primary keys, would store an order with a
NULL id. A no-op on PostgreSQL; on SQLite the three tables are copied (batch mode). A stored
row with a NULL key (never written by the service: the contract requires the ids) makes the
upgrade fail instead of being dropped.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 12:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEYS = (("orders", "order_id"), ("technicians", "technician_id"), ("units", "unit_id"))


def upgrade() -> None:
    """Upgrade schema."""
    for table, key in _KEYS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(key, existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    """Downgrade schema (PostgreSQL keeps its primary keys NOT NULL whatever is declared)."""
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, key in _KEYS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(key, existing_type=sa.String(length=64), nullable=True)
