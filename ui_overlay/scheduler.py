"""The scheduler's state as a user may see it: runs in progress, the next scheduled runs,
late runs and the runners (workers) with their heartbeats. Read from Prefect each time."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from scriptflow_prefect.ui_overlay import schemas
from scriptflow_prefect.ui_overlay.deps import ApiUser, DbDep, PageUser
from scriptflow_prefect.ui_overlay.health import sandbox_component
from scriptflow_prefect.ui_overlay.openapi import errors
from scriptflow_prefect.ui_overlay.templating import render
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.monitoring import service as monitoring
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.runs import service as run_core
from scriptflow_prefect.schedules import service as schedules
from scriptflow_prefect.scripts.service import ScriptError, visible_script_ids

pages = APIRouter()
api = APIRouter(tags=["scheduler"])
NEXT_RUNS = 20


async def scheduler_status(db: Session, user: User) -> dict[str, Any]:
    """An admin sees every script's runs; anyone else only their own scripts' runs. The
    workers are shown to everyone: whether a runner is alive explains a late run."""
    runs = await schedules.scheduler_runs(visible_script_ids(db, user), next_limit=NEXT_RUNS)
    upcoming = run_core.runs_of(db, runs.next)
    return {
        "running": run_core.runs_of(db, runs.running),
        "next": [
            {
                "id": r.id,
                "script_id": r.script_id,
                "script_name": r.script_name,
                "scheduled_at": r.scheduled_at,
                "trigger": r.trigger,
            }
            for r in upcoming
        ],
        "late": run_core.runs_of(db, runs.late),
        "workers": await monitoring.workers(),
    }


@api.get("/scheduler", response_model=schemas.Scheduler, responses=errors(503))
async def get_scheduler(user: ApiUser, db: DbDep):
    try:
        return await scheduler_status(db, user)
    except platform_prefect.PrefectUnavailable as exc:
        raise ScriptError(503, _("Prefect is not reachable: %(err)s", err=str(exc)[:200])) from exc


@pages.get("/scheduler")
async def scheduler_page(request: Request, user: PageUser, db: DbDep):
    try:
        status, prefect_down = await scheduler_status(db, user), False
    except platform_prefect.PrefectUnavailable:
        status = {"running": [], "next": [], "late": [], "workers": []}
        prefect_down = True
    # Admins see here, loudly, when scripts run without a sandbox on this host.
    sandbox = sandbox_component(request.app.state.settings) if user.is_admin else None
    context = {**status, "prefect_down": prefect_down, "sandbox": sandbox}
    return render(request, "scheduler/index.html", context)
