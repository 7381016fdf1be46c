"""Crash recovery at a worker's start: no run stays `running` with no process behind it.

Before a worker takes new runs (`ScriptFlowWorker.start`, so `scriptflow up` and
`scriptflow worker` alike), for each run a dead worker process of this home left behind
(active_runs.py):

1. whatever is left of its script is stopped, whole tree (execution/leftovers.py: the
   recorded process if pid AND start time match, its session, the processes whose
   environment names the run, their descendants): SIGTERM, 2 s, SIGKILL;
2. if Prefect still says the run is Pending or Running, it ends Crashed (forced: Prefect
   refuses some transitions otherwise) with a message saying when ScriptFlow was last known
   alive and whether its script was still running (`crashed_restart[_ended]`); a run whose
   cancel had been asked for ends Cancelled;
3. the record goes.

Runs Prefect says are Pending/Running in ScriptFlow's pool but that have no record (a crash
between the take and the record, a lost home) are found by the worker identity the worker
writes in the run's `infrastructure_pid` (Prefect's own write when a run starts, no extra
one): `<worker name>@<host>:<pid>:<start time>`. Those of this worker's name on this host
whose process is gone are treated the same way (their processes found by the run's id).

A worker that never comes back is the server's job: runs/dead_man.py."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Crashed

from scriptflow_prefect.execution import leftovers
from scriptflow_prefect.execution.leftovers import ProcessIdentity
from scriptflow_prefect.platform.prefect_names import WORK_POOL
from scriptflow_prefect.runs import active_runs
from scriptflow_prefect.runs.messages import RunMessage

log = logging.getLogger("scriptflow.recovery")
UNFINISHED = (StateType.PENDING, StateType.RUNNING, StateType.CANCELLING)
PAGE = 200


@dataclass(frozen=True)
class Recovered:
    """What the reconcile did for one run (logged; the tests and bench read it too)."""

    flow_run_id: str
    stopped: int  # processes of its script that were stopped
    ended_as: str | None  # the state Prefect was given, None if the run had already ended


def owner_label(worker: str, owner: ProcessIdentity) -> str:
    """The run's `infrastructure_pid`: which worker process on which host runs it."""
    return f"{worker}@{platform.node()}:{owner.pid}:{owner.create_time:.2f}"


def parse_owner(value: str | None) -> tuple[str, str, ProcessIdentity] | None:
    """(worker, host, process) from an `owner_label`; None for anything else."""
    try:
        who, _at, rest = (value or "").rpartition("@")
        host, pid, created = rest.split(":")
        return who, host, ProcessIdentity(int(pid), float(created), None)
    except ValueError:
        return None


async def reconcile(client: PrefectClient, home: Path, worker: str) -> list[Recovered]:
    """Stop and end what dead workers of `home` left (see the module's docstring)."""
    done: list[Recovered] = []
    for record in await anyio.to_thread.run_sync(active_runs.leftover, home):
        found = await anyio.to_thread.run_sync(
            leftovers.find_leftovers, record.script, record.flow_run_id, record.taken_at - 1
        )
        at = await _last_alive(client, record.worker, record.taken_at)
        done.append(await _end(client, record.flow_run_id, found, at))
        await anyio.to_thread.run_sync(active_runs.ended, home, record.flow_run_id)
    seen = {r.flow_run_id for r in done}
    for run in await _unfinished_runs_of(client, worker):
        if str(run.id) in seen:
            continue
        since = (run.start_time or run.created or datetime.now(UTC)).timestamp()
        found = await anyio.to_thread.run_sync(
            leftovers.find_leftovers, None, str(run.id), since - 1
        )
        at = await _last_alive(client, worker, since)
        done.append(await _end(client, str(run.id), found, at))
    for item in done:
        log.warning(
            "run %s was left by a worker that stopped unexpectedly: %d process(es) stopped, %s",
            item.flow_run_id,
            item.stopped,
            f"ended {item.ended_as}" if item.ended_as else "it had already ended",
        )
    return done


async def _end(client: PrefectClient, run_id: str, found: list, at: datetime) -> Recovered:
    if found:
        await anyio.to_thread.run_sync(leftovers.stop, found)
    try:
        run = await client.read_flow_run(UUID(run_id))
    except (ObjectNotFound, ValueError):
        return Recovered(run_id, len(found), None)
    if run.state is None or run.state.type not in UNFINISHED:
        return Recovered(run_id, len(found), None)
    when = at.isoformat(timespec="minutes")
    if run.state.type == StateType.CANCELLING:
        msg, state = RunMessage("cancelled"), Cancelled
    else:
        code = "crashed_restart" if found else "crashed_restart_ended"
        msg, state = RunMessage(code, {"at": when}), Crashed
    labels: dict[str, Any] = msg.label()
    await client.update_flow_run_labels(run.id, labels)  # before the state: read together
    await client.set_flow_run_state(run.id, state(message=msg.text), force=True)
    return Recovered(run_id, len(found), state.__name__.lower())


async def _unfinished_runs_of(client: PrefectClient, worker: str) -> list[FlowRun]:
    """Unfinished runs in ScriptFlow's pool owned by a gone process of `worker` on this host."""
    runs: list[FlowRun] = []
    while True:  # Prefect answers at most 200 at a time
        page = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(UNFINISHED)))
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[WORK_POOL])),
            limit=PAGE,
            offset=len(runs),
        )
        runs += page
        if len(page) < PAGE:
            break
    mine = []
    for run in runs:
        owner = parse_owner(run.infrastructure_pid)
        if owner is None or owner[0] != worker or owner[1] != platform.node():
            continue
        alive = leftovers.identity_of(owner[2].pid)
        if alive is None or abs(alive.create_time - owner[2].create_time) > 0.05:
            mine.append(run)
    return mine


async def _last_alive(client: PrefectClient, worker: str, since: float) -> datetime:
    """When the dead worker was last known alive: its last heartbeat in Prefect (every 30 s),
    else when it took the run."""
    last = datetime.fromtimestamp(since, UTC)
    try:
        workers = await client.read_workers_for_work_pool(WORK_POOL)
    except Exception as exc:  # the time is a detail: never fail the recovery for it
        log.debug("reading the worker's last heartbeat failed: %s", exc)
        return last
    beats = [w.last_heartbeat_time for w in workers if w.name == worker and w.last_heartbeat_time]
    return max([last, *beats])
