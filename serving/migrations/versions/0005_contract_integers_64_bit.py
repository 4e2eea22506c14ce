"""Contract integers 64-bit: ``orders`` urge_count / rating, ``units`` building_year / floor.

Why: the contract bounds integers only by int64 (``urge_count`` has no maximum) and SQLite
stores 64-bit integers whatever the declared type, but PostgreSQL's INTEGER is 32-bit: an order
with more than 2,147,483,647 urges was accepted by validation and then failed the insert (a 500)
on PostgreSQL only. A no-op on SQLite (its INTEGER is already 64-bit; the tables declare
INTEGER there, ``with_variant``, so no table is copied).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 13:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("orders", "urge_count"),
    ("orders", "rating"),
    ("units", "building_year"),
    ("units", "floor"),
)


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in _COLUMNS:
        op.alter_column(table, column, existing_type=sa.Integer(), type_=sa.BigInteger())


def downgrade() -> None:
    """Downgrade schema (fails on PostgreSQL if a stored value needs 64 bits)."""
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in _COLUMNS:
        op.alter_column(table, column, existing_type=sa.BigInteger(), type_=sa.Integer())
