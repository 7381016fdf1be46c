"""Schedule pages: the form on a script's page (with live preview), the schedules list with
bulk activate / deactivate, and delete with a confirmation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, RedirectResponse
from scriptflow_prefect.ui_overlay.deps import Csrf, DbDep, PageUser, visible_script
from scriptflow_prefect.ui_overlay.templating import flash, render
from starlette.datastructures import FormData

from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.i18n import _, get_locale
from scriptflow_prefect.runs import service as run_core
from scriptflow_prefect.schedules import service as core
from scriptflow_prefect.schedules.spec import parse_spec
from scriptflow_prefect.schedules.truth import read_truths, saved_truth, truths_or_saved
from scriptflow_prefect.schedules.words import describe
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.service import ScriptError, visible_scripts_query

pages = APIRouter()
SORTS = ("next", "name", "created")


def schedule_from_form(form: FormData) -> dict:
    """The form's fields as a schedule object (the API's shape)."""
    day = str(form.get("day_of_month") or "")
    data = {
        "frequency": form.get("frequency") or "",
        "time": form.get("time") or "",
        "timezone": form.get("timezone") or "",
        "active": form.get("active") in ("1", "on", "true"),
    }
    if data["frequency"] == "weekly":
        data["days_of_week"] = form.getlist("days_of_week")
    if data["frequency"] == "monthly":
        data["day_of_month"] = day if day == "last" else (int(day) if day.isdigit() else day)
    return data


@pages.post("/scripts/{script_id}/schedule", dependencies=[Csrf])
async def save(request: Request, script_id: int, user: PageUser, db: DbDep):
    script = visible_script(db, user, script_id)
    form = await request.form()
    try:
        await core.set_schedule(
            db, user, script, schedule_from_form(form), replace=form.get("replace") == "1"
        )
    except ScriptError as exc:
        db.rollback()
        flash(request, _("The schedule was not saved: %(reason)s", reason=str(exc)), "error")
        return RedirectResponse(f"/scripts/{script.id}#schedule", status_code=303)
    flash(
        request,
        _("Schedule saved: %(words)s.", words=describe(parse_spec(script.schedule), get_locale())),
    )
    return RedirectResponse(f"/scripts/{script.id}#schedule", status_code=303)


@pages.post("/schedules/preview.json", dependencies=[Csrf])
async def preview(request: Request, user: PageUser):
    try:
        body = core.preview(schedule_from_form(await request.form()))
    except ScriptError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return jsonable_encoder(body)


@pages.post("/scripts/{script_id}/schedule/enable", dependencies=[Csrf])
async def enable(request: Request, script_id: int, user: PageUser, db: DbDep):
    script = visible_script(db, user, script_id)
    try:
        await core.set_active(db, user, script, True)
    except ScriptError as exc:
        db.rollback()
        flash(request, str(exc), "error")
        return RedirectResponse("/", status_code=303)
    flash(request, _("The schedule of %(name)s is on again.", name=script.name))
    return RedirectResponse("/", status_code=303)


@pages.post("/scripts/{script_id}/schedule/acknowledge", dependencies=[Csrf])
async def acknowledge(request: Request, script_id: int, user: PageUser, db: DbDep):
    script = visible_script(db, user, script_id)
    script.settings = {**(script.settings or {}), "disabled_acknowledged": True}
    flash(request, _("Noted: the schedule of %(name)s stays off.", name=script.name))
    return RedirectResponse("/", status_code=303)


@pages.get("/scripts/{script_id}/schedule/delete")
async def delete_form(request: Request, script_id: int, user: PageUser, db: DbDep):
    script = visible_script(db, user, script_id)
    truth = (await truths_or_saved([script]))[script.id]
    words = truth.words(get_locale())
    return render(
        request, "schedules/delete.html", {"script": script, "truth": truth, "words": words}
    )


@pages.post("/scripts/{script_id}/schedule/delete", dependencies=[Csrf])
async def delete(request: Request, script_id: int, user: PageUser, db: DbDep):
    script = visible_script(db, user, script_id)
    await core.delete_schedule(db, user, script)
    flash(request, _("The schedule of %(name)s was removed; the script stays.", name=script.name))
    return RedirectResponse("/schedules", status_code=303)


@pages.get("/schedules")
async def schedule_list(request: Request, user: PageUser, db: DbDep, sort: str = "next"):
    """Every visible script Prefect runs on a schedule, whoever set it, paused or not; a
    schedule saved here that Prefect no longer has is listed too, saying so."""
    sort = sort if sort in SORTS else "next"
    scripts = list(db.scalars(visible_scripts_query(user).order_by(Script.name)))
    try:
        truths = await read_truths(scripts)
        last = await run_core.last_runs([s.id for s in scripts])
        prefect_down = False
    except platform_prefect.PrefectUnavailable:
        truths, last = {s.id: saved_truth(s) for s in scripts}, {}
        prefect_down = True
    locale = get_locale()
    rows = [
        {
            "script": s,
            "truth": truths[s.id],
            "words": truths[s.id].words(locale),
            "next": truths[s.id].next_runs[0] if truths[s.id].next_runs else None,
            "state": truths[s.id].state,
            "last_run": last.get(s.id),
        }
        for s in scripts
        if truths[s.id].scheduled or truths[s.id].removed_in_prefect
    ]
    if sort == "next":
        rows.sort(key=lambda r: (r["next"] is None, r["next"].timestamp() if r["next"] else 0))
    elif sort == "created":
        rows.sort(key=lambda r: r["script"].created_at, reverse=True)
    context = {"rows": rows, "sort": sort, "prefect_down": prefect_down}
    return render(request, "schedules/list.html", context)


@pages.post("/schedules/bulk", dependencies=[Csrf])
async def bulk(request: Request, user: PageUser, db: DbDep, action: Annotated[str, Form()] = ""):
    form = await request.form()
    ids = [int(i) for i in form.getlist("script_ids") if str(i).isdigit()]
    if action not in ("activate", "deactivate") or not ids:
        flash(request, _("Tick at least one schedule, then choose an action."), "error")
        return RedirectResponse("/schedules", status_code=303)
    done = 0
    for sid in ids:
        script = visible_script(db, user, sid)
        try:
            await core.set_active(db, user, script, action == "activate")
        except ScriptError as exc:
            # Those before stay done (committed as they went: Prefect has them too).
            db.rollback()
            flash(request, _("%(name)s: %(reason)s", name=script.name, reason=str(exc)), "error")
            continue
        db.commit()
        done += 1
    flash(
        request,
        _("%(n)s schedule(s) activated.", n=done)
        if action == "activate"
        else _("%(n)s schedule(s) deactivated.", n=done),
    )
    return RedirectResponse("/schedules", status_code=303)
