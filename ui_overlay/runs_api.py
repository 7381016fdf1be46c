"""/api/v1/runs: history, one run, its output (cursor paging and text download), cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse

from scriptflow_prefect import gateway
from scriptflow_prefect import runs as core
from scriptflow_prefect.cancel_watch import cancel_local
from scriptflow_prefect.i18n import _
from scriptflow_prefect.output_log import iter_output_text

from .deps import ApiUser, DbDep

api = APIRouter(tags=["runs"])
Status = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "crashed"]


def aware(dt: datetime | None, name: str) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        raise HTTPException(422, _("%(name)s needs a time zone offset, e.g. 2026-01-31T08:00:00Z.",
                                   name=name))
    return dt


@api.get("/runs")
async def list_runs(
    request: Request, user: ApiUser, db: DbDep,
    script_id: Annotated[int | None, Query(ge=1)] = None,
    status: Status | None = None,
    trigger: Literal["manual", "scheduled", "retry"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 20,
):
    since, until = aware(since, "since"), aware(until, "until")
    if since and until and since > until:
        raise HTTPException(422, _("since must be before until."))
    items, total = await core.list_runs(
        db, user, script_id=script_id, statuses=[status] if status else None,
        triggers=[trigger] if trigger else None, since=since, until=until,
        page=page, per_page=per_page, q=q, settings=request.app.state.settings,
    )
    return {"items": items, "total": total}


@api.get("/runs/{run_id}")
async def get_run(run_id: str, user: ApiUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    return core.runs_to_dicts(db, [flow_run])[0]


@api.post("/runs/{run_id}/cancel", status_code=202)
async def cancel_run(run_id: str, user: ApiUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    outcome = await gateway.cancel_run(flow_run.id)
    if outcome == "final":
        raise HTTPException(409, _("This run has already ended."))
    cancel_local(flow_run.id)
    fresh = await gateway.read_run(flow_run.id)
    return JSONResponse(jsonable_encoder(core.runs_to_dicts(db, [fresh or flow_run])[0]),
                        status_code=202)


@api.get("/runs/{run_id}/output")
async def get_output(
    request: Request, run_id: str, user: ApiUser, db: DbDep,
    after: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
):
    flow_run = await core.visible_run(db, user, run_id)
    lines, nxt, complete = await core.read_output(request.app.state.settings, flow_run, after,
                                                  limit)
    return {"lines": lines, "next": nxt, "complete": complete}


@api.get("/runs/{run_id}/output.txt")
async def get_output_text(request: Request, run_id: str, user: ApiUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    path = core.output_path(request.app.state.settings, flow_run.id)
    if not path.exists():
        lines, _n, _c = await core.read_output(request.app.state.settings, flow_run, None, 5000)
        body = "".join(f"{ln['ts']} {ln['stream']} {ln['text']}\n" for ln in lines)
        return StreamingResponse(iter([body]), media_type="text/plain; charset=utf-8")
    return StreamingResponse(
        iter_output_text(path, lines_per_item=500),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="run-{flow_run.id}.txt"'},
    )
