"""History in Prefect: run lists and exact counts that stay fast at 100 000 runs, retention."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import PrefectHTTPStatusError

from scriptflow_prefect.platform.prefect import (
    PrefectUnavailable,
    call,
    flow_parameter_schema,
    shared_client,
)
from scriptflow_prefect.platform.prefect_names import (
    CLEAN_DEPLOYMENT,
    CLEAN_ENTRYPOINT,
    CLEAN_FLOW,
    SCRIPTFLOW_FLOWS,
    TAG,
    WORK_POOL,
)
from scriptflow_prefect.runs.filters import RunQuery
from scriptflow_prefect.runs.models import FINAL


async def read_history(
    query: RunQuery,
    *,
    limit: int = 20,
    offset: int = 0,
    with_total: bool = True,
    sort: str | None = None,
) -> tuple[list[FlowRun], int]:
    """A page of runs, newest first, and the exact total: both queries at once.

    Newest by expected start (the scheduled time; a manual run's is when it was asked for),
    or, with a status filter, by start: the orders of Prefect's indexes (expected time;
    state type + start), which let SQLite stop at the end of the page."""
    if query.empty:
        return [], 0
    sort = sort or ("START_TIME_DESC" if query.statuses else "EXPECTED_START_TIME_DESC")

    async def _do():
        client = await shared_client()
        read = client.read_flow_runs(
            flow_run_filter=query.flow_run_filter(),
            sort=FlowRunSort[sort],
            limit=limit,
            offset=offset,
        )
        if not with_total:
            return await read, -1
        runs, total = await asyncio.gather(read, _exact_count(client, query))
        return runs, total

    return await call(_do())


_others: dict[str, Any] = {"at": 0.0, "scope": None, "ids": []}


async def _other_deployment_ids(client, scope: list[UUID]) -> list[UUID]:
    """Deployments in Prefect that are not the scripts' (digest, clean-up, a power user's),
    cached for a minute: there are few and they change rarely."""
    key = frozenset(scope)
    if _others["scope"] != key or time.monotonic() - _others["at"] > 60:
        ids, offset = [], 0
        while True:
            r = await client.request(
                "POST", "/deployments/filter", json={"limit": 200, "offset": offset}
            )
            r.raise_for_status()
            page = r.json()
            ids += [UUID(d["id"]) for d in page]
            if len(page) < 200:
                break
            offset += 200
        _others.update(at=time.monotonic(), scope=key, ids=[i for i in ids if i not in key])
    return list(_others["ids"])


async def _exact_count(client, query: RunQuery) -> int:
    """The exact number of runs the query matches, asked the way Prefect's SQLite answers it
    from indexes where it can. A condition on a run's tags is a JSON test on every run in
    reach (~2.5 µs each) and a second column makes SQLite read each run's row (~6 µs): for
    100 000 runs the plain count of "every script's runs" takes ~0.45 s.

    So without a status or time filter, the runs of the scripts' deployments are counted
    through the deployment index (with no trigger: from the index alone, minus the runs
    scheduled ahead, found through the expected-time index), and the runs tagged
    `scriptflow` of other existing deployments or of none are added. (Runs of a deployment
    Prefect no longer has count only if it was a script's: ScriptFlow knows all of those.)"""
    flow_runs = query.flow_run_filter()

    def count(**kw):
        return client.count_flow_runs(flow_run_filter=FlowRunFilter(**kw))

    if (
        not query.deployment_ids
        or query.since
        or query.until
        or query.run_ids
        or ((query.statuses or query.trigger) and query.script_ids is not None)
    ):
        return await client.count_flow_runs(flow_run_filter=flow_runs)
    if query.statuses or query.trigger:  # every script (an admin): too many runs to test
        if set(query.statuses or ()) <= FINAL:
            return await _kept_count(client, query)
        return await client.count_flow_runs(flow_run_filter=flow_runs)
    now = query.end()
    dep = FlowRunFilterDeploymentId(any_=query.deployment_ids)
    ahead = FlowRunFilterExpectedStartTime(after_=now + timedelta(microseconds=1))
    past = FlowRunFilterExpectedStartTime(before_=now)
    none = FlowRunFilterDeploymentId(is_null_=True)
    if query.script_ids is not None:  # no status or trigger here: handled above
        in_scope, later = await asyncio.gather(
            count(deployment_id=dep), count(deployment_id=dep, expected_start_time=ahead)
        )
        return in_scope - later
    others = await _other_deployment_ids(client, query.deployment_ids)
    other = FlowRunFilterDeploymentId(any_=others or [UUID(int=0)])
    tagged = FlowRunFilterTags(any_=[TAG])
    # Runs ahead of now are scheduled ones of existing deployments (Prefect deletes those
    # with their deployment): all of them, minus other deployments' and deployment-less.
    (
        in_scope,
        ahead_all,
        ahead_other,
        ahead_none,
        tagged_other,
        tagged_none,
    ) = await asyncio.gather(
        count(deployment_id=dep),
        count(expected_start_time=ahead),
        count(deployment_id=other, expected_start_time=ahead),
        count(deployment_id=none, expected_start_time=ahead),
        count(deployment_id=other, tags=tagged, expected_start_time=past),
        count(deployment_id=none, tags=tagged, expected_start_time=past),
    )
    return in_scope - (ahead_all - ahead_other - ahead_none) + tagged_other + tagged_none


NOT_FINAL = [
    StateType.SCHEDULED,
    StateType.PENDING,
    StateType.PAUSED,
    StateType.RUNNING,
    StateType.CANCELLING,
]


_kept: dict[tuple, tuple[int, int, datetime, list[UUID]]] = {}


LIGHT_LIMIT = 1000


KEPT_FILTERS = 32


async def _kept_count(client, query: RunQuery) -> int:
    """Every script's runs with a trigger and/or a final status. The plain count tests a
    JSON tag on each of up to 100 000 runs (0.4-0.9 s), so a count made once is kept and
    brought forward: plus the matching runs expected since (an indexed range), plus those of
    the runs not finished then that match now (a trigger never changes; a finished run stays
    finished). That holds while the runs up to now grew by exactly the runs expected since:
    nothing deleted (retention), nothing added in the past; otherwise it counts afresh.
    (A power user who sets a finished run back to Scheduled in Prefect's UI makes a kept
    status count one too high until the next afresh count, e.g. after a restart.)"""
    key = (query.trigger, tuple(query.statuses or ()), tuple(query.deployment_ids or ()))
    # Read in this order: the kept count (made from reads that all came before), then the
    # runs that arrived since, then the total. A run that shows up between two reads then
    # makes the totals disagree, and the count is made afresh instead of going wrong.
    kept = _kept.get(key)
    edge = datetime.now(UTC)
    scope = RunQuery(deployment_ids=query.deployment_ids, edge=edge)

    async def ids(q: RunQuery, state: list[StateType] | None = None) -> list[UUID]:
        """Up to LIGHT_LIMIT ids: runs not finished, or expected since."""
        f = q.flow_run_filter()
        if state:
            f.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=state))
        return [UUID(row["id"]) for row in await ui_flow_run_history(client, f, LIGHT_LIMIT)]

    def matching(q: RunQuery) -> Any:
        """Count q's runs. With a status, the runs not finished at `edge` are left out
        by id: they are counted once they are finished, from the kept list."""
        f = q.flow_run_filter()
        if query.statuses and pending:
            f.id = FlowRunFilterId(any_=f.id.any_ if f.id else None, not_any_=pending)
        return client.count_flow_runs(flow_run_filter=f)

    def keep(counted: int) -> int:
        _kept.pop(key, None)  # newest last; the oldest of many filters is forgotten
        _kept[key] = (counted, total, edge, pending)
        while len(_kept) > KEPT_FILTERS:
            _kept.pop(next(iter(_kept)))
        return counted

    arrived: list[UUID] | None = None
    if kept is not None and kept[2] < edge:
        arrived = await ids(RunQuery(since=kept[2] + timedelta(microseconds=1), edge=edge))
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
                counted += await matching(
                    RunQuery(
                        run_ids=look, statuses=query.statuses, trigger=query.trigger, edge=edge
                    )
                )
            return keep(counted)
    return keep(await matching(replace(query, edge=edge)))


async def read_history_light(
    query: RunQuery, *, limit: int = 1000, offset: int = 0
) -> list[dict[str, Any]]:
    """id, state type, start (or expected start) and run time of up to 1000 runs, newest
    first: Prefect's light run-history rows, for summaries."""
    if query.empty:
        return []

    async def _do():
        return await ui_flow_run_history(
            await shared_client(), query.flow_run_filter(), limit, offset, sort="START_TIME_DESC"
        )

    return await call(_do())


UI_HISTORY_FIELDS = ("id", "state_type", "timestamp", "duration")


async def ui_flow_run_history(
    client, flow_runs: FlowRunFilter, limit: int, offset: int = 0, sort: str | None = None
) -> list[dict[str, Any]]:
    """Prefect's light run rows (no tags, parameters or state details): {"id", "state_type",
    "timestamp", "duration", ...}, from the UI's own `/ui/flow_runs/history` endpoint, a
    tenth of the cost of full runs. It is private to Prefect's UI: this is its one caller,
    and tests/test_history_api.py fails if the fields in UI_HISTORY_FIELDS change."""
    body: dict[str, Any] = {
        "limit": limit,
        "offset": offset,
        "flows": None,
        "flow_runs": flow_runs.model_dump(mode="json"),
    }
    if sort:
        body["sort"] = sort
    r = await client.request("POST", "/ui/flow_runs/history", json=body)
    r.raise_for_status()
    rows = r.json()
    if rows and not set(UI_HISTORY_FIELDS) <= set(rows[0]):
        # A Prefect upgrade changed its UI's private rows: say so instead of a KeyError later.
        raise PrefectUnavailable(f"Prefect's /ui/flow_runs/history rows changed: {sorted(rows[0])}")
    return rows


def delete_old_runs(cutoff: datetime, *, batch: int = 200) -> int:
    """Delete ScriptFlow's flow runs (Prefect then deletes their logs) expected before
    `cutoff`, except those still running. Synchronous: the clean_history flow calls it.
    Returns how many runs went."""
    flows = FlowFilter(name=FlowFilterName(any_=list(SCRIPTFLOW_FLOWS)))
    old = FlowRunFilter(
        expected_start_time=FlowRunFilterExpectedStartTime(before_=cutoff),
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(not_any_=[StateType.RUNNING, StateType.CANCELLING])
        ),
    )
    deleted = 0
    try:
        with get_client(sync_client=True) as client:
            while True:
                runs = client.read_flow_runs(
                    flow_filter=flows,
                    flow_run_filter=old,
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                    limit=batch,
                )
                if not runs:
                    return deleted
                ids = [str(r.id) for r in runs]
                for i in range(0, len(ids), 50):  # Prefect's bulk limit
                    r = client.request(
                        "POST",
                        "/flow_runs/bulk_delete",
                        json={"flow_runs": {"id": {"any_": ids[i : i + 50]}}, "limit": 50},
                    )
                    r.raise_for_status()
                    deleted += len(r.json().get("deleted", []))
    except (httpx.TransportError, PrefectHTTPStatusError, httpx.HTTPStatusError) as exc:
        raise PrefectUnavailable(str(exc)) from exc


async def ensure_clean_history_deployment(timezone: str = "UTC") -> UUID:
    """The daily `clean_history` deployment in ScriptFlow's pool (03:17 in `timezone`)."""
    from prefect.client.schemas.schedules import CronSchedule

    async def _do() -> UUID:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name(CLEAN_FLOW)
            return await client.create_deployment(
                flow_id=flow_id,
                name=CLEAN_DEPLOYMENT,
                tags=["scriptflow-maintenance"],
                description="Removes runs, logs and stored output older than the retention "
                "period (managed by ScriptFlow).",
                parameters={},
                parameter_openapi_schema=flow_parameter_schema(CLEAN_ENTRYPOINT),
                work_pool_name=WORK_POOL,
                entrypoint=CLEAN_ENTRYPOINT,
                schedules=[
                    DeploymentScheduleCreate(
                        schedule=CronSchedule(cron="17 3 * * *", timezone=timezone)
                    )
                ],
                enforce_parameter_schema=False,
            )

    return await call(_do())
