"""run history: the deployments each script has had, acknowledged failed runs

Revision ID: 0002_run_history
Revises: 0001
Create Date: 2026-11-29 10:00:00

Models: scriptflow_prefect/history.py (ScriptDeployment, RunAcknowledgement).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_run_history"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "script_deployments",
        sa.Column("script_id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["script_id"], ["scripts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("script_id", "deployment_id"),
    )
    op.create_table(
        "run_acknowledgements",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("script_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["script_id"], ["scripts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("run_acknowledgements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_run_acknowledgements_script_id"), ["script_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_run_acknowledgements_at"), ["at"], unique=False)
    # The deployments scripts have now; later ones are recorded as they are made.
    op.execute(
        "INSERT INTO script_deployments (script_id, deployment_id, seen_at) "
        "SELECT id, deployment_id, updated_at FROM scripts WHERE deployment_id IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("run_acknowledgements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_acknowledgements_at"))
        batch_op.drop_index(batch_op.f("ix_run_acknowledgements_script_id"))
    op.drop_table("run_acknowledgements")
    op.drop_table("script_deployments")
