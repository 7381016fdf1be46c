"""power users: users an admin lets into the Prefect UI (admins always are)

Revision ID: 0007_power_users
Revises: 0006_notification_outbox
Create Date: 2026-12-02 11:00:00

Models: scriptflow_prefect/accounts/models.py (User.is_power_user).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_power_users"
down_revision: str | Sequence[str] | None = "0006_notification_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("is_power_user", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("is_power_user")
