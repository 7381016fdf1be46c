"""Script pages: library, upload, detail, edit (new version), delete, Run now."""

from __future__ import annotations

import math
from functools import cache
from typing import Annotated
from zoneinfo import available_timezones

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from scriptflow_prefect.ui_overlay import how_it_runs
from scriptflow_prefect.ui_overlay.deps import (
    Csrf,
    DbDep,
    PageUser,
    no_database_write,
    visible_script,
)
from scriptflow_prefect.ui_overlay.environments import environment_of
from scriptflow_prefect.ui_overlay.schedules import schedule_from_form
from scriptflow_prefect.ui_overlay.scripts_api import SORTS, read_bundle, refuse_huge_body
from scriptflow_prefect.ui_overlay.templating import flash, render
from scriptflow_prefect.ui_overlay.workspace import folder_context, new_version_from_upload
from sqlalchemy import func, select

from scriptflow_prefect.notifications import service as notifications
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.i18n import _, get_locale
from scriptflow_prefect.runs import service as run_core
from scriptflow_prefect.runs.policies import RunPolicy
from scriptflow_prefect.schedules import service as schedule_sync
from scriptflow_prefect.schedules.truth import truths_or_saved
from scriptflow_prefect.scripts import content_checks, store, versions
from scriptflow_prefect.scripts import service as core
from scriptflow_prefect.scripts.command_line import join_arguments, split_arguments
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.run_config import run_config

pages = APIRouter()
PER_PAGE = 20


def schedule_form_context(request: Request) -> dict:
    return {
        "timezones": all_timezones(),
        "default_timezone": request.app.state.settings.timezone,
        "weekdays": [
            ("mon", _("Monday")),
            ("tue", _("Tuesday")),
            ("wed", _("Wednesday")),
            ("thu", _("Thursday")),
            ("fri", _("Friday")),
            ("sat", _("Saturday")),
            ("sun", _("Sunday")),
        ],
    }


@cache
def all_timezones() -> list[str]:
    return sorted(z for z in available_timezones() if "/" in z or z == "UTC")


@pages.get("/scripts")
async def library(
    request: Request,
    user: PageUser,
    db: DbDep,
    q: str = "",
    type: str = "",
    page: int = 1,
    sort: str = "-created",
):
    kind = type if type in ("python", "batch") else None
    sort = sort if sort in SORTS else "-created"
    query = core.visible_scripts_query(user, q=q[:100] or None, kind=kind)
    total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    pages_n = max(1, math.ceil(total / PER_PAGE))
    page = min(max(page, 1), pages_n)
    scripts = list(
        db.scalars(
            query.order_by(SORTS[sort], Script.id.desc())
            .offset((page - 1) * PER_PAGE)
            .limit(PER_PAGE)
        )
    )
    try:
        last = await run_core.last_runs([s.id for s in scripts])
    except platform_prefect.PrefectUnavailable:
        last = {}
    truths = await truths_or_saved(scripts)
    rows = [core.script_to_dict(s, last.get(s.id), truths[s.id]) for s in scripts]
    return render(
        request,
        "scripts/list.html",
        {
            "rows": rows,
            "q": q,
            "type": kind or "",
            "sort": sort,
            "page": page,
            "pages": pages_n,
            "total": total,
        },
    )


@pages.get("/scripts/new")
async def upload_form(request: Request, user: PageUser):
    return render(
        request,
        "scripts/upload.html",
        {"error": None, "form": {}, **schedule_form_context(request)},
    )


@pages.post("/scripts/new", dependencies=[Csrf])
async def upload(
    request: Request,
    user: PageUser,
    db: DbDep,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    entry: Annotated[str, Form()] = "",
):
    raw = await request.form()
    wants_schedule = raw.get("schedule") == "1"
    form = {"name": name, "description": description, "schedule": wants_schedule, "entry": entry}
    try:
        refuse_huge_body(request)
        bundle = await read_bundle(raw.getlist("file"), entry.strip())
        schedule = schedule_sync.spec_of(schedule_from_form(raw)) if wants_schedule else None
        script = await core.create_script(
            db,
            user,
            filename=bundle.entry.name,
            data=bundle.entry.data,
            name=name or None,
            description=description,
            schedule=schedule.model_dump(mode="json") if schedule else None,
            companions=bundle.companions,
        )
    except (core.ScriptError, HTTPException) as exc:
        db.rollback()
        status = getattr(exc, "status", None) or getattr(exc, "status_code", 400)
        detail = str(exc) if isinstance(exc, core.ScriptError) else exc.detail
        return render(
            request,
            "scripts/upload.html",
            {"error": detail, "form": form, **schedule_form_context(request)},
            status_code=status,
        )
    flash(request, _("Uploaded %(name)s (version 1).", name=script.name))
    await _notifications_follow(request, db, script)
    return RedirectResponse(f"/scripts/{script.id}", status_code=303)


@pages.get("/scripts/{script_id}")
async def detail(
    request: Request, script_id: int, user: PageUser, db: DbDep, version: int | None = None
):
    script = visible_script(db, user, script_id)
    shown = core.current_version(script)
    if version is not None:
        shown = next((v for v in script.versions if v.version == version), None)
        if shown is None:
            raise HTTPException(404, _("This script has no version %(n)s.", n=version))
    content, _encoding = content_checks.text_of(script.kind, await store.get(shown.sha256))
    try:
        recent, _total = await run_core.list_runs(db, user, script_id=script.id, per_page=10)
    except platform_prefect.PrefectUnavailable:
        recent = []
    truth = (await truths_or_saved([script]))[script.id]
    return render(
        request,
        "scripts/detail.html",
        {
            **schedule_form_context(request),
            "truth": truth,
            "schedule_words": truth.words(get_locale()),
            # The form starts from what runs, its Active box ticked only if it runs (a
            # stopped schedule is saved on again by ticking it), else from the last saved.
            "sched": dict(truth.spec.model_dump(), active=truth.state == "active")
            if truth.spec
            else script.schedule,
            "script": core.script_to_dict(script, recent[0] if recent else None, truth),
            "versions": sorted(script.versions, key=lambda v: -v.version),
            "shown": shown,
            "lines": content.splitlines() or [""],
            "runs": recent,
            "arguments_line": join_arguments(run_config(script.settings).arguments),
            "env": await environment_of(request, script) if script.kind == "python" else None,
            **folder_context(request, script),
        },
    )


def _policy(script) -> RunPolicy:
    return RunPolicy(**(script.settings or {}).get("policy", {}))


def _policy_from_form(form) -> dict:
    def number(key: str, default: int) -> int | str:
        value = str(form.get(key) or "").strip()
        return int(value) if value.isdigit() else (value or default)

    delay = number("retry_delay_minutes", 5)
    return {
        "retries": number("retries", 1),
        "retry_delay_seconds": delay * 60 if isinstance(delay, int) else delay,
        "disable_after_failures": number("disable_after_failures", 3),
        "missed": form.get("missed") or "once",
        "overlap": form.get("overlap") or "skip",
    }


@pages.get("/scripts/{script_id}/edit")
async def edit_form(request: Request, script_id: int, user: PageUser, db: DbDep):
    script = visible_script(db, user, script_id)
    content, _encoding = content_checks.text_of(
        script.kind, await store.get(core.current_version(script).sha256)
    )
    return render(
        request,
        "scripts/edit.html",
        {
            "script": script,
            "content": content,
            "error": None,
            "policy": _policy(script),
            "form": {
                "name": script.name,
                "description": script.description,
                "timeout_seconds": script.timeout_seconds,
            },
            **how_it_runs.section_context(script),
        },
    )


@pages.post("/scripts/{script_id}/edit", dependencies=[Csrf])
async def edit(
    request: Request,
    script_id: int,
    user: PageUser,
    db: DbDep,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    timeout_seconds: Annotated[str, Form()] = "",
    content: Annotated[str, Form()] = "",
):
    script = visible_script(db, user, script_id)
    raw = await request.form()
    form = {"name": name, "description": description, "timeout_seconds": timeout_seconds}
    run_errors: dict[str, str] = {}
    try:
        try:
            timeout = int(timeout_seconds)
        except ValueError:
            raise core.ScriptError(
                422,
                _(
                    "The timeout is a whole number of seconds from 1 to %(max)s.",
                    max=core.MAX_TIMEOUT,
                ),
            ) from None
        # One deployment update for both changes: validate the details first.
        core.check_timeout(timeout)
        core.check_name(name)
        run_changes, run_errors = how_it_runs.changes_from_form(raw, script)
        if run_errors:
            raise core.ScriptError(422, _("Some settings of how it runs need a change."))
        refuse_huge_body(request)
        if not await new_version_from_upload(db, user, script, raw):
            old = await store.get(core.current_version(script).sha256)
            # Saved in the encoding the script was in (a .py: the one its text declares).
            _text, encoding = content_checks.text_of(script.kind, old)
            data = content_checks.bytes_of(script.kind, content.replace("\r\n", "\n"), encoding)
            if script.kind == "batch":
                data = data.replace(b"\n", b"\r\n")  # cmd.exe expects CRLF
            if data != old:
                await versions.replace_content(db, user, script, data)
        await core.update_details(
            db,
            user,
            script,
            {
                "name": name,
                "description": description,
                "timeout_seconds": timeout,
                "policy": _policy_from_form(raw),
                **run_changes,
            },
        )
    except core.ScriptError as exc:
        db.rollback()
        return render(
            request,
            "scripts/edit.html",
            {
                "script": script,
                "content": content,
                "error": str(exc),
                "form": form,
                "policy": _policy(script),
                **how_it_runs.section_context(script, raw, run_errors),
            },
            status_code=exc.status,
        )
    flash(request, _("Saved %(name)s (version %(v)s).", name=script.name, v=script.current_version))
    await _notifications_follow(request, db, script)
    return RedirectResponse(f"/scripts/{script.id}", status_code=303)


async def _notifications_follow(request: Request, db, script) -> None:
    """Commit, then bring the script's notifications in step (scripts does not know about
    notifications: the page calls both); a failure is shown as a flash message."""
    db.commit()
    try:
        await notifications.script_changed(db, request.app.state.settings, script)
    except core.ScriptError as exc:
        flash(request, str(exc), "error")


@pages.get("/scripts/{script_id}/delete")
async def delete_form(request: Request, script_id: int, user: PageUser, db: DbDep):
    script = visible_script(db, user, script_id)
    return render(request, "scripts/delete.html", {"script": script})


@pages.post("/scripts/{script_id}/delete", dependencies=[Csrf])
async def delete(request: Request, script_id: int, user: PageUser, db: DbDep):
    script = visible_script(db, user, script_id)
    await core.delete_script(db, user, script)
    flash(request, _("Deleted %(name)s. Its past runs stay in the history.", name=script.name))
    await _notifications_follow(request, db, script)
    return RedirectResponse("/scripts", status_code=303)


@pages.post("/scripts/{script_id}/run", dependencies=[Csrf])
@no_database_write
async def run_now(request: Request, script_id: int, user: PageUser, db: DbDep):
    """Run now; with an `arguments` field (one line, Windows' rules), with those this once."""
    script = visible_script(db, user, script_id)
    line = (await request.form()).get("arguments")
    arguments = None if line is None else split_arguments(str(line))
    try:
        run = await run_core.start_run(script, request.app.state.runner, arguments=arguments)
    except core.ScriptError as exc:
        if exc.status != 422:
            raise
        flash(request, str(exc), "error")
        return RedirectResponse(f"/scripts/{script.id}#run-with", status_code=303)
    if request.headers.get("accept", "").startswith("application/json"):
        return JSONResponse({"id": run.id, "url": f"/runs/{run.id}"}, status_code=202)
    return RedirectResponse(f"/runs/{run.id}", status_code=303)
