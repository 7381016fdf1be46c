"""Runs as ScriptFlow shows them: read from Prefect (which owns run state), filtered to what a
user may see, with their output from the run's output file or, failing that, Prefect's logs.

History lists ask Prefect with indexed filters (history.scope: the scripts' deployments);
`q` searches the output index (history_index.py) and then asks Prefect about those runs."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.history import index as history_index
from scriptflow_prefect.history import output as ho
from scriptflow_prefect.history import output_log
from scriptflow_prefect.history import prefect as history_prefect
from scriptflow_prefect.history import service as history
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.runs import prefect as runs_prefect
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.service import ScriptError, visible_script_ids

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
    ids = {
        int(fr.parameters.get("script_id"))
        for fr in flow_runs
        if isinstance(fr.parameters.get("script_id"), int)
    }
    names = _names(db, ids)
    return [runs_prefect.run_to_dict(fr, names) for fr in flow_runs]


async def start_run(script: Script, runner=None) -> dict[str, Any]:
    if not script.deployment_id:
        raise ScriptError(409, _("This script has no deployment in Prefect; save it again."))
    try:
        flow_run = await runs_prefect.create_manual_run(script.deployment_id)
    except platform_prefect.PrefectUnavailable as exc:
        raise ScriptError(503, _("Prefect is not reachable: %(err)s", err=str(exc)[:200])) from exc
    if runner is not None:  # same process: start it now rather than at the next poll
        runner.wake()
    return runs_prefect.run_to_dict(flow_run, {script.id: script.name})


async def visible_run(db: Session, user: User, run_id: str):
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
) -> tuple[list[dict[str, Any]], int]:
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
        from scriptflow_prefect.platform.settings import get_settings

        return await _search_runs(db, query, q, settings or get_settings(), page, per_page)
    flow_runs, total = await history_prefect.read_history(
        query, limit=per_page, offset=(page - 1) * per_page
    )
    return runs_to_dicts(db, flow_runs), total


def search_phrase(q: str) -> history_index.Phrase:
    try:
        return history_index.Phrase.parse(q)
    except history_index.QueryError:
        raise ScriptError(422, _("Search for at least one letter or digit.")) from None


async def _search_runs(
    db, query: history_prefect.HistoryQuery, q: str, settings, page: int, per_page: int
):
    """Runs whose output holds the phrase `q`, newest first, each with its first matching
    line. The index finds them in the whole retention window; Prefect then applies the
    status and trigger filters to those runs only."""
    phrase = search_phrase(q)
    await catch_up(settings)
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
        found, _n = await history_prefect.read_history(
            history_prefect.HistoryQuery(run_ids=[UUID(h.run_id) for h in chosen]),
            limit=len(chosen),
            with_total=False,
        )
        by_id = {str(fr.id): fr for fr in found}
    pairs = [(by_id[h.run_id], h) for h in chosen if h.run_id in by_id]
    items = runs_to_dicts(db, [fr for fr, _h in pairs])
    for item, (_fr, hit) in zip(items, pairs, strict=True):
        item["match"] = await asyncio.to_thread(history_index.matching_line, settings, hit, phrase)
    return items, total


async def _filter_hits(query: history_prefect.HistoryQuery, hits: list) -> list:
    """The hits whose runs also match the query's status/trigger/time filters in Prefect,
    in the same order (Prefect's light rows, up to 1000 runs a request)."""
    keep: set[str] = set()
    for i in range(0, len(hits), 1000):
        part = hits[i : i + 1000]
        sub = history_prefect.HistoryQuery(
            run_ids=[UUID(h.run_id) for h in part],
            statuses=query.statuses,
            trigger=query.trigger,
            since=query.since,
            until=query.until,
        )
        rows = await history_prefect.read_history_light(sub, limit=len(part))
        keep.update(str(r["id"]) for r in rows)
    return [h for h in hits if h.run_id in keep]


_caught_up = {"at": 0.0}
CATCH_UP_SECONDS = 3.0


async def catch_up(settings: Settings, *, force: bool = False) -> int:
    """Index finished runs whose output this machine has but the index does not (a worker
    that stopped before indexing, runs from before the index). At most every CATCH_UP_SECONDS."""
    if not force and time.monotonic() - _caught_up["at"] < CATCH_UP_SECONDS:
        return 0
    _caught_up["at"] = time.monotonic()
    missing = await asyncio.to_thread(history_index.unindexed_runs, settings)
    done = 0
    for i in range(0, len(missing), 200):
        part = [UUID(r) for r in missing[i : i + 200]]
        runs, _n = await history_prefect.read_history(
            history_prefect.HistoryQuery(run_ids=part), limit=len(part), with_total=False
        )
        for fr in runs:
            if runs_prefect.run_status(fr) not in FINAL:
                continue
            sid = (fr.parameters or {}).get("script_id")
            job = (settings, fr.id)
            kwargs = {
                "script_id": sid if isinstance(sid, int) else None,
                "expected": fr.expected_start_time or fr.created,
            }
            path = history_index.plain_path(settings, fr.id)
            if path.exists() and path.stat().st_size > history_index.SYNC_INDEX_BYTES:
                history_index.indexer.submit(
                    lambda job=job, kwargs=kwargs: history_index.index_run(*job, **kwargs)
                )
            else:
                await asyncio.to_thread(history_index.index_run, *job, **kwargs)
            done += 1
    return done


async def runs_by_ids(db: Session, user: User, ids: list[str]) -> list[dict[str, Any]]:
    """These runs as this user may see them (others are left out), for live status."""
    uuids = []
    for value in ids[:200]:
        try:
            uuids.append(UUID(value))
        except ValueError:
            continue
    if not uuids:
        return []
    runs, _n = await history_prefect.read_history(
        history_prefect.HistoryQuery(run_ids=uuids), limit=len(uuids), with_total=False
    )
    allowed = visible_script_ids(db, user)
    items = runs_to_dicts(db, runs)
    return [r for r in items if allowed is None or r["script_id"] in allowed]


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
    db: Session, user: User, *, q: str | None = None, settings=None, **filters
) -> Any:
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
        runs, _n = await history_prefect.read_history(
            query,
            limit=EXPORT_BATCH,
            offset=offset,
            with_total=False,
            sort="EXPECTED_START_TIME_DESC",
        )
        fresh = [r for r in runs if str(r.id) not in seen]
        if fresh:
            yield runs_to_dicts(db, fresh)
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


def csv_values(run: dict[str, Any]) -> list[str]:
    out = []
    for key in CSV_COLUMNS:
        v = run.get(key)
        text = v.isoformat() if isinstance(v, datetime) else "" if v is None else str(v)
        out.append(csv_text(text) if key == "script_name" else text)
    return out


async def last_runs(script_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The newest run of each script (one query for most, then one per script left)."""
    found = await runs_prefect.latest_runs(script_ids)
    return {sid: runs_prefect.run_to_dict(fr) for sid, fr in found.items()}


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


def _cursor(after: str | None) -> int:
    # A Prefect-log cursor ("<timestamp>~<n>") was taken while the run was queued, before
    # the output file existed; no output line had been read yet, so start over.
    if after and "~" in after:
        return 0
    try:
        return int(after or 0)
    except ValueError:
        raise ScriptError(400, _("The output cursor is not valid.")) from None


def _with_source(settings: Settings, run_id, read):
    """`read(source)` on the run's stored output (plain or compressed); the plain file can be
    replaced by the compressed one between two calls, so a vanished file is tried again."""
    for attempt in range(2):
        try:
            with history_index.source(settings, run_id) as src:
                return read(src)
        except FileNotFoundError:
            if attempt:
                raise
        except ho.CursorError:
            raise ScriptError(400, _("The output cursor is not valid.")) from None
    raise AssertionError("unreachable")


async def read_output(settings: Settings, flow_run, after: str | None, limit: int = 1000):
    """Lines after `after` (an opaque cursor), the next cursor, and whether that is all."""
    run = runs_prefect.run_to_dict(flow_run)
    final = run["status"] in FINAL
    if history_index.has_output(settings, flow_run.id):
        offset = _cursor(after)

        def read(src):
            lines, nxt, more = ho.lines_after(src, offset, limit)
            return lines, nxt, more, src.size

        try:
            lines, nxt, more, size = await asyncio.to_thread(
                _with_source, settings, flow_run.id, read
            )
        except FileNotFoundError:
            return await _read_prefect_logs(flow_run, after, limit, final)
        for line in lines:
            del line["at"]
        return lines, str(nxt), final and not more and nxt >= size
    return await _read_prefect_logs(flow_run, after, limit, final)


async def read_window(
    settings: Settings,
    flow_run,
    *,
    after: str | None = None,
    before: str | None = None,
    tail: bool = False,
    limit: int = 1000,
):
    """A window of lines for the run page: from `after`, ending at `before`, or the last
    `limit` lines (`tail`). Each line carries its byte offset `at` (a cursor)."""
    run = runs_prefect.run_to_dict(flow_run)
    final = run["status"] in FINAL
    if not history_index.has_output(settings, flow_run.id):
        lines, nxt, complete = await _read_prefect_logs(flow_run, after, limit, final)
        return {
            "lines": lines,
            "next": nxt,
            "start": None,
            "complete": complete,
            "size": None,
            "stored": False,
        }
    start_at = None if before is None else _cursor(before)
    offset = _cursor(after)

    def read(src):
        if tail or start_at is not None:
            lines, first = ho.lines_before(src, src.size if tail else start_at, limit)
            nxt = src.size if tail else start_at
            more = not tail
        else:
            lines, nxt, more = ho.lines_after(src, offset, limit)
            first = offset
        return {
            "lines": lines,
            "start": first,
            "next": str(nxt),
            "size": src.size,
            "complete": final and not more and nxt >= src.size,
            "stored": True,
        }

    try:
        return await asyncio.to_thread(_with_source, settings, flow_run.id, read)
    except FileNotFoundError:
        lines, nxt, complete = await _read_prefect_logs(flow_run, after, limit, final)
        return {
            "lines": lines,
            "next": nxt,
            "start": None,
            "complete": complete,
            "size": None,
            "stored": False,
        }


async def search_output(settings: Settings, flow_run, needle: str, max_hits: int = 1000):
    """Offsets of the lines of one run whose text contains `needle` (case-insensitive)."""
    if not history_index.has_output(settings, flow_run.id):
        return [], 0
    try:
        return await asyncio.to_thread(
            _with_source, settings, flow_run.id, lambda src: ho.find_lines(src, needle, max_hits)
        )
    except FileNotFoundError:
        return [], 0


async def first_error(settings: Settings, flow_run) -> int | None:
    """Offset of the run's first stderr line or traceback, None if it has none."""
    entry = await asyncio.to_thread(history_index.entry, settings, flow_run.id)
    if entry is not None:
        return entry.first_error
    if not history_index.has_output(settings, flow_run.id):
        return None
    try:
        return await asyncio.to_thread(_with_source, settings, flow_run.id, ho.first_error)
    except FileNotFoundError:
        return None


def output_text(settings: Settings, run_id):
    """The whole stored output as "<ts> <stream> <text>" lines (a generator for streaming)."""
    with history_index.source(settings, run_id) as src:
        yield from ho.iter_text(src)


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
    # Prefect refuses a limit over 200; the boundary duplicates to skip count against it.
    fetch = min(min(limit, 200) + seen, 200)
    logs = await runs_prefect.read_logs(flow_run.id, since, limit=fetch)
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
            lines.append({"ts": log.timestamp.isoformat(), "stream": stream, "text": log.message})
    cursor = f"{last_ts.isoformat()}~{at_last}" if last_ts else (after or "")
    return lines, cursor, final and len(logs) < fetch
