"""ScriptFlow's workers as Prefect sees them (monitoring's one door to Prefect)."""

from __future__ import annotations

from prefect import get_client
from prefect.exceptions import ObjectNotFound

from scriptflow_prefect.monitoring.models import WorkerBeat
from scriptflow_prefect.platform.prefect import call
from scriptflow_prefect.platform.prefect_names import WORK_POOL


async def read_worker_beats() -> list[WorkerBeat]:
    """The workers of ScriptFlow's pool (none if the pool does not exist yet)."""

    async def _do() -> list[WorkerBeat]:
        async with get_client() as client:
            try:
                workers = await client.read_workers_for_work_pool(WORK_POOL)
            except ObjectNotFound:
                return []
        return [
            WorkerBeat(w.name, w.last_heartbeat_time, w.heartbeat_interval_seconds) for w in workers
        ]

    return await call(_do())
