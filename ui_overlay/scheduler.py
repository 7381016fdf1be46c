"""The scheduler's state as a user may see it: runs in progress, the next scheduled runs,
late runs and the runners (workers) with their heartbeats; drift between ScriptFlow and
Prefect (scripts/drift.py), repaired here by an admin. Read from Prefect each time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Form, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from scriptflow_prefect.ui_overlay import schemas
from scriptflow_prefect.ui_overlay.bodies import DriftRepairBody, DriftRepairOne
from scriptflow_prefect.ui_overlay.deps import ApiUser, Csrf, DbDep, PageUser
from scriptflow_prefect.ui_overlay.health import sandbox_component
from scriptflow_prefect.ui_overlay.openapi import body, errors
from scriptflow_prefect.ui_overlay.templating import flash, render
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.monitoring import service as monitoring
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.i18n import N_, _
from scriptflow_prefect.runs import service as run_core
from scriptflow_prefect.schedules import service as schedules
from scriptflow_prefect.scripts import drift, drift_repair
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
    items = None if prefect_down else await _drift_or_none(db, user)
    context = {
        **status,
        "prefect_down": prefect_down,
        "sandbox": sandbox,
        "drift": [{**i.to_dict(), "label": _(KIND_LABELS[i.kind])} for i in items or []],
        "drift_unknown": items is None,
    }
    return render(request, "scheduler/index.html", context)


# -- drift between ScriptFlow and Prefect --------------------------------------------------------
KIND_LABELS = {
    "missing": N_("Deployment missing"),
    "renamed": N_("Deployment renamed"),
    "orphan": N_("Orphan deployment"),
    "parameters": N_("Parameters changed"),
    "tags": N_("Tags changed"),
    "work_pool": N_("Work pool changed"),
    "concurrency": N_("Concurrency limit"),
}


async def _drift_or_none(db: Session, user: User) -> list[drift.DriftItem] | None:
    try:
        return drift.visible(await drift.detect(db), user)
    except platform_prefect.PrefectUnavailable:
        return None


@api.get("/scheduler/drift", response_model=schemas.DriftList, responses=errors(503))
async def get_drift(user: ApiUser, db: DbDep):
    """What differs between ScriptFlow's scripts and their deployments in Prefect: an admin
    sees every item, anyone else their own scripts' items (no orphan deployments)."""
    try:
        items = drift.visible(await drift.detect(db), user)
    except platform_prefect.PrefectUnavailable as exc:
        raise ScriptError(503, _("Prefect is not reachable: %(err)s", err=str(exc)[:200])) from exc
    return {"items": [i.to_dict() for i in items]}


@api.post(
    "/scheduler/drift/repair",
    response_model=schemas.DriftRepairResult,
    responses=errors(403, 404, 409, 422, 503),
    openapi_extra=body(DriftRepairBody),
)
async def post_drift_repair(user: ApiUser, db: DbDep, sent: Annotated[Any, Body()] = None):
    """Repair one item (`{"item": "<id>"}`) or every repairable one (`{"all": true}`);
    admins only. Nothing is repaired at start-up: a deletion in Prefect may be deliberate."""
    try:
        wanted = DriftRepairBody.model_validate(sent).root
    except ValidationError:
        raise ScriptError(
            422,
            _(
                'Send {"item": "<an id from GET /api/v1/scheduler/drift>"} to repair one item, '
                'or {"all": true} to repair them all.'
            ),
        ) from None
    if isinstance(wanted, DriftRepairOne):
        item = await drift_repair.repair_one(db, user, wanted.item)
        return {"repaired": [item.to_dict()], "failed": []}
    repaired, failed = await drift_repair.repair_all(db, user)
    return {
        "repaired": [i.to_dict() for i in repaired],
        "failed": [{"item": i.to_dict(), "detail": why} for i, why in failed],
    }


@pages.post("/scheduler/drift/repair", dependencies=[Csrf])
async def drift_repair_page(
    request: Request, user: PageUser, db: DbDep, item: Annotated[str, Form()] = ""
):
    try:
        if item == "all":
            repaired, failed = await drift_repair.repair_all(db, user)
            flash(request, _("Repaired %(n)s item(s).", n=len(repaired)))
            for i, why in failed:
                flash(
                    request, _("Not repaired: %(msg)s (%(why)s)", msg=i.message, why=why), "error"
                )
        else:
            done = await drift_repair.repair_one(db, user, item)
            flash(request, _("Repaired: %(msg)s", msg=done.message))
    except ScriptError as exc:
        if exc.status == 403:
            raise
        flash(request, str(exc), "error")
    return RedirectResponse("/scheduler#h-drift", status_code=303)
