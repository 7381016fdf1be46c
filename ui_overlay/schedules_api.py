"""/api/v1 schedules: set or remove a script's schedule, preview one, list them all."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from fastapi.responses import Response
from scriptflow_prefect.ui_overlay import schemas
from scriptflow_prefect.ui_overlay.bodies import PreviewBody, ScheduleBody
from scriptflow_prefect.ui_overlay.deps import ApiUser, DbDep, no_database_write, visible_script
from scriptflow_prefect.ui_overlay.openapi import body, errors

from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.prefect import PrefectUnavailable
from scriptflow_prefect.schedules import service as core
from scriptflow_prefect.schedules.truth import read_truths, truths_or_saved
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.service import visible_scripts_query

api = APIRouter(tags=["schedules"])


def _replace(data: dict) -> bool:
    replace = data.get("replace", False)
    if not isinstance(replace, bool):
        raise HTTPException(422, _("replace must be true or false."))
    return replace


def _body_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise HTTPException(422, _("Send the schedule as a JSON object."))
    return body


@api.put(
    "/scripts/{script_id}/schedule",
    response_model=schemas.Schedule,
    responses=errors(409, 422, 503),
    openapi_extra=body(ScheduleBody),
)
async def put_schedule(script_id: int, user: ApiUser, db: DbDep, body: Annotated[Any, Body()]):
    script = visible_script(db, user, script_id)
    data = _body_object(body)
    await core.set_schedule(db, user, script, data, replace=_replace(data))
    # Written in Prefect already: a failed read-back must not undo the save here.
    return core.schedule_to_dict((await truths_or_saved([script]))[script.id])


@api.get("/scripts/{script_id}/schedule", response_model=schemas.Schedule, responses=errors(503))
async def get_schedule(script_id: int, user: ApiUser, db: DbDep):
    script = visible_script(db, user, script_id)
    schedule = core.schedule_to_dict(await core.truth_of(script))
    if schedule is None:
        raise HTTPException(404, _("This script has no schedule."))
    return schedule


@api.delete("/scripts/{script_id}/schedule", status_code=204, responses=errors(503))
async def delete_schedule(script_id: int, user: ApiUser, db: DbDep):
    script = visible_script(db, user, script_id)
    truth = await core.truth_of(script)
    if not script.schedule and not truth.scheduled:
        raise HTTPException(404, _("This script has no schedule."))
    await core.delete_schedule(db, user, script)
    return Response(status_code=204)


@api.post(
    "/schedules/preview", response_model=schemas.SchedulePreview, openapi_extra=body(PreviewBody)
)
@no_database_write
async def preview(user: ApiUser, body: Annotated[Any, Body()]):
    data = _body_object(body)
    _replace(data)  # the schedule's shape: checked like a PUT's, though a preview replaces nothing
    return core.preview(data)


@api.get("/schedules", response_model=schemas.ScriptSchedules, responses=errors(503))
async def list_schedules(user: ApiUser, db: DbDep):
    """Every visible script Prefect runs on a schedule, whoever set it, paused or not."""
    scripts = list(db.scalars(visible_scripts_query(user).order_by(Script.name)))
    try:
        truths = await read_truths(scripts)
    except PrefectUnavailable as exc:
        raise HTTPException(
            503,
            _(
                "Prefect is not reachable, the schedules' state is unknown: %(err)s",
                err=str(exc)[:200],
            ),
        ) from exc
    items = [
        {"script_id": s.id, "script_name": s.name, **(core.schedule_to_dict(truths[s.id]) or {})}
        for s in scripts
        if truths[s.id].scheduled
    ]
    return {"items": items, "total": len(items)}
