"""/api/v1/runs: history (filters, full-text `q`, CSV), one run, its output (cursor paging,
search, text download), cancel; a script's run summary and acknowledgements."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BeforeValidator
from scriptflow_prefect.ui_overlay import schemas
from scriptflow_prefect.ui_overlay.deps import ApiUser, DbDep, no_database_write, visible_script
from scriptflow_prefect.ui_overlay.openapi import errors, text_answer

from scriptflow_prefect.history import service as history
from scriptflow_prefect.platform.control_chars import neutralise
from scriptflow_prefect.platform.db import audit
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.runs import output
from scriptflow_prefect.runs import service as core
from scriptflow_prefect.runs.cancel_watch import cancel_local
from scriptflow_prefect.runs.models import Run, Status, Trigger

api = APIRouter(tags=["runs"])


def aware(dt: datetime | None, name: str) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        raise HTTPException(
            422, _("%(name)s needs a time zone offset, e.g. 2026-01-31T08:00:00Z.", name=name)
        )
    return dt


@dataclass
class RunFilters:
    script_id: int | None
    status: str | None
    trigger: str | None
    since: datetime | None
    until: datetime | None
    q: str | None

    def arguments(self) -> dict:
        return {
            "script_id": self.script_id,
            "statuses": [self.status] if self.status else None,
            "triggers": [self.trigger] if self.trigger else None,
            "since": self.since,
            "until": self.until,
            "q": self.q,
        }


def _iso_only(value):
    # Pydantic would take a bare number as seconds since 1970: the API promises ISO 8601.
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+(\.\d*)?\s*", value):
        raise ValueError("not an ISO 8601 date and time such as 2026-01-31T08:00:00Z")
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_only)]


def run_filters(
    script_id: Annotated[int | None, Query(ge=1, description="Runs of this script only")] = None,
    status: Status | None = None,
    trigger: Trigger | None = None,
    since: Annotated[IsoTime | None, Query(description="Expected start at or after")] = None,
    until: Annotated[IsoTime | None, Query(description="Expected start at or before")] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            description=(
                "Runs whose output holds these words in this order (case- and accent-insensitive; "
                "the last word may be the start of a longer one)"
            ),
        ),
    ] = None,
) -> RunFilters:
    # A `since` after `until` is a window with no runs in it (an empty page, not an error).
    since, until = aware(since, "since"), aware(until, "until")
    if q is not None and not q.strip():
        q = None
    if q:
        core.search_phrase(q)  # 422 when there is nothing to search for
    return RunFilters(script_id, status, trigger, since, until, q)


Filters = Annotated[RunFilters, Depends(run_filters)]


def csv_response(rows, filename: str) -> StreamingResponse:
    """Stream run batches (an async iterator of lists of run dicts) as CSV."""

    async def body():
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow([*core.CSV_COLUMNS, "match"])
        yield buf.getvalue()
        async for batch in rows:
            buf.seek(0)
            buf.truncate()
            for run in batch:
                writer.writerow(
                    [*core.csv_values(run), core.csv_text((run.match or {}).get("text", ""))]
                )
            yield buf.getvalue()

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@api.get("/runs", response_model=schemas.RunPage, responses=errors(503))
async def list_runs(
    request: Request,
    user: ApiUser,
    db: DbDep,
    filters: Filters,
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 20,
):
    """Runs newest first (by start, or expected start when not started) and the exact total.
    With `q`, each run has `match`: its first output line holding the words."""
    items, total = await core.list_runs(
        db,
        user,
        page=page,
        per_page=per_page,
        settings=request.app.state.settings,
        **filters.arguments(),
    )
    return {"items": items, "total": total}


@api.get("/runs.csv", response_class=Response, responses={**text_answer("text/csv"), **errors(503)})
async def list_runs_csv(request: Request, user: ApiUser, db: DbDep, filters: Filters):
    """Every run matching the same filters as GET /runs, as CSV (one header row)."""
    return csv_response(
        core.export_runs(db, user, settings=request.app.state.settings, **filters.arguments()),
        "runs.csv",
    )


@api.get("/runs/{run_id}", response_model=Run, responses=errors(503))
async def get_run(run_id: str, user: ApiUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    return core.run_of(db, flow_run)


@api.post("/runs/{run_id}/cancel", status_code=202, response_model=Run, responses=errors(409, 503))
@no_database_write
async def cancel_run(run_id: str, user: ApiUser, db: DbDep):
    """Stop the run; 409 if it has already ended."""
    flow_run = await core.visible_run(db, user, run_id)
    if await core.cancel(flow_run) == "final":
        raise HTTPException(409, _("This run has already ended."))
    cancel_local(flow_run.id)
    return core.run_of(db, await core.reread(flow_run))


@api.get("/runs/{run_id}/output", response_model=schemas.OutputPage, responses=errors(400, 503))
async def get_output(
    request: Request,
    run_id: str,
    user: ApiUser,
    db: DbDep,
    after: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
):
    flow_run = await core.visible_run(db, user, run_id)
    settings = request.app.state.settings
    lines, nxt, complete = await output.read_output(settings, flow_run, after, limit)
    current = None if complete else output.current_line(settings, flow_run)
    return {"lines": lines, "next": nxt, "complete": complete, "current": current}


@api.get(
    "/runs/{run_id}/output/search", response_model=schemas.OutputMatches, responses=errors(503)
)
async def search_output(
    request: Request,
    run_id: str,
    user: ApiUser,
    db: DbDep,
    q: Annotated[str, Query(min_length=1, max_length=200)],
):
    """Cursors (`after` values) of the lines whose text holds `q` (case-insensitive): the
    first 1000, the total, and the cursor of the first error line (stderr or traceback)."""
    flow_run = await core.visible_run(db, user, run_id)
    settings = request.app.state.settings
    hits, total = await output.search_output(settings, flow_run, q)
    return {
        "matches": [str(h) for h in hits],
        "total": total,
        "first_error": _str_or_none(await output.first_error(settings, flow_run)),
    }


def _str_or_none(value: int | None) -> str | None:
    return None if value is None else str(value)


@api.get(
    "/runs/{run_id}/output.txt",
    response_class=Response,
    responses={**text_answer("text/plain"), **errors(503)},
)
async def get_output_text(request: Request, run_id: str, user: ApiUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    settings = request.app.state.settings
    headers = {"Content-Disposition": f'attachment; filename="run-{flow_run.id}.txt"'}
    if output.has_output(settings, flow_run):
        return StreamingResponse(
            output.output_text(settings, flow_run.id),
            media_type="text/plain; charset=utf-8",
            headers=headers,
        )

    async def from_prefect():  # the output file is on another machine: Prefect's logs
        cursor = None
        while True:
            lines, cursor, complete = await output.read_output(settings, flow_run, cursor, 200)
            yield neutralise("".join(f"{ln['ts']} {ln['stream']} {ln['text']}\n" for ln in lines))
            if complete or not lines:
                return

    return StreamingResponse(
        from_prefect(), media_type="text/plain; charset=utf-8", headers=headers
    )


@api.get(
    "/scripts/{script_id}/summary",
    tags=["runs"],
    response_model=schemas.RunSummary,
    responses=errors(503),
)
async def script_summary(script_id: int, user: ApiUser, db: DbDep):
    """Success rate over 7 and 30 days, average and p95 duration, one outcome per day for
    30 days, and the failed scheduled runs nobody acknowledged yet."""
    script = visible_script(db, user, script_id, deleted=True)
    return await history.script_summary(db, script)


@api.post("/runs/{run_id}/acknowledge", status_code=204, responses=errors(409, 503))
async def acknowledge_run(run_id: str, user: ApiUser, db: DbDep):
    """Mark a failed scheduled run as seen: the script page stops flagging it."""
    flow_run = await core.visible_run(db, user, run_id)
    if not core.can_acknowledge(flow_run):
        raise HTTPException(409, _("Only a failed run can be acknowledged."))
    script_id = (flow_run.parameters or {}).get("script_id")
    script = (
        visible_script(db, user, script_id, deleted=True) if isinstance(script_id, int) else None
    )
    if script is None:
        raise HTTPException(404, _("There is no run with id %(id)s.", id=run_id))
    history.acknowledge(db, script, user.id, [str(flow_run.id)])
    audit(db, user.id, "run.acknowledge", script.name, script_id=script.id, runs=[run_id])
