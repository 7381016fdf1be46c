"""Run pages: history list and one run with its live output and Cancel."""

from __future__ import annotations

import math
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, RedirectResponse

from scriptflow_prefect import gateway
from scriptflow_prefect import runs as core
from scriptflow_prefect.cancel_watch import cancel_local
from scriptflow_prefect.i18n import _, format_datetime, format_duration
from scriptflow_prefect.models import Script

from .deps import Csrf, DbDep, PageUser
from .runs_api import get_output_text as _api_output_text
from .templating import flash, render, status_badge

pages = APIRouter()
PER_PAGE = 25


def _date(value: str) -> datetime | None:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.astimezone()


@pages.get("/runs")
async def run_list(request: Request, user: PageUser, db: DbDep, script_id: str = "",
                   status: str = "", trigger: str = "", since: str = "", until: str = "",
                   q: str = "", page: int = 1):
    sid = int(script_id) if script_id.isdigit() else None
    st = status if status in core.STATUSES else None
    tr = trigger if trigger in core.TRIGGERS else None
    items, total = await core.list_runs(
        db, user, script_id=sid, statuses=[st] if st else None, triggers=[tr] if tr else None,
        since=_date(since) if since else None, until=_date(until) if until else None,
        page=max(page, 1), per_page=PER_PAGE, q=q[:200] or None,
        settings=request.app.state.settings,
    )
    from scriptflow_prefect.scripts import visible_scripts_query

    scripts = list(db.scalars(visible_scripts_query(user).order_by(Script.name)))
    return render(request, "runs/list.html", {
        "runs": items, "total": total, "page": max(page, 1),
        "pages": max(1, math.ceil(total / PER_PAGE)), "scripts": scripts,
        "filters": {"script_id": sid, "status": st or "", "trigger": tr or "",
                    "since": since, "until": until, "q": q},
        "statuses": core.STATUSES, "triggers": core.TRIGGERS,
    })


@pages.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str, user: PageUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    run = core.runs_to_dicts(db, [flow_run])[0]
    return render(request, "runs/detail.html", {"run": run, "final": run["status"] in core.FINAL})


@pages.get("/runs/{run_id}/status.json")
async def run_status(run_id: str, user: PageUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    return jsonable_encoder(core.runs_to_dicts(db, [flow_run])[0])


@pages.get("/runs/{run_id}/output.json")
async def run_output(request: Request, run_id: str, user: PageUser, db: DbDep,
                     after: str | None = None):
    flow_run = await core.visible_run(db, user, run_id)
    lines, nxt, complete = await core.read_output(request.app.state.settings, flow_run,
                                                  after, 2000)
    run = core.runs_to_dicts(db, [flow_run])[0]
    run["duration_label"] = format_duration(run["duration_seconds"])
    run["started_label"] = format_datetime(run["started_at"])  # queued when the page loaded
    return jsonable_encoder({"lines": lines, "next": nxt, "complete": complete, "run": run,
                             "badge": str(status_badge(run["status"]))})


@pages.get("/runs/{run_id}/output.txt")
async def run_output_text(request: Request, run_id: str, user: PageUser, db: DbDep):
    return await _api_output_text(request, run_id, user, db)


@pages.post("/runs/{run_id}/cancel", dependencies=[Csrf])
async def cancel(request: Request, run_id: str, user: PageUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    outcome = await gateway.cancel_run(flow_run.id)
    cancel_local(flow_run.id)
    if request.headers.get("accept", "").startswith("application/json"):
        return JSONResponse({"outcome": outcome}, status_code=202)
    if outcome == "final":
        flash(request, _("This run has already ended."), "error")
    return RedirectResponse(f"/runs/{run_id}", status_code=303)
