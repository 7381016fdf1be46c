"""The dashboard: every visible script with its live status."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from scriptflow_prefect.ui_overlay.deps import DbDep, PageUser
from scriptflow_prefect.ui_overlay.templating import render

from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.runs import service as run_core
from scriptflow_prefect.schedules.truth import read_truths, saved_truth
from scriptflow_prefect.scripts import service as core
from scriptflow_prefect.scripts.models import Script

pages = APIRouter()


async def _rows(db, user) -> tuple[list[dict], list[Script]]:
    """Each visible script with its last run and its schedule as Prefect runs it; and the
    schedules the run policy switched off after failures, not yet acknowledged."""
    scripts = list(db.scalars(core.visible_scripts_query(user).order_by(Script.name)))
    try:
        last, truths = await asyncio.gather(
            run_core.last_runs([s.id for s in scripts]), read_truths(scripts)
        )
        prefect_ok = True
    except platform_prefect.PrefectUnavailable:
        last, truths, prefect_ok = {}, {s.id: saved_truth(s) for s in scripts}, False
    rows = [core.script_to_dict(s, last.get(s.id), truths[s.id]) for s in scripts]
    switched_off = [
        s
        for s in scripts
        if truths[s.id].state == "disabled" and not (s.settings or {}).get("disabled_acknowledged")
    ]
    return (rows if prefect_ok else [dict(r, prefect_down=True) for r in rows]), switched_off


@pages.get("/")
async def dashboard(request: Request, user: PageUser, db: DbDep):
    rows, switched_off = await _rows(db, user)
    return render(request, "dashboard/index.html", {"rows": rows, "switched_off": switched_off})


@pages.get("/dashboard/rows")
async def dashboard_rows(request: Request, user: PageUser, db: DbDep):
    """The table body alone, re-rendered by dashboard.js every few seconds."""
    rows, _switched_off = await _rows(db, user)
    return render(request, "dashboard/_rows.html", {"rows": rows})


@pages.get("/dashboard/status.json")
async def dashboard_status(user: PageUser, db: DbDep):
    rows, _switched_off = await _rows(db, user)
    return jsonable_encoder([{"id": r["id"], "last_run": r["last_run"]} for r in rows])
