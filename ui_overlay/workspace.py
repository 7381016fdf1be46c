"""Pages for a script's files: its folder (browse, download), a run's kept files (download),
and a new version uploaded on the Edit page (the working folder is a How it runs part)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from scriptflow_prefect.ui_overlay.deps import DbDep, PageUser, visible_script
from scriptflow_prefect.ui_overlay.files_api import attachment, get_version_file, not_here
from scriptflow_prefect.ui_overlay.scripts_api import read_bundle
from scriptflow_prefect.ui_overlay.templating import render
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.history import run_files
from scriptflow_prefect.runs import service as runs
from scriptflow_prefect.scripts import folder, run_config, versions
from scriptflow_prefect.scripts.models import Script

pages = APIRouter()


async def new_version_from_upload(db: Session, user: User, script: Script, form) -> bool:
    """A new version from the Edit page's upload, if files were chosen. One .py/.bat file
    replaces the script and keeps its other files; several files or a .zip replace all."""
    uploads = [u for u in form.getlist("file") if hasattr(u, "read") and u.filename]
    if not uploads:
        return False
    bundle = await read_bundle(uploads, str(form.get("entry") or "").strip())
    whole = len(uploads) > 1 or str(uploads[0].filename).lower().endswith(".zip")
    await versions.replace_content(
        db,
        user,
        script,
        bundle.entry.data,
        bundle.entry.name,
        bundle.companions if whole else None,
    )
    return True


def folder_context(request: Request, script: Script) -> dict:
    """The script page's folder section: mode, path and, for `script`, the folder's top."""
    config = run_config.run_config(script.settings).working_folder
    shown = None
    if config.mode == "script":
        shown = folder.browse(request.app.state.settings, script.id)
    return {"folder_mode": config.mode, "folder_path": config.path, "listing": shown}


@pages.get("/scripts/{script_id}/folder")
async def folder_root(request: Request, script_id: int, user: PageUser, db: DbDep):
    return await folder_page(request, script_id, "", user, db)


@pages.get("/scripts/{script_id}/folder/{path:path}")
async def folder_page(request: Request, script_id: int, path: str, user: PageUser, db: DbDep):
    """A sub-folder of the script's folder (a page), or one of its files (a download)."""
    script = visible_script(db, user, script_id)
    settings = request.app.state.settings
    if path.strip("/") and not folder.is_folder(settings, script.id, path):
        return attachment(folder.open_in_folder(settings, script.id, path), path)
    listing = folder.browse(settings, script.id, path)
    crumbs, walked = [], []
    for part in listing.path.split("/") if listing.path else []:
        walked.append(part)
        crumbs.append((part, "/".join(walked)))
    return render(
        request,
        "scripts/folder.html",
        {"script": script, "listing": listing, "crumbs": crumbs},
    )


@pages.get("/scripts/{script_id}/files/{name:path}")
async def version_file(script_id: int, name: str, user: PageUser, db: DbDep):
    return await get_version_file(script_id, name, user, db)


@pages.get("/runs/{run_id}/files.html")
async def run_files_fragment(request: Request, run_id: str, user: PageUser, db: DbDep):
    """The run page's list of files, fetched again when the run ends (run_files.js)."""
    flow_run = await runs.visible_run(db, user, run_id)
    return render(request, "runs/_files.html", {"run": runs.run_of(db, flow_run)})


@pages.get("/runs/{run_id}/files/{name:path}")
async def run_file(request: Request, run_id: str, name: str, user: PageUser, db: DbDep):
    flow_run = await runs.visible_run(db, user, run_id)
    try:
        f = run_files.open_kept(request.app.state.settings, str(flow_run.id), name)
    except (OSError, ValueError):
        raise not_here(name) from None
    return attachment(f, name)
