"""script version files: the files a script version holds beside its entry point

Revision ID: 0005_script_version_files
Revises: 0004_web_sessions
Create Date: 2026-12-05 10:00:00

Models: scriptflow_prefect/scripts/models.py (ScriptVersion.files; NULL = the entry alone).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_script_version_files"
down_revision: str | Sequence[str] | None = "0004_web_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("script_versions") as batch:
        batch.add_column(sa.Column("files", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("script_versions") as batch:
        batch.drop_column("files")
