"""GET /health: overlay database, Prefect API and runner heartbeat (no auth)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from scriptflow_prefect.execution.sandbox import sandbox_state
from scriptflow_prefect.monitoring import service as monitoring
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.i18n import _

pages = APIRouter()


def sandbox_component(settings) -> dict:
    """Runs still work without a sandbox, so it does not fail /health: it warns, loudly."""
    state = sandbox_state(settings.sandbox, settings.home)
    warnings = list(state.warnings)
    if not state.enforced:
        warnings.insert(0, _("Runs are NOT sandboxed: %(why)s", why=state.detail))
    return {
        "ok": True,
        "enforced": state.enforced,
        "mechanism": state.mechanism,
        "detail": state.detail,
        "warnings": warnings,
    }


def _db_ok(request: Request) -> bool:
    try:
        with request.app.state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


async def _runner(request: Request) -> tuple[bool, str]:
    runner = request.app.state.runner
    if runner is not None:  # in this process: ask the thread itself
        alive = runner._thread is not None and runner._thread.is_alive()
        return alive, "in-process"
    alive = [w for w in await monitoring.workers() if w["alive"]]
    return bool(alive), f"{len(alive)} worker(s) alive"


@pages.get("/health")
async def health(request: Request):
    components: dict[str, dict] = {}
    components["database"] = {"ok": await asyncio.to_thread(_db_ok, request)}
    try:
        prefect_ok = await asyncio.wait_for(platform_prefect.health(), 5)
    except Exception:
        prefect_ok = False
    components["prefect_api"] = {"ok": prefect_ok}
    try:
        runner_ok, detail = (
            await asyncio.wait_for(_runner(request), 5)
            if prefect_ok
            else (False, "Prefect API unreachable")
        )
    except Exception as exc:
        runner_ok, detail = False, str(exc)
    components["runner"] = {"ok": runner_ok, "detail": detail}
    components["sandbox"] = sandbox_component(request.app.state.settings)
    failing = [name for name, c in components.items() if not c["ok"]]
    body = {"status": "ok" if not failing else "unavailable", "components": components}
    if failing:
        body["failing"] = failing
    warnings = components["sandbox"]["warnings"]
    if warnings:
        body["warnings"] = warnings
    return JSONResponse(body, status_code=503 if failing else 200)
