"""ScriptFlow's workers as Prefect sees them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_client
from prefect.exceptions import ObjectNotFound

from scriptflow_prefect.platform.prefect import call
from scriptflow_prefect.platform.prefect_names import WORK_POOL


async def worker_heartbeats() -> list[tuple[str, datetime | None, str]]:
    """(name, last heartbeat, status) of the workers of ScriptFlow's pool."""

    async def _do():
        async with get_client() as client:
            try:
                workers = await client.read_workers_for_work_pool(WORK_POOL)
            except ObjectNotFound:
                return []
            return [
                (w.name, w.last_heartbeat_time, str(w.status.value if w.status else ""))
                for w in workers
            ]

    return await call(_do())


async def read_workers() -> list[dict[str, Any]]:
    """The workers of ScriptFlow's pool: name, last heartbeat, and whether it is alive (a
    heartbeat within three of its intervals, the rule Prefect uses to mark a worker offline)."""

    async def _do():
        async with get_client() as client:
            try:
                workers = await client.read_workers_for_work_pool(WORK_POOL)
            except ObjectNotFound:
                return []
        now = datetime.now(UTC)
        out = []
        for w in workers:
            interval = w.heartbeat_interval_seconds or 30
            beat = w.last_heartbeat_time
            alive = beat is not None and now - beat <= timedelta(seconds=3 * interval)
            out.append({"name": w.name, "last_heartbeat": beat, "alive": alive})
        return sorted(out, key=lambda w: w["name"])

    return await call(_do())
