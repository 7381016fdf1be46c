"""Whether ScriptFlow's runners are alive: one rule for /health, the scheduler page and API.

A worker is alive while its last heartbeat is at most three of its own heartbeat intervals
old: the rule by which Prefect's server marks a worker offline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from scriptflow_prefect.monitoring import prefect as monitoring_prefect
from scriptflow_prefect.monitoring.models import WorkerBeat

MISSED_HEARTBEATS = 3
# A worker that did not say how often it beats: Prefect's default heartbeat interval.
DEFAULT_HEARTBEAT_SECONDS = 30.0


def is_alive(worker: WorkerBeat, now: datetime) -> bool:
    if worker.last_heartbeat is None:
        return False
    interval = worker.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_SECONDS
    return now - worker.last_heartbeat <= timedelta(seconds=MISSED_HEARTBEATS * interval)


async def workers() -> list[dict[str, Any]]:
    """ScriptFlow's runners by name: `name`, `last_heartbeat`, `alive`.

    Raises PrefectUnavailable when Prefect's API does not answer."""
    now = datetime.now(UTC)
    beats = await monitoring_prefect.read_worker_beats()
    return [
        {"name": w.name, "last_heartbeat": w.last_heartbeat, "alive": is_alive(w, now)}
        for w in sorted(beats, key=lambda w: w.name)
    ]
