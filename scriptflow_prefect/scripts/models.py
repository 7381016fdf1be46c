"""Scripts and their versions (the bytes sit in the script store, by sha256)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.platform.models import Base, UTCDateTime, utcnow


class Script(Base):
    __tablename__ = "scripts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(10))  # "python" | "batch"
    filename: Mapped[str] = mapped_column(String(255))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=300)
    deployment_id: Mapped[str | None] = mapped_column(String(36))
    # The simple form the user filled in; Prefect holds the schedule it runs.
    schedule: Mapped[dict | None] = mapped_column(JSON)
    settings: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Deleted scripts stay as rows so that their past runs keep a name in history.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)

    owner: Mapped[User] = relationship()
    versions: Mapped[list[ScriptVersion]] = relationship(
        back_populates="script", order_by="ScriptVersion.version", cascade="all, delete-orphan"
    )


class ScriptVersion(Base):
    __tablename__ = "script_versions"
    __table_args__ = (UniqueConstraint("script_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    script_id: Mapped[int] = mapped_column(ForeignKey("scripts.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    # Every file of the version, the entry point first: [{name, size, sha256}], names relative
    # to the script's folder. NULL (versions saved before) means the entry point alone.
    files: Mapped[list | None] = mapped_column(JSON)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    script: Mapped[Script] = relationship(back_populates="versions")
    author: Mapped[User | None] = relationship()
