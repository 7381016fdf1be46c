"""notification outbox: messages written down before their first try, retried for a day

Revision ID: 0006_notification_outbox
Revises: 0005_script_version_files
Create Date: 2026-12-02 07:30:00

Models: scriptflow_prefect/notifications/models.py (OutboxEntry).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_notification_outbox"
down_revision: str | Sequence[str] | None = "0005_script_version_files"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("dedupe_key", sa.String(length=300), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("script_id", sa.Integer(), nullable=True),
        sa.Column("recipient", sa.String(length=254), nullable=True),
        sa.Column("resource_id", sa.String(length=200), nullable=False),
        sa.Column("resource_name", sa.String(length=300), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=False),
        sa.Column("caused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_notification_outbox_status", ["status"], unique=False)
        batch_op.create_index("ix_notification_outbox_script_id", ["script_id"], unique=False)
        batch_op.create_index(
            "ix_notification_outbox_next_attempt_at", ["next_attempt_at"], unique=False
        )
        batch_op.create_index("ix_notification_outbox_done_at", ["done_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_outbox_done_at")
        batch_op.drop_index("ix_notification_outbox_next_attempt_at")
        batch_op.drop_index("ix_notification_outbox_script_id")
        batch_op.drop_index("ix_notification_outbox_status")
    op.drop_table("notification_outbox")
