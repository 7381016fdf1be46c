"""/api/v1 for files: a run's kept files, a script's folder (listing and download), a file of
the script's current version. Downloads are attachments of type application/octet-stream
whatever their name says, so no uploaded or script-made file is ever shown as a page."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from scriptflow_prefect.ui_overlay import schemas
from scriptflow_prefect.ui_overlay.deps import ApiUser, DbDep, visible_script
from scriptflow_prefect.ui_overlay.openapi import errors, file_answer

from scriptflow_prefect.history import run_files
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.runs import service as runs
from scriptflow_prefect.scripts import files as script_files
from scriptflow_prefect.scripts import folder, store

api = APIRouter(tags=["files"])
CHUNK = 256 * 1024


def attachment(f: BinaryIO, name: str) -> StreamingResponse:
    """Stream an open file as a download named after the last part of `name`."""
    headers = {
        "Content-Disposition": attachment_header(name),
        "Content-Length": str(os.fstat(f.fileno()).st_size),
        "X-Content-Type-Options": "nosniff",
    }

    def chunks() -> Iterator[bytes]:
        with f:
            while block := f.read(CHUNK):
                yield block

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)


def not_here(name: str) -> HTTPException:
    return HTTPException(404, _("There is no file named %(name)s here.", name=name[:200]))


@api.get(
    "/runs/{run_id}/files/{name:path}",
    response_class=Response,
    responses={**file_answer(), **errors(503)},
)
async def get_run_file(request: Request, run_id: str, name: str, user: ApiUser, db: DbDep):
    """One of the files the run created or changed (its `files`), as it was when it ended."""
    flow_run = await runs.visible_run(db, user, run_id)
    try:
        f = run_files.open_kept(request.app.state.settings, str(flow_run.id), name)
    except (OSError, ValueError):
        raise not_here(name) from None
    return attachment(f, name)


@api.get("/scripts/{script_id}/workspace", response_model=schemas.FolderListing)
async def list_workspace(request: Request, script_id: int, user: ApiUser, db: DbDep):
    """The script's own folder (working folder `script`): what its runs left there."""
    script = visible_script(db, user, script_id)
    return listing_dict(folder.browse(request.app.state.settings, script.id))


@api.get(
    "/scripts/{script_id}/workspace/{path:path}",
    response_class=Response,
    responses=file_answer(schemas.FolderListing),
)
async def get_workspace_path(
    request: Request, script_id: int, path: str, user: ApiUser, db: DbDep
) -> Response:
    """A sub-folder's listing (JSON) or a file (download)."""
    script = visible_script(db, user, script_id)
    settings = request.app.state.settings
    if folder.is_folder(settings, script.id, path):
        body = schemas.FolderListing(**listing_dict(folder.browse(settings, script.id, path)))
        return Response(body.model_dump_json(), media_type="application/json")
    return attachment(folder.open_in_folder(settings, script.id, path), path)


@api.get(
    "/scripts/{script_id}/files/{name:path}",
    response_class=Response,
    responses={**file_answer(), **errors(503)},
)
async def get_version_file(script_id: int, name: str, user: ApiUser, db: DbDep):
    """A file of the script's current version (its `files`), as uploaded."""
    script = visible_script(db, user, script_id)
    found = next((f for f in script_files.files_of(script) if f["name"] == name), None)
    if found is None:
        raise not_here(name)
    try:
        data = await store.get(found["sha256"])
    except Exception as exc:  # the store block is another service (a folder, SMB, S3)
        raise HTTPException(
            503, _("The script store is not reachable: %(err)s", err=str(exc)[:200])
        ) from exc
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": attachment_header(name),
            "X-Content-Type-Options": "nosniff",
        },
    )


def attachment_header(name: str) -> str:
    """`attachment` with the name's last part: plain ASCII, and in full as RFC 5987 says."""
    base = name.rsplit("/", 1)[-1] or "file"
    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in base
    )
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(base)}"


def listing_dict(listing: folder.Listing) -> dict:
    return {
        "path": listing.path,
        "entries": [
            {
                "name": e.name,
                "path": f"{listing.path}/{e.name}" if listing.path else e.name,
                "type": "folder" if e.is_dir else "file",
                "size": None if e.is_dir else e.size,
                "modified_at": e.modified,
            }
            for e in listing.entries
        ],
        "more": listing.more,
    }
