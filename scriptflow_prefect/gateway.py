"""The overlay's only door to Prefect: every call goes through `get_client()` here.

The overlay keeps no copy of run state; it reads runs, states and logs from Prefect and maps
them to ScriptFlow's vocabulary (API.md "Runs")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
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
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelled, Cancelling

from .gateway_names import EXIT_CODE_LABEL, TIMED_OUT_STATE_NAME

FLOW_NAME = "run_script"
WORK_POOL = "scriptflow"
TAG = "scriptflow"
ENTRYPOINT = "scriptflow_prefect.flows.run_script:run_script"


class PrefectUnavailable(RuntimeError):
    """Prefect's API could not be reached or refused the call."""


def script_tag(script_id: int) -> str:
    return f"script-{script_id}"


STATUS_BY_STATE = {
    StateType.SCHEDULED: "queued",
    StateType.PENDING: "queued",
    StateType.PAUSED: "queued",
    StateType.RUNNING: "running",
    StateType.CANCELLING: "running",
    StateType.COMPLETED: "succeeded",
    StateType.FAILED: "failed",
    StateType.CANCELLED: "cancelled",
    StateType.CRASHED: "crashed",
}
STATES_BY_STATUS: dict[str, list[StateType]] = {}
for _state, _status in STATUS_BY_STATE.items():
    STATES_BY_STATUS.setdefault(_status, []).append(_state)



def run_status(flow_run: FlowRun) -> str:
    state = flow_run.state
    if state is None:
        return "queued"
    if state.type == StateType.FAILED and state.name == TIMED_OUT_STATE_NAME:
        return "timed_out"
    return STATUS_BY_STATE.get(state.type, "queued")


TRIGGER_TAGS = {"manual": "manual", "scheduled": "auto-scheduled", "retry": "retry"}


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


async def _call(coro):
    try:
        return await coro
    except (httpx.TransportError, PrefectHTTPStatusError) as exc:
        raise PrefectUnavailable(str(exc)) from exc


async def health() -> bool:
    async with get_client() as client:
        try:
            return (await client.api_healthcheck()) is None
        except Exception:
            return False


async def ensure_work_pool() -> None:
    from scriptflow_prefect.worker import ScriptFlowWorker

    async with get_client() as client:
        try:
            await client.read_work_pool(WORK_POOL)
        except ObjectNotFound:
            try:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=WORK_POOL,
                        type=ScriptFlowWorker.type,
                        base_job_template=ScriptFlowWorker.get_default_base_job_template(),
                        description="ScriptFlow runs scripts here (in-process, one thread each).",
                    )
                )
            except PrefectHTTPStatusError as exc:  # created meanwhile by a worker
                if exc.response.status_code != 409:
                    raise


async def ensure_flow_id(client) -> UUID:
    return await client.create_flow_from_name(FLOW_NAME)


async def upsert_deployment(
    *, name: str, description: str, tags: list[str], parameters: dict[str, Any],
    schedules: list[DeploymentScheduleCreate] | None = None, paused: bool = False,
) -> UUID:
    """Create or update the deployment of one script; Prefect upserts on (flow, name)."""
    from prefect.utilities.callables import parameter_schema

    from scriptflow_prefect.flows.run_script import run_script

    async def _do() -> UUID:
        async with get_client() as client:
            flow_id = await ensure_flow_id(client)
            return await client.create_deployment(
                flow_id=flow_id,
                name=name,
                description=description,
                tags=tags,
                parameters=parameters,
                parameter_openapi_schema=parameter_schema(run_script.fn).model_dump_for_openapi(),
                work_pool_name=WORK_POOL,
                entrypoint=ENTRYPOINT,
                schedules=schedules or [],
                paused=paused,
                enforce_parameter_schema=False,
            )

    return await _call(_do())


async def delete_deployment(deployment_id: str | UUID) -> None:
    async def _do():
        async with get_client() as client:
            try:
                await client.delete_deployment(UUID(str(deployment_id)))
            except ObjectNotFound:
                pass

    await _call(_do())


async def create_manual_run(deployment_id: str | UUID) -> FlowRun:
    async def _do():
        async with get_client() as client:
            return await client.create_flow_run_from_deployment(
                UUID(str(deployment_id)), tags=["manual"]
            )

    return await _call(_do())


async def read_run(run_id: UUID) -> FlowRun | None:
    async def _do():
        async with get_client() as client:
            try:
                fr = await client.read_flow_run(run_id)
            except ObjectNotFound:
                return None
            return fr if TAG in fr.tags else None

    return await _call(_do())


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

    return await _call(_do())


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

    return await _call(_do())


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

    return await _call(_do())


async def read_deployment(deployment_id: str | UUID):
    async def _do():
        async with get_client() as client:
            try:
                return await client.read_deployment(UUID(str(deployment_id)))
            except ObjectNotFound:
                return None

    return await _call(_do())



async def worker_heartbeats() -> list[tuple[str, datetime | None, str]]:
    """(name, last heartbeat, status) of the workers of ScriptFlow's pool."""

    async def _do():
        async with get_client() as client:
            try:
                workers = await client.read_workers_for_work_pool(WORK_POOL)
            except ObjectNotFound:
                return []
            return [(w.name, w.last_heartbeat_time, str(w.status.value if w.status else ""))
                    for w in workers]

    return await _call(_do())
