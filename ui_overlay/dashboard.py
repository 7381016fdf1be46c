"""The dashboard: every visible script with its live status."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from scriptflow_prefect.ui_overlay.deps import DbDep, PageUser
from scriptflow_prefect.ui_overlay.templating import render

from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.runs import service as run_core
from scriptflow_prefect.schedules import service as schedule_sync
from scriptflow_prefect.scripts import service as core
from scriptflow_prefect.scripts.models import Script

pages = APIRouter()


async def _rows(db, user) -> list[dict]:
    scripts = list(db.scalars(core.visible_scripts_query(user).order_by(Script.name)))
    try:
        last = await run_core.last_runs([s.id for s in scripts])
        prefect_ok = True
    except platform_prefect.PrefectUnavailable:
        last, prefect_ok = {}, False
    rows = [core.script_to_dict(s, last.get(s.id)) for s in scripts]
    return rows if prefect_ok else [dict(r, prefect_down=True) for r in rows]


async def _switched_off(db, user) -> list[Script]:
    """Schedules the run policy switched off after failures, not yet acknowledged."""
    scheduled = [
        s
        for s in db.scalars(core.visible_scripts_query(user).order_by(Script.name))
        if s.schedule and not (s.settings or {}).get("disabled_acknowledged")
    ]
    try:
        states = await schedule_sync.schedule_states(scheduled)
    except platform_prefect.PrefectUnavailable:
        return []
    return [s for s in scheduled if states.get(s.id) == "disabled"]


@pages.get("/")
async def dashboard(request: Request, user: PageUser, db: DbDep):
    rows = await _rows(db, user)
    return render(
        request,
        "dashboard/index.html",
        {"rows": rows, "switched_off": await _switched_off(db, user)},
    )


@pages.get("/dashboard/rows")
async def dashboard_rows(request: Request, user: PageUser, db: DbDep):
    """The table body alone, re-rendered by dashboard.js every few seconds."""
    rows = await _rows(db, user)
    return render(request, "dashboard/_rows.html", {"rows": rows})


@pages.get("/dashboard/status.json")
async def dashboard_status(user: PageUser, db: DbDep):
    rows = await _rows(db, user)
    return jsonable_encoder([{"id": r["id"], "last_run": r["last_run"]} for r in rows])
