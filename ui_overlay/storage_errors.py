"""Answers for a database or disk that cannot take a write right now: 503 with Retry-After
while another connection (a backup) holds the overlay database's write lock, 507 when the
disk is full. Nothing was changed in either case (deps.writable_db checks before a write
route starts; a write that fails at commit is rolled back)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from scriptflow_prefect.ui_overlay.deps import busy_headers
from scriptflow_prefect.ui_overlay.templating import render
from sqlalchemy.exc import DBAPIError

from scriptflow_prefect.platform.db import DatabaseBusy, failure_of
from scriptflow_prefect.platform.disk_space import DiskFull
from scriptflow_prefect.platform.i18n import _

HANDLED = (DatabaseBusy, DiskFull, DBAPIError)


def _answer(exc: Exception) -> tuple[int, str, dict[str, str]]:
    kind = failure_of(exc)
    if kind == "busy":
        detail = _("The database is busy (a backup?), try again in a few seconds.")
        return 503, detail, busy_headers()
    if kind == "full":
        detail = _("The disk is full: nothing was changed. Free some space, then try again.")
        return 507, detail, {}
    raise exc  # any other database error is a bug, not the user's to act on


def register(api: FastAPI, app: FastAPI) -> None:
    async def _json(request: Request, exc: Exception):
        status, detail, headers = _answer(exc)
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    async def _page(request: Request, exc: Exception):
        status, detail, headers = _answer(exc)
        if request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse({"detail": detail}, status_code=status, headers=headers)
        response = render(
            request, "errors/error.html", {"status": status, "detail": detail}, status_code=status
        )
        response.headers.update(headers)
        return response

    for cls in HANDLED:
        api.add_exception_handler(cls, _json)
        app.add_exception_handler(cls, _page)
