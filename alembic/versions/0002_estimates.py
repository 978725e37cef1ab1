"""the estimate stated per run, the features known before each stage

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("estimate", sa.JSON(), nullable=True))
    with op.batch_alter_table("stage_executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("features", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stage_executions", schema=None) as batch_op:
        batch_op.drop_column("features")
    with op.batch_alter_table("pipeline_executions", schema=None) as batch_op:
        batch_op.drop_column("estimate")
