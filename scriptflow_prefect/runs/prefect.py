"""Runs in Prefect: create, read, cancel, the newest run of each script, logs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID, uuid4

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterIdempotencyKey,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterTimestamp,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelled, Cancelling, Scheduled

from scriptflow_prefect.platform import prefect_budget
from scriptflow_prefect.platform.prefect import PrefectUnavailable, call, retry_busy, shared_client
from scriptflow_prefect.platform.prefect_names import TAG, script_tag
from scriptflow_prefect.runs.filters import RunQuery
from scriptflow_prefect.runs.messages import RunMessage
from scriptflow_prefect.runs.models import Trigger

log = logging.getLogger("scriptflow.runs")


# API.md: "Run now" is answered within 2 s whatever the load. Prefect on SQLite takes one write
# at a time, so fifty creates at once on a loaded machine finish seconds apart: a create still
# going after ANSWER_WITHIN goes on in the background (its idempotency key makes a retried
# create that did reach the server no second run) and the answer is the run, queued, under
# that key as its id until Prefect has it (read_run finds it by either).
ANSWER_WITHIN = 1.5
# How long a background create keeps trying while Prefect is unreachable.
KEEP_TRYING = 600.0

_creating: dict[UUID, tuple[asyncio.Task, FlowRun]] = {}
# SQLite's json_array() takes at most 127 arguments (SQLITE_MAX_FUNCTION_ARG): Prefect's tag
# filter (one tag per script) answers 500 past that.
MAX_TAGS_PER_QUERY = 100


async def create_manual_run(
    deployment_id: str | UUID,
    parameters: dict[str, Any],
    shown: dict[str, Any],
    then: Callable[[], None] | None = None,
) -> FlowRun:
    """A manual run; `parameters` override the deployment's for this run only; `shown` are
    the parameters the queued run shows while Prefect has not created it yet; `then` is
    called once Prefect has created it (also when that happens after the answer)."""
    key = uuid4()

    async def _do():
        client = await shared_client()
        return await client.create_flow_run_from_deployment(
            UUID(str(deployment_id)),
            parameters=parameters or None,
            tags=[Trigger.MANUAL.tag],
            idempotency_key=str(key),
        )

    async def _create():
        # This task's context is a copy of the page's: past the answer, the page's Prefect
        # budget would cut every retry at once and the queued run would never be made.
        prefect_budget.detach()
        deadline = time.monotonic() + KEEP_TRYING
        while True:
            try:
                # Quick retries on SQLite's busy answer (and a short Retry-After from the
                # embedded server) instead of the client's 2-4-8-16 s back-off.
                return await call(retry_busy(_do, window=60.0))
            except PrefectUnavailable as exc:
                if _refused(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(2.0)

    task = asyncio.ensure_future(_create())
    try:
        flow_run = await asyncio.wait_for(asyncio.shield(task), ANSWER_WITHIN)
    except TimeoutError:
        queued = _queued_run(key, deployment_id, shown)
        _creating[key] = (task, queued)
        task.add_done_callback(partial(_created, key, then))
        return queued
    if then is not None:
        then()
    return flow_run


def _refused(exc: PrefectUnavailable) -> bool:
    """Prefect answered and said no (not a busy or unreachable server): trying again would
    not help."""
    cause = exc.__cause__
    return isinstance(cause, PrefectHTTPStatusError) and cause.response.status_code < 500


def _created(key: UUID, then: Callable[[], None] | None, task: asyncio.Task) -> None:
    _creating.pop(key, None)
    if task.cancelled():
        return
    if task.exception() is not None:
        log.error("a queued manual run %s could not be created: %s", key, task.exception())
    elif then is not None:
        then()


def _queued_run(key: UUID, deployment_id: str | UUID, shown: dict[str, Any]) -> FlowRun:
    now = datetime.now(UTC)
    script_id = shown.get("script_id")
    tags = [TAG, Trigger.MANUAL.tag] + ([script_tag(script_id)] if script_id else [])
    return FlowRun(
        id=key,
        name="queued",
        flow_id=UUID(int=0),  # not known before Prefect creates it
        deployment_id=UUID(str(deployment_id)),
        parameters=shown,
        tags=tags,
        idempotency_key=str(key),
        state=Scheduled(scheduled_time=now),
        expected_start_time=now,
    )


async def created(flow_run: FlowRun) -> FlowRun:
    """The run as Prefect created it, once it has (a queued run waits for its create)."""
    entry = _creating.get(flow_run.id)
    if entry is not None:
        return await asyncio.shield(entry[0])
    return flow_run


async def read_run(run_id: UUID) -> FlowRun | None:
    """The run with this id, or the manual run created with it as its idempotency key (the id
    a "Run now" answered while the run was still queued: create_manual_run)."""
    entry = _creating.get(run_id)
    if entry is not None:
        return entry[1]

    async def _do():
        async with get_client() as client:
            try:
                fr = await client.read_flow_run(run_id)
            except ObjectNotFound:
                runs = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        idempotency_key=FlowRunFilterIdempotencyKey(any_=[str(run_id)]),
                        tags=FlowRunFilterTags(all_=[TAG]),
                    ),
                    limit=1,
                )
                fr = runs[0] if runs else None
            return fr if fr is not None and TAG in fr.tags else None

    return await call(_do())


async def latest_runs(script_ids: list[int]) -> dict[int, FlowRun]:
    """The newest run of each script, on one client: a single query over the newest runs of
    all of them answers for most; only scripts that ran long ago get a query of their own
    (at most 8 at a time). A dashboard of 150 scripts is not 150 concurrent clients."""
    if not script_ids:
        return {}
    if len(script_ids) > MAX_TAGS_PER_QUERY:  # one query's tag filter takes at most 127
        found: dict[int, FlowRun] = {}
        for i in range(0, len(script_ids), MAX_TAGS_PER_QUERY):
            found.update(await latest_runs(script_ids[i : i + MAX_TAGS_PER_QUERY]))
        return found
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
