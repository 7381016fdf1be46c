"""Per-script notification preferences (and the Prefect automations kept for them)."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from scriptflow_prefect.platform.models import Base


class NotificationPref(Base):
    __tablename__ = "notification_prefs"

    script_id: Mapped[int] = mapped_column(
        ForeignKey("scripts.id", ondelete="CASCADE"), primary_key=True
    )
    on_failure: Mapped[bool] = mapped_column(Boolean, default=True)
    on_success: Mapped[bool] = mapped_column(Boolean, default=False)
    recipients: Mapped[list] = mapped_column(JSON, default=list)
    digest: Mapped[str] = mapped_column(String(10), default="none")
    automation_ids: Mapped[list] = mapped_column(JSON, default=list)
    # Channel kinds (notifications/channels); None: email only, as before channels existed.
    channels: Mapped[list | None] = mapped_column(JSON, nullable=True, default=None)
