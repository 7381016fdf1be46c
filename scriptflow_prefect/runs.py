"""Runs as ScriptFlow shows them: read from Prefect (which owns run state), filtered to what a
user may see, with their output from the run's output file or, failing that, Prefect's logs."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import gateway, output_log
from .i18n import _
from .models import Script, User
from .scripts import ScriptError, visible_script_ids
from .settings import Settings

FINAL = {"succeeded", "failed", "timed_out", "cancelled", "crashed"}
STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "crashed")
TRIGGERS = ("manual", "scheduled", "retry")


def parse_run_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ScriptError(404, _("There is no run with id %(id)s.", id=value[:64])) from None


def _names(db: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(db.execute(select(Script.id, Script.name).where(Script.id.in_(ids))).all())


def runs_to_dicts(db: Session, flow_runs) -> list[dict[str, Any]]:
    ids = {int(fr.parameters.get("script_id")) for fr in flow_runs
           if isinstance(fr.parameters.get("script_id"), int)}
    names = _names(db, ids)
    return [gateway.run_to_dict(fr, names) for fr in flow_runs]


async def start_run(script: Script, runner=None) -> dict[str, Any]:
    if not script.deployment_id:
        raise ScriptError(409, _("This script has no deployment in Prefect; save it again."))
    try:
        flow_run = await gateway.create_manual_run(script.deployment_id)
    except gateway.PrefectUnavailable as exc:
        raise ScriptError(503, _("Prefect is not reachable: %(err)s", err=str(exc)[:200])) from exc
    if runner is not None:  # same process: start it now rather than at the next poll
        runner.wake()
    return gateway.run_to_dict(flow_run, {script.id: script.name})


async def visible_run(db: Session, user: User, run_id: str):
    uid = parse_run_id(run_id)
    flow_run = await gateway.read_run(uid)
    if flow_run is None:
        raise ScriptError(404, _("There is no run with id %(id)s.", id=run_id))
    allowed = visible_script_ids(db, user)
    if allowed is not None and flow_run.parameters.get("script_id") not in allowed:
        raise ScriptError(404, _("There is no run with id %(id)s.", id=run_id))
    return flow_run


async def list_runs(
    db: Session, user: User, *, script_id: int | None = None, statuses: list[str] | None = None,
    triggers: list[str] | None = None, since: datetime | None = None,
    until: datetime | None = None, page: int = 1, per_page: int = 20, q: str | None = None,
    settings: Settings | None = None,
) -> tuple[list[dict[str, Any]], int]:
    allowed = visible_script_ids(db, user)
    ids: list[int] | None = allowed
    if script_id is not None:
        if allowed is not None and script_id not in allowed:
            return [], 0
        ids = [script_id]
    query = gateway.RunQuery(script_ids=ids, statuses=statuses, since=since, until=until,
                             triggers=triggers)
    if q:
        return await _search_runs(db, query, q, settings, page, per_page)
    flow_runs, total = await gateway.read_runs(query, limit=per_page,
                                               offset=(page - 1) * per_page)
    return runs_to_dicts(db, flow_runs), total


SEARCH_SCAN_LIMIT = 2000


async def _search_runs(db, query, q: str, settings, page: int, per_page: int):
    """Runs whose output contains `q` (case-insensitive), newest first, with the first
    matching line. Scans the output files of the newest runs that match the other filters."""
    from .settings import get_settings

    settings = settings or get_settings()
    needle = q.casefold()
    matches = []
    offset = 0
    while offset < SEARCH_SCAN_LIMIT:
        batch, _total = await gateway.read_runs(query, limit=200, offset=offset)
        if not batch:
            break
        for fr in batch:
            line = await asyncio.to_thread(find_line, output_path(settings, fr.id), needle)
            if line is not None:
                matches.append((fr, line))
        offset += len(batch)
    total = len(matches)
    chosen = matches[(page - 1) * per_page: page * per_page]
    items = runs_to_dicts(db, [fr for fr, _l in chosen])
    for item, (_fr, line) in zip(items, chosen, strict=True):
        item["match"] = line
    return items, total


async def last_runs(script_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The newest run of each script, fetched concurrently."""

    async def one(sid: int):
        runs, _total = await gateway.read_runs(gateway.RunQuery(script_ids=[sid]), limit=1)
        return sid, (gateway.run_to_dict(runs[0]) if runs else None)

    pairs = await asyncio.gather(*(one(s) for s in script_ids))
    return {sid: run for sid, run in pairs if run}


def find_line(path: Path, needle: str) -> dict[str, str] | None:
    """The first output line containing `needle` (already casefolded), or None."""
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                record = output_log.parse_record(raw.rstrip(b"\n"))
                if needle in record["text"].casefold():
                    return record
    except FileNotFoundError:
        return None
    return None


def output_path(settings: Settings, run_id: UUID) -> Path:
    return settings.outputs_dir / f"{run_id}.log"


async def read_output(settings: Settings, flow_run, after: str | None, limit: int = 1000):
    """Lines after `after` (an opaque cursor), the next cursor, and whether that is all."""
    run = gateway.run_to_dict(flow_run)
    final = run["status"] in FINAL
    path = output_path(settings, flow_run.id)
    if path.exists():
        try:
            # A Prefect-log cursor ("<timestamp>~<n>") was taken while the run was queued,
            # before this file existed; no output line had been read yet, so start over.
            offset = 0 if after and "~" in after else int(after or 0)
            lines, nxt, more = await asyncio.to_thread(output_log.read_output, path, offset,
                                                       limit)
        except ValueError:
            raise ScriptError(400, _("The output cursor is not valid.")) from None
        size = path.stat().st_size
        return lines, str(nxt), final and not more and nxt >= size
    return await _read_prefect_logs(flow_run, after, limit, final)


async def _read_prefect_logs(flow_run, after: str | None, limit: int, final: bool):
    """Fallback when the output file is on another machine: the run's Prefect logs.

    Prefect pages logs by timestamp only, so the cursor is (timestamp, lines already seen
    at that timestamp) and duplicates at the boundary are skipped."""
    since, seen = None, 0
    if after:
        try:
            ts, _sep, n = after.rpartition("~")
            since, seen = datetime.fromisoformat(ts), int(n)
        except ValueError:
            raise ScriptError(400, _("The output cursor is not valid.")) from None
    logs = await gateway.read_logs(flow_run.id, since, limit=min(limit, 200) + seen)
    lines, last_ts, at_last = [], since, seen
    skipped = 0
    for log in logs:
        if since is not None and log.timestamp == since and skipped < seen:
            skipped += 1
            continue
        at_last = at_last + 1 if log.timestamp == last_ts else 1
        last_ts = log.timestamp
        stream = log.name.rsplit(".", 1)[-1]
        if log.name.startswith("prefect.flow_runs.") and stream in ("stdout", "stderr"):
            lines.append({"ts": log.timestamp.isoformat(), "stream": stream,
                          "text": log.message})
    cursor = f"{last_ts.isoformat()}~{at_last}" if last_ts else (after or "")
    return lines, cursor, final and len(logs) - skipped < min(limit, 200)
