"""notification channels: which channels a script's notifications use

Revision ID: 0003_notification_channels
Revises: 0002_run_history
Create Date: 2026-12-02 01:30:00

Models: scriptflow_prefect/notifications/models.py (NotificationPref.channels; NULL = email).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_notification_channels"
down_revision: str | Sequence[str] | None = "0002_run_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notification_prefs") as batch:
        batch.add_column(sa.Column("channels", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notification_prefs") as batch:
        batch.drop_column("channels")
