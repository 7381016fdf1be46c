"""Runs as ScriptFlow shows them: read from Prefect (which owns run state), filtered to what a
user may see, as typed `Run`s (runs/models.py); start and cancel. Their output: runs/output.py.

History lists ask Prefect with indexed filters (history.scope: the scripts' deployments);
`q` searches the output index (history/index.py) and then asks Prefect about those runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from uuid import UUID

from prefect.client.schemas.objects import FlowRun
from sqlalchemy import select
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.history import index as history_index
from scriptflow_prefect.history import run_files
from scriptflow_prefect.history import service as history
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.settings import Settings, get_settings
from scriptflow_prefect.runs import prefect as runs_prefect
from scriptflow_prefect.runs.filters import RunQuery
from scriptflow_prefect.runs.models import FAILURES, FINAL, Run, RunFile
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.run_config import check_arguments, flow_parameters, run_config
from scriptflow_prefect.scripts.service import ScriptError, visible_script_ids


def parse_run_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ScriptError(404, _("There is no run with id %(id)s.", id=value[:64])) from None


def _names(db: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(db.execute(select(Script.id, Script.name).where(Script.id.in_(ids))).all())


def runs_of(db: Session, flow_runs: list[FlowRun]) -> list[Run]:
    """These Prefect runs as ScriptFlow's runs, named after their scripts' current names."""
    ids = {
        int(fr.parameters.get("script_id"))
        for fr in flow_runs
        if isinstance(fr.parameters.get("script_id"), int)
    }
    names = _names(db, ids)
    runs = [Run.from_flow_run(fr, names) for fr in flow_runs]
    settings = get_settings()
    for run in runs:  # kept beside the output file once the run ended
        if run.status in FINAL:
            files, run.files_complete = run_files.listed(settings, run.id)
            run.files = [RunFile(**f) for f in files]
    return runs


def run_of(db: Session, flow_run: FlowRun) -> Run:
    return runs_of(db, [flow_run])[0]


async def start_run(script: Script, runner=None, *, arguments: list[str] | None = None) -> Run:
    """Start a manual run; with `arguments`, this run only gets those instead of the
    script's own (a flow-run parameter: Prefect merges it over the deployment's)."""
    if not script.deployment_id:
        raise ScriptError(409, _("This script has no deployment in Prefect; save it again."))
    overrides = {} if arguments is None else {"arguments": check_arguments(arguments)}
    shown = {  # what the run shows while it is queued (Prefect merges the same)
        "script_id": script.id,
        "script_name": script.name,
        "version": script.current_version,
        **flow_parameters(run_config(script.settings)),
        **overrides,
    }
    try:
        flow_run = await runs_prefect.create_manual_run(
            script.deployment_id,
            overrides,
            shown,
            # same process: start it as soon as it exists rather than at the next poll
            then=runner.wake if runner is not None else None,
        )
    except platform_prefect.PrefectUnavailable as exc:
        raise ScriptError(503, _("Prefect is not reachable: %(err)s", err=str(exc)[:200])) from exc
    return Run.from_flow_run(flow_run, {script.id: script.name})


async def visible_run(db: Session, user: User, run_id: str) -> FlowRun:
    uid = parse_run_id(run_id)
    flow_run = await runs_prefect.read_run(uid)
    if flow_run is None:
        raise ScriptError(404, _("There is no run with id %(id)s.", id=run_id))
    allowed = visible_script_ids(db, user)
    if allowed is not None and flow_run.parameters.get("script_id") not in allowed:
        raise ScriptError(404, _("There is no run with id %(id)s.", id=run_id))
    return flow_run


async def list_runs(
    db: Session,
    user: User,
    *,
    script_id: int | None = None,
    statuses: list[str] | None = None,
    triggers: list[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = 1,
    per_page: int = 20,
    q: str | None = None,
    settings: Settings | None = None,
) -> tuple[list[Run], int]:
    """A page of the runs this user may see, newest first, and the exact total."""
    allowed = visible_script_ids(db, user)
    ids: list[int] | None = allowed
    if script_id is not None:
        if allowed is not None and script_id not in allowed:
            return [], 0
        ids = [script_id]
    query = history.scope(db, ids)
    query.statuses, query.since, query.until = statuses, since, until
    query.trigger = triggers[0] if triggers else None
    if q:
        return await _search_runs(db, query, q, settings or get_settings(), page, per_page)
    flow_runs, total = await history.read_runs(query, limit=per_page, offset=(page - 1) * per_page)
    return runs_of(db, flow_runs), total


def search_phrase(q: str) -> history_index.Phrase:
    try:
        return history_index.Phrase.parse(q)
    except history_index.QueryError:
        raise ScriptError(422, _("Search for at least one letter or digit.")) from None


async def _search_runs(
    db: Session, query: RunQuery, q: str, settings: Settings, page: int, per_page: int
) -> tuple[list[Run], int]:
    """Runs whose output holds the phrase `q`, newest first, each with its first matching
    line. The index finds them in the whole retention window; Prefect then applies the
    status and trigger filters to those runs only."""
    phrase = search_phrase(q)
    await history.catch_up(settings)
    hits = await asyncio.to_thread(
        history_index.search,
        settings,
        phrase,
        script_ids=query.script_ids,
        since=query.since,
        until=query.until,
    )
    offset = (page - 1) * per_page
    if query.statuses or query.trigger:
        hits = await _filter_hits(query, hits)
    total = len(hits)
    chosen = hits[offset : offset + per_page]
    by_id = {}
    if chosen:
        found, _n = await history.read_runs(
            RunQuery(run_ids=[UUID(h.run_id) for h in chosen]),
            limit=len(chosen),
            with_total=False,
        )
        by_id = {str(fr.id): fr for fr in found}
    pairs = [(by_id[h.run_id], h) for h in chosen if h.run_id in by_id]
    items = runs_of(db, [fr for fr, _h in pairs])
    for item, (_fr, hit) in zip(items, pairs, strict=True):
        item.match = await asyncio.to_thread(history_index.matching_line, settings, hit, phrase)
    return items, total


async def _filter_hits(query: RunQuery, hits: list) -> list:
    """The hits whose runs also match the query's status/trigger/time filters in Prefect,
    in the same order (Prefect's light rows, up to 1000 runs a request)."""
    keep: set[str] = set()
    for i in range(0, len(hits), 1000):
        part = hits[i : i + 1000]
        sub = RunQuery(
            run_ids=[UUID(h.run_id) for h in part],
            statuses=query.statuses,
            trigger=query.trigger,
            since=query.since,
            until=query.until,
        )
        rows = await history.read_rows(sub, limit=len(part))
        keep.update(str(r["id"]) for r in rows)
    return [h for h in hits if h.run_id in keep]


async def runs_by_ids(db: Session, user: User, ids: list[str]) -> list[Run]:
    """These runs as this user may see them (others are left out), for live status."""
    uuids = []
    for value in ids[:200]:
        try:
            uuids.append(UUID(value))
        except ValueError:
            continue
    if not uuids:
        return []
    runs, _n = await history.read_runs(RunQuery(run_ids=uuids), limit=len(uuids), with_total=False)
    allowed = visible_script_ids(db, user)
    return [r for r in runs_of(db, runs) if allowed is None or r.script_id in allowed]


EXPORT_BATCH = 200
CSV_COLUMNS = (
    "id",
    "script_id",
    "script_name",
    "status",
    "trigger",
    "scheduled_at",
    "started_at",
    "ended_at",
    "duration_seconds",
    "exit_code",
    "script_version",
)


async def export_runs(
    db: Session, user: User, *, q: str | None = None, settings: Settings | None = None, **filters
) -> AsyncIterator[list[Run]]:
    """Every run matching the filters, newest first, in batches (for the CSV export).
    Without `q` it pages by expected start time (keyset), so the cost stays flat."""
    if q:
        page = 1
        while True:
            items, total = await list_runs(
                db, user, q=q, settings=settings, page=page, per_page=EXPORT_BATCH, **filters
            )
            if items:
                yield items
            if page * EXPORT_BATCH >= total or not items:
                return
            page += 1
    allowed = visible_script_ids(db, user)
    ids = allowed
    script_id = filters.get("script_id")
    if script_id is not None:
        if allowed is not None and script_id not in allowed:
            return
        ids = [script_id]
    query = history.scope(db, ids)
    query.statuses, query.since = filters.get("statuses"), filters.get("since")
    query.until = filters.get("until")
    query.trigger = (filters.get("triggers") or [None])[0]
    seen: set[str] = set()
    offset = 0
    while True:
        runs, _n = await history.read_runs(
            query,
            limit=EXPORT_BATCH,
            offset=offset,
            with_total=False,
            sort="EXPECTED_START_TIME_DESC",
        )
        fresh = [r for r in runs if str(r.id) not in seen]
        if fresh:
            yield runs_of(db, fresh)
        if len(runs) < EXPORT_BATCH:
            return
        last = runs[-1].expected_start_time
        if query.until is not None and last >= query.until:
            offset += EXPORT_BATCH  # a full batch at one instant: step over it
        else:
            query.until, offset = last, 0  # `until` is inclusive: the seen set drops repeats
        seen = {str(r.id) for r in runs if r.expected_start_time == last}


def csv_text(value: str) -> str:
    """Text from users or scripts, made inert for spreadsheets: a cell starting with = + - @
    would be read as a formula (OWASP "CSV injection")."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_values(run: Run) -> list[str]:
    out = []
    for key in CSV_COLUMNS:
        v = getattr(run, key)
        text = v.isoformat() if isinstance(v, datetime) else "" if v is None else str(v)
        out.append(csv_text(text) if key == "script_name" else text)
    return out


async def last_runs(script_ids: list[int]) -> dict[int, Run]:
    """The newest run of each script (one query for most, then one per script left)."""
    found = await runs_prefect.latest_runs(script_ids)
    return {sid: Run.from_flow_run(fr) for sid, fr in found.items()}


async def cancel(flow_run: FlowRun) -> str:
    """Ask Prefect to cancel the run: "cancelled" (it had not started), "cancelling" (its
    worker stops the script's process tree) or "final" (it had already ended)."""
    flow_run = await runs_prefect.created(flow_run)  # a queued "Run now": once Prefect has it
    return await runs_prefect.cancel_run(flow_run.id)


async def reread(flow_run: FlowRun) -> FlowRun:
    """The run as Prefect has it now (or as it was, if Prefect no longer has it)."""
    return await runs_prefect.read_run(flow_run.id) or flow_run


def can_acknowledge(flow_run: FlowRun) -> bool:
    """Only a failed run can be acknowledged."""
    return Run.from_flow_run(flow_run).status in FAILURES
