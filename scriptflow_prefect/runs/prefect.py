"""Runs in Prefect: create, read, cancel, logs; mapped to ScriptFlow's run vocabulary."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterTimestamp,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling

from scriptflow_prefect.platform.prefect import call, retry_busy, shared_client
from scriptflow_prefect.platform.prefect_names import (
    EXIT_CODE_LABEL,
    TAG,
    TIMED_OUT_STATE_NAME,
    TRIGGER_TAGS,
    script_tag,
)
from scriptflow_prefect.runs.models import STATES_BY_STATUS, STATUS_BY_STATE


def run_status(flow_run: FlowRun) -> str:
    state = flow_run.state
    if state is None:
        return "queued"
    if state.type == StateType.FAILED and state.name == TIMED_OUT_STATE_NAME:
        return "timed_out"
    return STATUS_BY_STATE.get(state.type, "queued")


def run_trigger(flow_run: FlowRun) -> str:
    if "retry" in flow_run.tags:
        return "retry"
    if flow_run.auto_scheduled or "auto-scheduled" in flow_run.tags:
        return "scheduled"
    return "manual"


def run_to_dict(flow_run: FlowRun, script_names: dict[int, str] | None = None) -> dict[str, Any]:
    params = flow_run.parameters or {}
    script_id = params.get("script_id")
    labels = flow_run.labels or {}
    exit_code = labels.get(EXIT_CODE_LABEL)
    started, ended = flow_run.start_time, flow_run.end_time
    status = run_status(flow_run)
    duration = None
    if started and ended:
        duration = round((ended - started).total_seconds(), 3)
    elif started and status == "running":
        duration = round(flow_run.estimated_run_time.total_seconds(), 3)
    return {
        "id": str(flow_run.id),
        "script_id": script_id,
        "script_name": (script_names or {}).get(script_id) or params.get("script_name"),
        "status": status,
        "trigger": run_trigger(flow_run),
        "scheduled_at": flow_run.expected_start_time,
        "started_at": started,
        "ended_at": ended,
        "duration_seconds": duration,
        "exit_code": int(exit_code) if exit_code not in (None, "") else None,
        "script_version": params.get("version"),
        "message": flow_run.state.message if flow_run.state else None,
    }


@dataclass
class RunQuery:
    script_ids: list[int] | None = None  # None = every script (admin)
    statuses: list[str] | None = None
    triggers: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    run_ids: list[UUID] | None = None

    def flow_run_filter(self) -> FlowRunFilter:
        # Every run carries its deployment's tags: `scriptflow` and `script-<id>`, so the
        # runs of deleted scripts stay findable after their deployment is gone.
        all_tags = [TAG] + [TRIGGER_TAGS[t] for t in (self.triggers or [])[:1]]
        f = FlowRunFilter(tags=FlowRunFilterTags(all_=all_tags))
        if self.script_ids is not None:
            f.tags.any_ = [script_tag(i) for i in self.script_ids]
        if self.statuses:
            types = [t for s in self.statuses for t in STATES_BY_STATUS.get(s, [])]
            f.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=types))
        # History is what has happened: runs Prefect has scheduled for later are not in it
        # (the next run is shown on its own).
        now = datetime.now(UTC) + timedelta(seconds=1)
        before = min(self.until, now) if self.until else now
        f.expected_start_time = FlowRunFilterExpectedStartTime(after_=self.since, before_=before)
        if self.run_ids:
            f.id = FlowRunFilterId(any_=self.run_ids)
        return f


async def create_manual_run(deployment_id: str | UUID) -> FlowRun:
    once = str(uuid4())  # a retried create that did reach the server makes no second run

    async def _do():
        client = await shared_client()
        return await client.create_flow_run_from_deployment(
            UUID(str(deployment_id)), tags=["manual"], idempotency_key=once
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


async def read_runs(
    query: RunQuery, *, limit: int = 20, offset: int = 0
) -> tuple[list[FlowRun], int]:
    """Runs newest first, and the exact total for the same filter."""

    async def _do():
        async with get_client() as client:
            if query.script_ids is not None and not query.script_ids:
                return [], 0
            flow_filter = query.flow_run_filter()
            total = await client.count_flow_runs(flow_run_filter=flow_filter)
            runs = await client.read_flow_runs(
                flow_run_filter=flow_filter,
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=limit,
                offset=offset,
            )
            return runs, total

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
                await client.set_flow_run_state(
                    run_id, Cancelled(message="Cancelled before it started"), force=True
                )
                return "cancelled"
            await client.set_flow_run_state(run_id, Cancelling(message="Cancel requested"))
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
