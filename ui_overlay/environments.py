"""A script's Python dependency environment: `GET /api/v1/scripts/{id}/environment`, and the
script page's "Python packages" section (re-rendered while the environment is being built)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from scriptflow_prefect.ui_overlay import schemas
from scriptflow_prefect.ui_overlay.deps import ApiUser, DbDep, PageUser, visible_script
from scriptflow_prefect.ui_overlay.openapi import errors
from scriptflow_prefect.ui_overlay.templating import render

from scriptflow_prefect.environments import service as environments
from scriptflow_prefect.runs.messages import RunMessage
from scriptflow_prefect.scripts import run_config, store
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.service import current_version

api = APIRouter(tags=["scripts"])
pages = APIRouter()
LOG_CHARS = 200_000  # a page shows the end of a longer log


async def environment_of(request: Request, script: Script) -> dict[str, Any]:
    """The environment as the API and the page show it."""
    data = await store.get(current_version(script).sha256)
    state = environments.state_of(
        request.app.state.settings,
        script.id,
        script.kind,
        run_config.run_config(script.settings).requirements,
        data,
    )
    message = RunMessage(*state.failure).translated() if state.failure else None
    log = state.log or (message or "")
    return {
        "status": state.status,
        "packages": state.packages,
        "log": log[-LOG_CHARS:],
        "requirements": state.requirements,
        "python": state.python,
        "built_at": datetime.fromisoformat(state.built_at) if state.built_at else None,
        "message": message,
    }


@api.get(
    "/scripts/{script_id}/environment",
    response_model=schemas.ScriptEnvironment,
    responses=errors(503),
)
async def get_environment(request: Request, script_id: int, user: ApiUser, db: DbDep):
    return await environment_of(request, visible_script(db, user, script_id))


@pages.get("/scripts/{script_id}/environment")
async def environment_section(request: Request, script_id: int, user: PageUser, db: DbDep):
    """The section's body alone: refresh.js swaps it in while packages are being installed."""
    script = visible_script(db, user, script_id)
    env = await environment_of(request, script)
    shown = {"id": script.id, "type": script.kind}
    return render(request, "environments/_body.html", {"script": shown, "env": env})
