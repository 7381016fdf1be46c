"""What monitoring knows about a runner (a worker of ScriptFlow's pool)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class WorkerBeat:
    """A worker as Prefect reports it: its name, last heartbeat and heartbeat interval."""

    name: str
    last_heartbeat: datetime | None
    heartbeat_interval_seconds: float | None
