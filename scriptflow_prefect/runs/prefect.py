"""Runs in Prefect: create, read, cancel, the newest run of each script, logs."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling

from scriptflow_prefect.platform.prefect import call, retry_busy, shared_client
from scriptflow_prefect.platform.prefect_names import TAG, script_tag
from scriptflow_prefect.runs.filters import RunQuery
from scriptflow_prefect.runs.messages import RunMessage
from scriptflow_prefect.runs.models import Trigger


async def create_manual_run(
    deployment_id: str | UUID, parameters: dict[str, Any] | None = None
) -> FlowRun:
    """A manual run; `parameters` override the deployment's for this run only."""
    once = str(uuid4())  # a retried create that did reach the server makes no second run

    async def _do():
        client = await shared_client()
        return await client.create_flow_run_from_deployment(
            UUID(str(deployment_id)),
            parameters=parameters or None,
            tags=[Trigger.MANUAL.tag],
            idempotency_key=once,
        )

    # Quick retries for up to a minute: fifty "Run now" at once left 14 requests waiting
    # over 30 s in the client's long back-off; with these all 50 were answered within 34 s.
    # (Creating them one at a time was slower: 62 s, the server being busy, not locked.)
    return await call(retry_busy(_do, window=60.0))


async def read_run(run_id: UUID) -> FlowRun | None:
    async def _do():
        async with get_client() as client:
            try:
                fr = await client.read_flow_run(run_id)
            except ObjectNotFound:
                return None
            return fr if TAG in fr.tags else None

    return await call(_do())


async def latest_runs(script_ids: list[int]) -> dict[int, FlowRun]:
    """The newest run of each script, on one client: a single query over the newest runs of
    all of them answers for most; only scripts that ran long ago get a query of their own
    (at most 8 at a time). A dashboard of 150 scripts is not 150 concurrent clients."""
    if not script_ids:
        return {}
    wanted = {script_tag(i): i for i in script_ids}

    async def _do():
        client = await shared_client()  # opening one per call costs 20-80 ms
        found: dict[int, FlowRun] = {}
        batch = await client.read_flow_runs(
            flow_run_filter=RunQuery(script_ids=script_ids).flow_run_filter(),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=min(200, 10 * len(script_ids)),
        )
        for fr in batch:
            for tag in fr.tags:
                sid = wanted.get(tag)
                if sid is not None and sid not in found:
                    found[sid] = fr
        limit = asyncio.Semaphore(8)

        async def one(sid: int) -> None:
            async with limit:
                runs = await client.read_flow_runs(
                    flow_run_filter=RunQuery(script_ids=[sid]).flow_run_filter(),
                    sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                    limit=1,
                )
            if runs:
                found[sid] = runs[0]

        if len(batch) >= min(200, 10 * len(script_ids)):
            await asyncio.gather(*(one(s) for s in script_ids if s not in found))
        return found

    return await call(_do())


async def cancel_run(run_id: UUID) -> str:
    """Ask for a cancel. A run not yet started is cancelled at once; a running one is stopped
    by its worker, which kills the script's process tree."""

    async def _do():
        async with get_client() as client:
            fr = await client.read_flow_run(run_id)
            if fr.state is None or fr.state.is_final():
                return "final"
            if fr.state.type in (StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED):
                msg = RunMessage("cancelled_before_start")
                await client.update_flow_run_labels(run_id, msg.label())
                await client.set_flow_run_state(run_id, Cancelled(message=msg.text), force=True)
                return "cancelled"
            msg = RunMessage("cancel_requested")
            await client.update_flow_run_labels(run_id, msg.label())
            await client.set_flow_run_state(run_id, Cancelling(message=msg.text))
            return "cancelling"

    return await call(_do())


async def read_logs(run_id: UUID, after: datetime | None, limit: int = 200):
    async def _do():
        async with get_client() as client:
            return await client.read_logs(
                log_filter=LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=[run_id]),
                    timestamp=LogFilterTimestamp(after_=after) if after else None,
                ),
                limit=limit,
                sort=LogSort.TIMESTAMP_ASC,
            )

    return await call(_do())
