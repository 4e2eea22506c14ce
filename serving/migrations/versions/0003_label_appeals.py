"""Appeals of labels: ``target`` (inspection | rework | dissatisfaction) and the disputed link.

Existing appeals are inspection appeals (``target`` defaults to ``inspection``); label appeals
have no inspection result, so ``inspection_id`` becomes nullable.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN_LABEL = "status IN ('pending', 'upheld') AND target <> 'inspection'"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("appeals", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("target", sa.String(length=16), nullable=False, server_default="inspection")
        )
        batch_op.add_column(sa.Column("rework_order_id", sa.String(length=64), nullable=True))
        batch_op.alter_column("inspection_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_index(
            "uq_appeals_open_label",
            ["order_id", "target"],
            unique=True,
            sqlite_where=sa.text(_OPEN_LABEL),
            postgresql_where=sa.text(_OPEN_LABEL),
        )


def downgrade() -> None:
    """Downgrade schema (label appeals, which have no inspection result, are dropped)."""
    op.execute("DELETE FROM appeals WHERE target <> 'inspection'")
    with op.batch_alter_table("appeals", schema=None) as batch_op:
        batch_op.drop_index("uq_appeals_open_label")
        batch_op.alter_column("inspection_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("rework_order_id")
        batch_op.drop_column("target")
