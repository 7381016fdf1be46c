"""Pages when Prefect is slow or away: each page's Prefect calls share a time budget
(platform/prefect_budget.py); a page that can do without what is late shows what it has and
says "Prefect is slow to answer" (base.html); one that cannot (a run's own page) answers 503
with the reason, never a hung tab or a 500. The API has no budget (see prefect_budget.py)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from scriptflow_prefect.ui_overlay.templating import render
from starlette.types import ASGIApp, Receive, Scope, Send

from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.prefect import PrefectUnavailable
from scriptflow_prefect.platform.prefect_budget import budget, was_slow

RETRY_SECONDS = 10
_NO_BUDGET = ("/api/", "/static/", "/health", "/prefect")


class PageBudget:
    """Every page request (not the API, not static files) gets the budget."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_NO_BUDGET):
            await self.app(scope, receive, send)
            return
        with budget():
            await self.app(scope, receive, send)


def register(app: FastAPI) -> None:
    async def _unavailable(request: Request, exc: Exception):
        if was_slow():
            detail = _("Prefect is slow to answer, and this page needs it. Try again in a moment.")
        else:
            detail = _("Prefect is not reachable: %(err)s", err=str(exc)[:200])
        headers = {"Retry-After": str(RETRY_SECONDS)}
        if request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse({"detail": detail}, status_code=503, headers=headers)
        response = render(
            request, "errors/error.html", {"status": 503, "detail": detail}, status_code=503
        )
        response.headers.update(headers)
        return response

    app.add_exception_handler(PrefectUnavailable, _unavailable)
    app.add_middleware(PageBudget)
