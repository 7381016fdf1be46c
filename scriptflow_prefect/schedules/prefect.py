"""The scheduler's state in Prefect: runs in progress, next and late."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.actions import (
    DeploymentScheduleCreate,
    DeploymentScheduleUpdate,
    DeploymentUpdate,
)
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import DeploymentSchedule, FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound

from scriptflow_prefect.platform.prefect import call, shared_client
from scriptflow_prefect.platform.prefect_names import TAG, script_tag
from scriptflow_prefect.runs.models import Trigger

# -- the scheduler's state: runs in progress, next and late runs, workers --------------------
LATE_AFTER_SECONDS = 15  # Prefect's own "Late" threshold (PREFECT_API_SERVICES_LATE_RUNS_...)


@dataclass
class SchedulerRuns:
    running: list[FlowRun]
    next: list[FlowRun]
    late: list[FlowRun]


async def read_scheduler_runs(
    script_ids: list[int] | None, *, next_limit: int = 20, limit: int = 200
) -> SchedulerRuns:
    """Runs of these scripts (None: every script) in progress (longest running first), the
    next `next_limit` scheduled ones (soonest first), and the late ones: still scheduled
    more than LATE_AFTER_SECONDS after their time (oldest first)."""
    if script_ids is not None and not script_ids:
        return SchedulerRuns([], [], [])
    if script_ids is not None and len(script_ids) > MAX_TAGS_PER_QUERY:
        return await _in_chunks(script_ids, next_limit, limit)

    def runs_filter(
        types: list[StateType], after: datetime | None = None, before: datetime | None = None
    ) -> FlowRunFilter:
        f = FlowRunFilter(
            tags=FlowRunFilterTags(all_=[TAG]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=types)),
        )
        if script_ids is not None:
            f.tags.any_ = [script_tag(i) for i in script_ids]
        if after or before:
            f.expected_start_time = FlowRunFilterExpectedStartTime(after_=after, before_=before)
        return f

    async def _do() -> SchedulerRuns:
        now = datetime.now(UTC)
        async with get_client() as client:
            running, upcoming, late = await asyncio.gather(
                client.read_flow_runs(
                    flow_run_filter=runs_filter([StateType.RUNNING, StateType.CANCELLING]),
                    sort=FlowRunSort.START_TIME_ASC,
                    limit=limit,
                ),
                client.read_flow_runs(
                    flow_run_filter=runs_filter([StateType.SCHEDULED], after=now),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                    limit=next_limit,
                ),
                client.read_flow_runs(
                    flow_run_filter=runs_filter(
                        [StateType.SCHEDULED], before=now - timedelta(seconds=LATE_AFTER_SECONDS)
                    ),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                    limit=limit,
                ),
            )
        return SchedulerRuns(running=running, next=upcoming, late=late)

    return await call(_do())


# SQLite's json_array() takes at most 127 arguments (SQLITE_MAX_FUNCTION_ARG): Prefect's tag
# filter answers 500 past that, so a user with more scripts is asked for in chunks.
MAX_TAGS_PER_QUERY = 100


async def _in_chunks(script_ids: list[int], next_limit: int, limit: int) -> SchedulerRuns:
    parts = await asyncio.gather(
        *(
            read_scheduler_runs(
                script_ids[i : i + MAX_TAGS_PER_QUERY], next_limit=next_limit, limit=limit
            )
            for i in range(0, len(script_ids), MAX_TAGS_PER_QUERY)
        )
    )
    far = datetime.max.replace(tzinfo=UTC)

    def started(fr: FlowRun) -> datetime:
        return fr.start_time or far

    def expected(fr: FlowRun) -> datetime:
        return fr.expected_start_time or far

    return SchedulerRuns(
        running=sorted((r for p in parts for r in p.running), key=started)[:limit],
        next=sorted((r for p in parts for r in p.next), key=expected)[:next_limit],
        late=sorted((r for p in parts for r in p.late), key=expected)[:limit],
    )


# -- a script's deployment's schedules ----------------------------------------------------------
async def replace_schedules(
    deployment_id: str | UUID | None,
    schedules: list[DeploymentScheduleCreate],
    *,
    unpause: bool = False,
) -> None:
    """Replace the deployment's schedules (Prefect deletes the old ones on a PATCH with
    schedules); `unpause` also lifts a pause set on the whole deployment in Prefect."""
    if deployment_id is None:
        return
    update = DeploymentUpdate(
        schedules=[
            DeploymentScheduleUpdate(schedule=s.schedule, active=s.active) for s in schedules
        ]
    )
    if unpause:
        update.paused = False

    async def _do():
        async with get_client() as client:
            await client.update_deployment(UUID(str(deployment_id)), update)

    await call(_do())


async def set_schedules_active(deployment_id: str | UUID, active: bool) -> bool:
    """Switch each of the deployment's schedules on or off where it is, whoever set it:
    nothing is replaced. Switching on also lifts a pause of the whole deployment. False when
    Prefect has no such deployment."""
    key = UUID(str(deployment_id))

    async def _do() -> bool:
        async with get_client() as client:
            try:
                await client.read_deployment(key)
            except ObjectNotFound:
                return False
            for schedule in await client.read_deployment_schedules(key):
                if schedule.active != active:
                    await client.update_deployment_schedule(key, schedule.id, active=active)
            if active:
                await client.update_deployment(key, DeploymentUpdate(paused=False))
            return True

    return await call(_do())


@dataclass(frozen=True)
class DeploymentSchedules:
    """What schedules.truth needs of a deployment: its schedules and whether it is paused."""

    id: str
    paused: bool
    schedules: list[DeploymentSchedule]


async def read_deployments(ids: list[str]) -> dict[str, DeploymentSchedules]:
    """These deployments' schedules as Prefect has them now, by id; one Prefect does not have
    is absent. One request per 100 ids, read as plain JSON with only the schedules parsed:
    Prefect's full deployment model (the flow's parameter schema, the script's parameters)
    cost ~2 ms a deployment to parse, most of a page's time."""
    keys = [str(UUID(i)) for i in dict.fromkeys(ids)]

    async def _do() -> dict[str, DeploymentSchedules]:
        found: dict[str, DeploymentSchedules] = {}
        client = await shared_client()
        for i in range(0, len(keys), MAX_TAGS_PER_QUERY):
            chunk = keys[i : i + MAX_TAGS_PER_QUERY]
            r = await client.request(
                "POST",
                "/deployments/filter",
                json={"deployments": {"id": {"any_": chunk}}, "limit": len(chunk)},
            )
            r.raise_for_status()
            for d in r.json():
                found[str(d["id"])] = DeploymentSchedules(
                    id=str(d["id"]),
                    paused=bool(d.get("paused")),
                    schedules=[DeploymentSchedule.model_validate(s) for s in d["schedules"] or []],
                )
        return found

    return await call(_do()) if keys else {}


async def failed_in_a_row(script_id: int, n: int) -> bool:
    """Whether the script's last `n` finished scheduled runs all failed: what the run policy
    switches a schedule off after (runs/policies.py), so a stop it made is told from one a
    power user made in Prefect. By the script's tag, not its deployment: a rename is a new
    deployment, and the runs of the old one keep the tag."""
    if n <= 0:
        return False
    finished = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]

    async def _do() -> bool:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[TAG, script_tag(script_id)]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=finished)),
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=max(3 * n, 20),  # manual runs and retries in between are skipped
            )
        scheduled = [r for r in runs if Trigger.of(r) == Trigger.SCHEDULED][:n]
        return len(scheduled) == n and all(
            r.state is not None and r.state.type != StateType.COMPLETED for r in scheduled
        )

    return await call(_do())
