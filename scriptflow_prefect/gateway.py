"""The overlay's only door to Prefect: every call goes through `get_client()` here.

The overlay keeps no copy of run state; it reads runs, states and logs from Prefect and maps
them to ScriptFlow's vocabulary (API.md "Runs")."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

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


@functools.cache
def _no_retry_settings():
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, get_current_settings

    return get_current_settings().copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})


async def _retry_busy(make_call, window: float = 10.0):
    """Prefect on SQLite answers 503 when two writes collide, and its client then backs off
    2, 4, 8, 16 s: ten "Run now" at once would start over half a minute. Retry quickly here
    for a while (a collision passes in well under a second), then leave it to the client's
    own retries."""
    from prefect.context import SettingsContext, get_settings_context

    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        try:
            profile = get_settings_context().profile
            with SettingsContext(profile=profile, settings=_no_retry_settings()):
                return await make_call()
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 503:
                raise
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
            pass  # e.g. a kept-alive connection the server closed just then: the call is
            # idempotent (callers pass an idempotency key), so try again
        await asyncio.sleep(random.uniform(0.05, 0.3))
    return await make_call()


async def create_manual_run(deployment_id: str | UUID) -> FlowRun:
    once = str(uuid4())  # a retried create that did reach the server makes no second run

    async def _do():
        client = await _shared_client()
        return await client.create_flow_run_from_deployment(
            UUID(str(deployment_id)), tags=["manual"], idempotency_key=once
        )

    # Quick retries for up to a minute: fifty "Run now" at once left 14 requests waiting
    # over 30 s in the client's long back-off; with these all 50 were answered within 34 s.
    # (Creating them one at a time was slower: 62 s, the server being busy, not locked.)
    return await _call(_retry_busy(_do, window=60.0))


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


async def latest_runs(script_ids: list[int]) -> dict[int, FlowRun]:
    """The newest run of each script, on one client: a single query over the newest runs of
    all of them answers for most; only scripts that ran long ago get a query of their own
    (at most 8 at a time). A dashboard of 150 scripts is not 150 concurrent clients."""
    if not script_ids:
        return {}
    wanted = {script_tag(i): i for i in script_ids}

    async def _do():
        client = await _shared_client()  # opening one per call costs 20-80 ms
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
                    sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)
            if runs:
                found[sid] = runs[0]

        if len(batch) >= min(200, 10 * len(script_ids)):
            await asyncio.gather(*(one(s) for s in script_ids if s not in found))
        return found

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


# -- the scheduler's state: runs in progress, next and late runs, workers --------------------
LATE_AFTER_SECONDS = 15  # Prefect's own "Late" threshold (PREFECT_API_SERVICES_LATE_RUNS_...)


@dataclass
class SchedulerRuns:
    running: list[FlowRun]
    next: list[FlowRun]
    late: list[FlowRun]


async def read_scheduler_runs(script_ids: list[int] | None, *, next_limit: int = 20,
                              limit: int = 200) -> SchedulerRuns:
    """Runs of these scripts (None: every script) in progress (longest running first), the
    next `next_limit` scheduled ones (soonest first), and the late ones: still scheduled
    more than LATE_AFTER_SECONDS after their time (oldest first)."""
    if script_ids is not None and not script_ids:
        return SchedulerRuns([], [], [])

    def runs_filter(types: list[StateType], after: datetime | None = None,
                    before: datetime | None = None) -> FlowRunFilter:
        f = FlowRunFilter(tags=FlowRunFilterTags(all_=[TAG]),
                          state=FlowRunFilterState(type=FlowRunFilterStateType(any_=types)))
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
                    sort=FlowRunSort.START_TIME_ASC, limit=limit),
                client.read_flow_runs(
                    flow_run_filter=runs_filter([StateType.SCHEDULED], after=now),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=next_limit),
                client.read_flow_runs(
                    flow_run_filter=runs_filter(
                        [StateType.SCHEDULED],
                        before=now - timedelta(seconds=LATE_AFTER_SECONDS)),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=limit),
            )
        return SchedulerRuns(running=running, next=upcoming, late=late)

    return await _call(_do())


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

    return await _call(_do())


# -- notifications: email blocks, automations, the digest deployments, events ---------------
EMAIL_TAG = "scriptflow-email"  # on every automation ScriptFlow keeps for emails
CREDENTIALS_BLOCK = "scriptflow-smtp"
EMAIL_BLOCK = "scriptflow-email"
DIGEST_FLOW = "send_digest"
DIGEST_ENTRYPOINT = "scriptflow_prefect.flows.send_digest:send_digest"
DIGEST_TAG = "scriptflow-digest"  # not `scriptflow`: digest runs are not script runs


async def save_email_blocks(*, host: str, port: int, smtp_type: str, username: str | None,
                            password: str | None, email_fields: dict[str, Any]) -> UUID:
    """Save the SMTP credentials (password as a secret; None keeps the stored one) and the
    ScriptFlow email block that uses them; returns the email block's document id."""
    from prefect_email import EmailServerCredentials

    from scriptflow_prefect.blocks import ScriptFlowEmail

    async def _do() -> UUID:
        secret = password
        if secret is None:
            try:
                old = await EmailServerCredentials.aload(CREDENTIALS_BLOCK)
                secret = old.password.get_secret_value()
            except ValueError:  # not saved yet
                secret = ""
        creds = EmailServerCredentials(smtp_server=host, smtp_port=port, smtp_type=smtp_type,
                                       username=username or None, password=secret)
        await creds.asave(CREDENTIALS_BLOCK, overwrite=True)
        return await ScriptFlowEmail(credentials=creds, **email_fields).asave(
            EMAIL_BLOCK, overwrite=True)

    return await _call(_do())


async def load_email_block():
    """The ScriptFlow email block with its secrets, or None if it was never saved."""
    from scriptflow_prefect.blocks import ScriptFlowEmail

    async def _do():
        try:
            return await ScriptFlowEmail.aload(EMAIL_BLOCK)
        except ValueError:
            return None

    return await _call(_do())


async def read_email_automations(script_id: int | None = None) -> list:
    """ScriptFlow's email automations (of one script, or all of them)."""
    from prefect.events.filters import AutomationFilter, AutomationFilterTags

    tags = [EMAIL_TAG] + ([script_tag(script_id)] if script_id is not None else [])

    async def _do():
        async with get_client() as client:
            return await client.read_automations(
                automations=AutomationFilter(tags=AutomationFilterTags(all_=tags)))

    return await _call(_do())


async def create_automation(automation) -> UUID:
    async def _do():
        async with get_client() as client:
            return await client.create_automation(automation)

    return await _call(_do())


async def update_automation(automation_id: UUID, automation) -> None:
    # The API takes an owner only when an automation is created (an update with one is a 422).
    core = type(automation).model_validate(automation.model_dump(exclude={"owner_resource"}))

    async def _do():
        async with get_client() as client:
            await client.update_automation(automation_id, core)

    await _call(_do())


async def delete_automation(automation_id: UUID) -> None:
    async def _do():
        async with get_client() as client:
            await client.delete_automation(automation_id)

    await _call(_do())


async def upsert_digest_deployment(name: str, parameters: dict[str, Any],
                                   schedules: list[DeploymentScheduleCreate]) -> UUID:
    from prefect.utilities.callables import parameter_schema

    from scriptflow_prefect.flows.send_digest import send_digest

    async def _do() -> UUID:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name(DIGEST_FLOW)
            return await client.create_deployment(
                flow_id=flow_id, name=name, tags=[DIGEST_TAG],
                description="ScriptFlow's email summary of the runs (managed by ScriptFlow).",
                parameters=parameters,
                parameter_openapi_schema=parameter_schema(send_digest.fn).model_dump_for_openapi(),
                work_pool_name=WORK_POOL, entrypoint=DIGEST_ENTRYPOINT, schedules=schedules,
                enforce_parameter_schema=False,
            )

    return await _call(_do())


async def delete_digest_deployment(name: str) -> None:
    async def _do():
        async with get_client() as client:
            try:
                deployment = await client.read_deployment_by_name(f"{DIGEST_FLOW}/{name}")
            except ObjectNotFound:
                return
            await client.delete_deployment(deployment.id)

    await _call(_do())


async def read_events(*, names: list[str], since: datetime, resource_ids: list[str] | None = None,
                      resource_prefixes: list[str] | None = None,
                      resource_labels: dict[str, Any] | None = None,
                      limit: int = 50, wanted: int = 50) -> tuple[list, int]:
    """Events newest first: at least `wanted` of them when there are (Prefect pages by 50),
    and the total that match."""
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )
    from prefect.events.schemas.events import ResourceSpecification

    resource = EventResourceFilter(
        id=resource_ids, id_prefix=resource_prefixes,
        labels=ResourceSpecification(resource_labels) if resource_labels else None)

    async def _do():
        async with get_client() as client:
            page = await client.read_events(EventFilter(
                occurred=EventOccurredFilter(since=since, until=datetime.now(UTC)),
                event=EventNameFilter(name=names), resource=resource), limit=min(limit, 50))
            events, total = list(page.events), page.total
            while len(events) < wanted and page.next_page:
                page = await client.read_events_page(str(page.next_page))
                events += page.events
            return events, total

    return await _call(_do())


# -- history: run lists that stay fast at 100 000 runs, summaries, retention ------------------
# Prefect's tag filters are JSON scans on SQLite (~2.5 µs a run, for every run in the table);
# the history uses indexed columns wherever it can: the flow (run_script), the deployments of
# the scripts asked for, state type and expected start time. Tags are used only for the
# trigger, and for scripts whose deployments ScriptFlow does not know (history.py).
CLEAN_FLOW = "clean_history"
CLEAN_ENTRYPOINT = "scriptflow_prefect.flows.clean_history:clean_history"
CLEAN_DEPLOYMENT = "daily"
SCRIPTFLOW_FLOWS = (FLOW_NAME, "send_digest", CLEAN_FLOW)  # what retention cleans
_NOT_STARTED = (StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED)
_shared: dict[int, tuple[Any, Any]] = {}


async def _shared_client():
    """A long-lived client per event loop: opening one per call costs 20-80 ms here."""
    loop = asyncio.get_running_loop()
    entry = _shared.get(id(loop))
    if entry is not None and entry[0] is loop:
        return entry[1]
    for key, (other, _client) in list(_shared.items()):
        if other.is_closed():  # a finished loop (tests, asyncio.run): drop its client
            _shared.pop(key, None)
    client = get_client()
    await client.__aenter__()
    _shared[id(loop)] = (loop, client)
    return client


def _state_filter(statuses: list[str]):
    from prefect.client.schemas.filters import FlowRunFilterStateName

    types = {t for s in statuses for t in STATES_BY_STATUS.get(
        "failed" if s == "timed_out" else s, [])}
    name = None
    if "failed" in statuses and "timed_out" not in statuses:
        name = FlowRunFilterStateName(not_any_=[TIMED_OUT_STATE_NAME])
    elif statuses == ["timed_out"]:
        name = FlowRunFilterStateName(any_=[TIMED_OUT_STATE_NAME])
    return FlowRunFilterState(type=FlowRunFilterStateType(any_=sorted(types)), name=name)


@dataclass
class HistoryQuery:
    script_ids: list[int] | None = None  # None: every script (an admin)
    deployment_ids: list[UUID] | None = None  # every deployment those scripts ever had
    statuses: list[str] | None = None
    trigger: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    run_ids: list[UUID] | None = None
    edge: datetime | None = None  # where history ends (default: now, give or take a second)

    @property
    def empty(self) -> bool:
        return self.script_ids == [] or self.run_ids == []

    def end(self) -> datetime:
        return self.edge or datetime.now(UTC) + timedelta(seconds=1)

    def filters(self):
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
            FlowRunFilterDeploymentId,
        )

        f = FlowRunFilter()
        flows = None
        tags_all = [TRIGGER_TAGS[self.trigger]] if self.trigger else None
        tags_any = None
        if self.script_ids is None:
            # Every script: ScriptFlow's tag, tested only on the runs SQLite visits while it
            # walks Prefect's expected-time (or state) index for the page. A list of
            # deployments would make it read every run of them and sort them all.
            if self.trigger:
                tags_all = [TAG, TRIGGER_TAGS[self.trigger]]
            else:
                tags_any = [TAG]
        elif self.deployment_ids:  # the scripts' deployments: an indexed column
            f.deployment_id = FlowRunFilterDeploymentId(any_=self.deployment_ids)
        elif self.script_ids is not None:
            tags_any = [script_tag(i) for i in self.script_ids]
        else:  # every run of the run_script flow (a per-run subquery: slower)
            flows = FlowFilter(name=FlowFilterName(any_=[FLOW_NAME]))
        if tags_all or tags_any:
            f.tags = FlowRunFilterTags(all_=tags_all, any_=tags_any)
        if self.statuses:
            f.state = _state_filter(self.statuses)
        # History is what has happened: runs scheduled for later are not in it.
        now = self.end()
        before = min(self.until, now) if self.until else now
        f.expected_start_time = FlowRunFilterExpectedStartTime(after_=self.since, before_=before)
        if self.run_ids:
            f.id = FlowRunFilterId(any_=self.run_ids)
        return flows, f


async def read_history(query: HistoryQuery, *, limit: int = 20, offset: int = 0,
                       with_total: bool = True,
                       sort: str | None = None) -> tuple[list[FlowRun], int]:
    """A page of runs, newest first, and the exact total: both queries at once.

    Newest by expected start (the scheduled time; a manual run's is when it was asked for),
    or, with a status filter, by start: the orders of Prefect's indexes (expected time;
    state type + start), which let SQLite stop at the end of the page."""
    if query.empty:
        return [], 0
    sort = sort or ("START_TIME_DESC" if query.statuses else "EXPECTED_START_TIME_DESC")

    async def _do():
        client = await _shared_client()
        flows, flow_runs = query.filters()
        read = client.read_flow_runs(flow_filter=flows, flow_run_filter=flow_runs,
                                     sort=FlowRunSort[sort],
                                     limit=limit, offset=offset)
        if not with_total:
            return await read, -1
        runs, total = await asyncio.gather(read, _exact_count(client, query))
        return runs, total

    return await _call(_do())


async def count_history(query: HistoryQuery) -> int:
    if query.empty:
        return 0

    async def _do():
        return await _exact_count(await _shared_client(), query)

    return await _call(_do())


_others: dict[str, Any] = {"at": 0.0, "scope": None, "ids": []}


async def _other_deployment_ids(client, scope: list[UUID]) -> list[UUID]:
    """Deployments in Prefect that are not the scripts' (digest, clean-up, a power user's),
    cached for a minute: there are few and they change rarely."""
    key = frozenset(scope)
    if _others["scope"] != key or time.monotonic() - _others["at"] > 60:
        ids, offset = [], 0
        while True:
            r = await client.request("POST", "/deployments/filter",
                                     json={"limit": 200, "offset": offset})
            r.raise_for_status()
            page = r.json()
            ids += [UUID(d["id"]) for d in page]
            if len(page) < 200:
                break
            offset += 200
        _others.update(at=time.monotonic(), scope=key, ids=[i for i in ids if i not in key])
    return list(_others["ids"])


async def _exact_count(client, query: HistoryQuery) -> int:
    """The exact number of runs the query matches, asked the way Prefect's SQLite answers it
    from indexes where it can. A condition on a run's tags is a JSON test on every run in
    reach (~2.5 µs each) and a second column makes SQLite read each run's row (~6 µs): for
    100 000 runs the plain count of "every script's runs" takes ~0.45 s.

    So without a status or time filter, the runs of the scripts' deployments are counted
    through the deployment index (with no trigger: from the index alone, minus the runs
    scheduled ahead, found through the expected-time index), and the runs tagged
    `scriptflow` of other existing deployments or of none are added. (Runs of a deployment
    Prefect no longer has count only if it was a script's: ScriptFlow knows all of those.)"""
    from prefect.client.schemas.filters import FlowRunFilterDeploymentId

    flows, flow_runs = query.filters()

    def count(**kw):
        return client.count_flow_runs(flow_run_filter=FlowRunFilter(**kw))

    if (not query.deployment_ids or query.since or query.until or query.run_ids
            or ((query.statuses or query.trigger) and query.script_ids is not None)):
        return await client.count_flow_runs(flow_filter=flows, flow_run_filter=flow_runs)
    if query.statuses or query.trigger:  # every script (an admin): too many runs to test
        if set(query.statuses or ()) <= FINAL_STATUSES:
            return await _kept_count(client, query)
        return await client.count_flow_runs(flow_filter=flows, flow_run_filter=flow_runs)
    now = query.end()
    dep = FlowRunFilterDeploymentId(any_=query.deployment_ids)
    ahead = FlowRunFilterExpectedStartTime(after_=now + timedelta(microseconds=1))
    past = FlowRunFilterExpectedStartTime(before_=now)
    none = FlowRunFilterDeploymentId(is_null_=True)
    if query.script_ids is not None:  # no status or trigger here: handled above
        in_scope, later = await asyncio.gather(
            count(deployment_id=dep), count(deployment_id=dep, expected_start_time=ahead))
        return in_scope - later
    others = await _other_deployment_ids(client, query.deployment_ids)
    other = FlowRunFilterDeploymentId(any_=others or [UUID(int=0)])
    tagged = FlowRunFilterTags(any_=[TAG])
    # Runs ahead of now are scheduled ones of existing deployments (Prefect deletes those
    # with their deployment): all of them, minus other deployments' and deployment-less.
    (in_scope, ahead_all, ahead_other, ahead_none, tagged_other,
     tagged_none) = await asyncio.gather(
        count(deployment_id=dep), count(expected_start_time=ahead),
        count(deployment_id=other, expected_start_time=ahead),
        count(deployment_id=none, expected_start_time=ahead),
        count(deployment_id=other, tags=tagged, expected_start_time=past),
        count(deployment_id=none, tags=tagged, expected_start_time=past))
    return in_scope - (ahead_all - ahead_other - ahead_none) + tagged_other + tagged_none


FINAL_STATUSES = {"succeeded", "failed", "timed_out", "cancelled", "crashed"}
NOT_FINAL = [StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED, StateType.RUNNING,
             StateType.CANCELLING]
_kept: dict[tuple, tuple[int, int, datetime, list[UUID]]] = {}
LIGHT_LIMIT = 1000
KEPT_FILTERS = 32


async def _kept_count(client, query: HistoryQuery) -> int:
    """Every script's runs with a trigger and/or a final status. The plain count tests a
    JSON tag on each of up to 100 000 runs (0.4-0.9 s), so a count made once is kept and
    brought forward: plus the matching runs expected since (an indexed range), plus those of
    the runs not finished then that match now (a trigger never changes; a finished run stays
    finished). That holds while the runs up to now grew by exactly the runs expected since:
    nothing deleted (retention), nothing added in the past; otherwise it counts afresh.
    (A power user who sets a finished run back to Scheduled in Prefect's UI makes a kept
    status count one too high until the next afresh count, e.g. after a restart.)"""
    from dataclasses import replace

    key = (query.trigger, tuple(query.statuses or ()), tuple(query.deployment_ids or ()))
    # Read in this order: the kept count (made from reads that all came before), then the
    # runs that arrived since, then the total. A run that shows up between two reads then
    # makes the totals disagree, and the count is made afresh instead of going wrong.
    kept = _kept.get(key)
    edge = datetime.now(UTC)
    scope = HistoryQuery(deployment_ids=query.deployment_ids, edge=edge)

    async def ids(q: HistoryQuery, state: list[StateType] | None = None) -> list[UUID]:
        """Up to LIGHT_LIMIT ids: runs not finished, or expected since."""
        f = q.filters()[1]
        if state:
            f.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=state))
        return [UUID(row["id"]) for row in await _light_rows(client, None, f, LIGHT_LIMIT)]

    def matching(q: HistoryQuery) -> Any:
        """Count q's runs. With a status, the runs not finished at `edge` are left out
        by id: they are counted once they are finished, from the kept list."""
        flows, f = q.filters()
        if query.statuses and pending:
            f.id = FlowRunFilterId(any_=f.id.any_ if f.id else None, not_any_=pending)
        return client.count_flow_runs(flow_filter=flows, flow_run_filter=f)

    def keep(counted: int) -> int:
        _kept.pop(key, None)  # newest last; the oldest of many filters is forgotten
        _kept[key] = (counted, total, edge, pending)
        while len(_kept) > KEPT_FILTERS:
            _kept.pop(next(iter(_kept)))
        return counted

    arrived: list[UUID] | None = None
    if kept is not None and kept[2] < edge:
        arrived = await ids(HistoryQuery(since=kept[2] + timedelta(microseconds=1), edge=edge))
    total, pending = await asyncio.gather(_exact_count(client, scope), ids(scope, NOT_FINAL))
    if len(pending) >= LIGHT_LIMIT:  # too many runs may still change: count afresh
        _kept.pop(key, None)
        return await matching(replace(query, edge=edge))
    if kept is not None and arrived is not None:
        counted, total_then, _edge_then, pending_then = kept
        if len(arrived) < LIGHT_LIMIT and total - total_then == len(arrived):
            # Unfinished runs matched a trigger alone already; a final status, not yet. They
            # are asked for by id: with a state condition over a time range, SQLite walks its
            # state index instead (all 88 000 succeeded runs: 0.3 s for none).
            look = arrived + (pending_then if query.statuses else [])
            if look:
                counted += await matching(HistoryQuery(
                    run_ids=look, statuses=query.statuses, trigger=query.trigger, edge=edge))
            return keep(counted)
    return keep(await matching(replace(query, edge=edge)))


async def read_history_light(query: HistoryQuery, *, limit: int = 1000,
                             offset: int = 0) -> list[dict[str, Any]]:
    """id, state type, start (or expected start) and run time of up to 1000 runs, newest
    first: Prefect's light run-history rows, for summaries."""
    if query.empty:
        return []

    async def _do():
        flows, flow_runs = query.filters()
        return await _light_rows(await _shared_client(), flows, flow_runs, limit, offset,
                                 sort="START_TIME_DESC")

    return await _call(_do())


async def _light_rows(client, flows, flow_runs, limit: int, offset: int = 0,
                      sort: str | None = None) -> list[dict[str, Any]]:
    """Prefect's light run-history rows (no tags, parameters or state details)."""
    body = {"limit": limit, "offset": offset,
            "flows": flows.model_dump(mode="json") if flows else None,
            "flow_runs": flow_runs.model_dump(mode="json")}
    if sort:
        body["sort"] = sort
    r = await client.request("POST", "/ui/flow_runs/history", json=body)
    r.raise_for_status()
    return r.json()


def delete_old_runs(cutoff: datetime, *, batch: int = 200) -> int:
    """Delete ScriptFlow's flow runs (Prefect then deletes their logs) expected before
    `cutoff`, except those still running. Synchronous: the clean_history flow calls it.
    Returns how many runs went."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    flows = FlowFilter(name=FlowFilterName(any_=list(SCRIPTFLOW_FLOWS)))
    old = FlowRunFilter(
        expected_start_time=FlowRunFilterExpectedStartTime(before_=cutoff),
        state=FlowRunFilterState(type=FlowRunFilterStateType(
            not_any_=[StateType.RUNNING, StateType.CANCELLING])))
    deleted = 0
    try:
        with get_client(sync_client=True) as client:
            while True:
                runs = client.read_flow_runs(
                    flow_filter=flows, flow_run_filter=old,
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=batch)
                if not runs:
                    return deleted
                ids = [str(r.id) for r in runs]
                for i in range(0, len(ids), 50):  # Prefect's bulk limit
                    r = client.request("POST", "/flow_runs/bulk_delete", json={
                        "flow_runs": {"id": {"any_": ids[i:i + 50]}}, "limit": 50})
                    r.raise_for_status()
                    deleted += len(r.json().get("deleted", []))
    except (httpx.TransportError, PrefectHTTPStatusError, httpx.HTTPStatusError) as exc:
        raise PrefectUnavailable(str(exc)) from exc


async def ensure_clean_history_deployment(timezone: str = "UTC") -> UUID:
    """The daily `clean_history` deployment in ScriptFlow's pool (03:17 in `timezone`)."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.utilities.callables import parameter_schema

    from scriptflow_prefect.flows.clean_history import clean_history

    async def _do() -> UUID:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name(CLEAN_FLOW)
            return await client.create_deployment(
                flow_id=flow_id, name=CLEAN_DEPLOYMENT, tags=["scriptflow-maintenance"],
                description="Removes runs, logs and stored output older than the retention "
                            "period (managed by ScriptFlow).",
                parameters={},
                parameter_openapi_schema=parameter_schema(clean_history.fn)
                .model_dump_for_openapi(),
                work_pool_name=WORK_POOL, entrypoint=CLEAN_ENTRYPOINT,
                schedules=[DeploymentScheduleCreate(
                    schedule=CronSchedule(cron="17 3 * * *", timezone=timezone))],
                enforce_parameter_schema=False,
            )

    return await _call(_do())
