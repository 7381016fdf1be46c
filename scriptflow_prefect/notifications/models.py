"""Per-script notification preferences (and the Prefect automations kept for them), and the
outbox of messages waiting to be delivered."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from scriptflow_prefect.platform.models import Base, UTCDateTime, utcnow


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


class OutboxEntry(Base):
    """One message to deliver (notifications/outbox.py): written before the first try, so
    that an SMTP outage or a restart does not lose it; claimed by one sender at a time."""

    __tablename__ = "notification_outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    # The same message asked for twice (Prefect running an automation's action again).
    dedupe_key: Mapped[str | None] = mapped_column(String(300), unique=True, nullable=True)
    # pending | sending | sent | failed | dropped
    status: Mapped[str] = mapped_column(String(10), index=True)
    script_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    recipient: Mapped[str | None] = mapped_column(String(254), nullable=True)
    resource_id: Mapped[str] = mapped_column(String(200))
    resource_name: Mapped[str] = mapped_column(String(300))
    run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    message: Mapped[bytes] = mapped_column(LargeBinary)
    caused_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list] = mapped_column(JSON, default=list)
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
