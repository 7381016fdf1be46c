"""/api/v1/scripts: upload, list, read, edit, version and delete scripts; start runs."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Body, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict
from scriptflow_prefect.ui_overlay import bodies, schemas
from scriptflow_prefect.ui_overlay.bodies import PolicyChanges, ScriptName, Timeout
from scriptflow_prefect.ui_overlay.deps import (
    ApiUser,
    DbDep,
    DbId,
    no_database_write,
    visible_script,
)
from scriptflow_prefect.ui_overlay.openapi import content_body, errors
from sqlalchemy import func, select

from scriptflow_prefect.notifications import service as notifications
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.runs import service as run_core
from scriptflow_prefect.runs.models import Run
from scriptflow_prefect.schedules.truth import truths_or_saved
from scriptflow_prefect.scripts import files as script_files
from scriptflow_prefect.scripts import service as core
from scriptflow_prefect.scripts import store, versions
from scriptflow_prefect.scripts.models import Script, ScriptVersion

api = APIRouter(tags=["scripts"])
SORTS = {
    "name": Script.name.asc(),
    "-name": Script.name.desc(),
    "created": Script.created_at.asc(),
    "-created": Script.created_at.desc(),
    "updated": Script.updated_at.asc(),
    "-updated": Script.updated_at.desc(),
}


async def read_bundle(uploads: list, entry: str | None) -> script_files.Bundle:
    """Several uploaded files or one zip (API.md: the entry point is the single .py/.bat or
    the one named `entry`), read no further than the 10 MB they may hold together."""
    uploads = [u for u in uploads if hasattr(u, "read") and u.filename]
    if len(uploads) > script_files.MAX_FILES:
        raise core.ScriptError(
            422, _("A script has at most %(n)s files.", n=script_files.MAX_FILES)
        )
    parts, room = [], core.MAX_BYTES
    for upload in uploads:
        data = await upload.read(room + 1)
        room -= len(data)
        if room < 0:
            raise core.ScriptError(
                413,
                _("The file is larger than the 10 MB limit.")
                if len(uploads) == 1
                else _("The files are larger than the 10 MB limit together."),
            )
        parts.append((upload.filename, data))
    return script_files.bundle_of(parts, entry or None)


def refuse_huge_body(request: Request) -> None:
    """Refuse before reading: a 2 GB upload should not fill the disk to be refused."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > core.MAX_BYTES + 1024 * 1024:
        raise HTTPException(413, _("The file is larger than the 10 MB limit."))


async def script_dicts(scripts: list[Script]) -> list[dict]:
    """Script objects with their last run and their schedule as Prefect runs it."""
    if not scripts:
        return []
    last, truths = await asyncio.gather(
        run_core.last_runs([s.id for s in scripts]), truths_or_saved(scripts)
    )
    return [core.script_to_dict(s, last.get(s.id), truths[s.id]) for s in scripts]


@api.get("/scripts", response_model=schemas.ScriptPage, responses=errors(503))
async def list_scripts(
    user: ApiUser,
    db: DbDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
    type: Literal["python", "batch"] | None = None,
    sort: Literal["name", "-name", "created", "-created", "updated", "-updated"] = "-created",
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
):
    query = core.visible_scripts_query(user, q=q, kind=type)
    total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = list(
        db.scalars(
            query.order_by(SORTS[sort], Script.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
    )
    return {"items": await script_dicts(rows), "total": total}


async def _notifications_follow(request: Request, db, script: Script) -> None:
    """Commit, then bring the script's notifications in step (scripts does not know about
    notifications: this is the one level up that calls both). A 503 says what is behind."""
    db.commit()
    await notifications.script_changed(db, request.app.state.settings, script)


@api.post(
    "/scripts",
    status_code=201,
    response_model=schemas.Script,
    responses=errors(400, 409, 413, 503),
)
async def upload_script(
    request: Request,
    user: ApiUser,
    db: DbDep,
    file: Annotated[
        list[UploadFile],
        File(min_length=1, description="The script; several parts (companion files) or one .zip"),
    ],
    name: Annotated[str | None, Form(max_length=200)] = None,
    description: Annotated[str, Form(max_length=5000)] = "",
    entry: Annotated[
        str | None, Form(max_length=400, description="Which file is the script")
    ] = None,
):
    refuse_huge_body(request)
    bundle = await read_bundle(file, entry)
    script = await core.create_script(
        db,
        user,
        filename=bundle.entry.name,
        data=bundle.entry.data,
        name=name,
        description=description,
        companions=bundle.companions,
    )
    await _notifications_follow(request, db, script)
    return (await script_dicts([script]))[0]


@api.get("/scripts/{script_id}", response_model=schemas.Script, responses=errors(503))
async def get_script(script_id: int, user: ApiUser, db: DbDep):
    script = visible_script(db, user, script_id)
    return (await script_dicts([script]))[0]


class ScriptChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ScriptName | None = None
    description: str | None = None
    timeout_seconds: Timeout | None = None
    policy: PolicyChanges | None = None
    # How it runs (API.md "How a script runs"); validated in scripts/run_config.py.
    arguments: bodies.Arguments | None = None
    environment: bodies.Environment | None = None
    # Write-only values: {"NAME": "value"} sets one, {"NAME": null} removes it.
    secrets: bodies.SecretChanges | None = None
    requirements: bodies.Requirements | None = None
    working_folder: bodies.WorkingFolderBody | None = None
    run_as: bodies.Account | None = None


@api.patch("/scripts/{script_id}", response_model=schemas.Script, responses=errors(409, 503))
async def patch_script(
    request: Request, script_id: int, changes: ScriptChanges, user: ApiUser, db: DbDep
):
    script = visible_script(db, user, script_id)
    await core.update_details(db, user, script, changes.model_dump(exclude_unset=True))
    await _notifications_follow(request, db, script)
    return (await script_dicts([script]))[0]


@api.delete("/scripts/{script_id}", status_code=204, responses=errors(503))
async def delete_script(request: Request, script_id: int, user: ApiUser, db: DbDep):
    script = visible_script(db, user, script_id)
    await core.delete_script(db, user, script)
    await _notifications_follow(request, db, script)
    return Response(status_code=204)


@api.get("/scripts/{script_id}/content", response_class=PlainTextResponse, responses=errors(503))
async def get_content(script_id: int, user: ApiUser, db: DbDep):
    script = visible_script(db, user, script_id)
    data = await store.get(core.current_version(script).sha256)
    return Response(data, media_type="text/plain; charset=utf-8")


@api.put(
    "/scripts/{script_id}/content",
    response_model=schemas.Script,
    responses=errors(400, 413, 503),
    openapi_extra=content_body(),
)
async def put_content(script_id: int, request: Request, user: ApiUser, db: DbDep):
    """Raw body, or multipart with a `file` field. One .py/.bat file (or a raw body) replaces
    the script and keeps its companion files; several files or a .zip replace them all."""
    script = visible_script(db, user, script_id)
    refuse_huge_body(request)
    filename, companions = None, None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        uploads = [u for u in form.getlist("file") if hasattr(u, "read")]
        if not uploads:
            raise HTTPException(422, _("file is required."))
        entry = form.get("entry")
        bundle = await read_bundle(uploads, entry if isinstance(entry, str) else None)
        data, filename = bundle.entry.data, bundle.entry.name
        if len(uploads) > 1 or str(uploads[0].filename).lower().endswith(".zip"):
            companions = bundle.companions
    else:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > core.MAX_BYTES:
                raise HTTPException(413, _("The file is larger than the 10 MB limit."))
        data = bytes(data)
    await versions.replace_content(db, user, script, data, filename, companions)
    return (await script_dicts([script]))[0]


@api.get("/scripts/{script_id}/versions", response_model=schemas.Versions)
async def list_versions(script_id: int, user: ApiUser, db: DbDep):
    script = visible_script(db, user, script_id)
    return {
        "items": [
            {
                "version": v.version,
                "sha256": v.sha256,
                "size": v.size,
                "created_at": v.created_at,
                "author": v.author.username if v.author else None,
            }
            for v in sorted(script.versions, key=lambda v: -v.version)
        ]
    }


@api.get(
    "/scripts/{script_id}/versions/{version}/content",
    response_class=PlainTextResponse,
    responses=errors(503),
)
async def get_version_content(script_id: int, version: DbId, user: ApiUser, db: DbDep):
    script = visible_script(db, user, script_id)
    row = db.scalar(
        select(ScriptVersion).where(
            ScriptVersion.script_id == script.id, ScriptVersion.version == version
        )
    )
    if row is None:
        raise HTTPException(404, _("This script has no version %(n)s.", n=version))
    return Response(await store.get(row.sha256), media_type="text/plain; charset=utf-8")


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arguments: bodies.Arguments | None = None  # this run only; validated as the script's own


@api.post(
    "/scripts/{script_id}/runs", status_code=202, response_model=Run, responses=errors(409, 503)
)
@no_database_write
async def run_script_now(
    script_id: int,
    request: Request,
    user: ApiUser,
    db: DbDep,
    body: Annotated[RunRequest | None, Body()] = None,
):
    """Run the script once now; `{"arguments": [...]}` runs it with other arguments."""
    script = visible_script(db, user, script_id)
    arguments = body.arguments if body else None
    return await run_core.start_run(script, request.app.state.runner, arguments=arguments)
