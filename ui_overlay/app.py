"""The web overlay: `create_app(settings)` builds the pages and the /api/v1 API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from scriptflow_prefect.ui_overlay import (
    auth,
    dashboard,
    environments,
    files_api,
    health,
    how_it_runs,
    notifications,
    notifications_api,
    openapi,
    prefect_proxy,
    prefect_proxy_ws,
    runs,
    runs_api,
    scheduler,
    schedules,
    schedules_api,
    scripts,
    scripts_api,
    settings_pages,
    slow_prefect,
    storage_errors,
    workspace,
)
from scriptflow_prefect.ui_overlay.deps import LoginRequired, writable_db
from scriptflow_prefect.ui_overlay.templating import render
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from scriptflow_prefect import __version__
from scriptflow_prefect.accounts.service import LoginThrottle
from scriptflow_prefect.notifications import service as notifications_core
from scriptflow_prefect.platform import i18n
from scriptflow_prefect.platform.db import Database
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.prefect import PrefectUnavailable
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.scripts.service import ScriptError

log = logging.getLogger("scriptflow.web")


class LocaleMiddleware:
    """Sets the request's language from Accept-Language (a signed-in user's own choice wins
    later, in the user dependency), else SCRIPTFLOW_LANGUAGE."""

    def __init__(self, app: ASGIApp, default: str):
        self.app, self.default = app, default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            accept = headers.get(b"accept-language", b"").decode("latin-1")
            token = i18n.set_locale(i18n.negotiate(accept, self.default))
            try:
                await self.app(scope, receive, send)
            finally:
                i18n._current.reset(token)
        else:
            await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """Everything is served by the app itself, so the policy can be strict."""

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            b"frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
        ),
    ]

    # Pages and API answers hold what only their user may see: no copy in a browser's or a
    # proxy's cache (the back button after signing out, a shared computer). Static files
    # are the same for everyone and may be cached.
    NO_STORE = (b"cache-control", b"no-store")

    # The Prefect UI behind /prefect/ (prefect_proxy.py) needs inline styles: its own policy.
    UI_HEADERS = [*HEADERS[:3], (b"content-security-policy", prefect_proxy.UI_CSP)]

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        http = scope["type"] == "http"
        prefect_ui = http and prefect_proxy.is_ui_asset(scope["path"])
        # The Prefect UI's files keep Prefect's cache headers (or the proxy's no-cache).
        cacheable = http and (scope["path"].startswith("/static/") or prefect_ui)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                policy = self.UI_HEADERS if prefect_ui else self.HEADERS
                headers = list(message.get("headers", [])) + policy
                if not cacheable:
                    headers = [h for h in headers if h[0].lower() != b"cache-control"]
                    headers.append(self.NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def _detail_of(exc: RequestValidationError) -> str:
    """One sentence a person can act on, from pydantic's error list."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        msg = err.get("msg", "")
        if err.get("type") == "missing":
            parts.append(_("%(field)s is required.", field=loc or "?"))
        else:
            parts.append(f"{loc}: {msg}" if loc else msg)
    return " ".join(parts) or _("The request is not valid.")


def _not_found(request: Request, exc: RequestValidationError) -> str | None:
    """An id in the path that is no id at all (any shape, any size) names nothing: the reason
    for a 404, or None when the path is fine (the error is in the query or the body)."""
    for err in exc.errors():
        loc = err.get("loc", ())
        if len(loc) >= 2 and loc[0] == "path":
            name = str(loc[1])
            value = str(request.path_params.get(name, ""))[:64]
            if name == "script_id":
                return _("There is no script with id %(id)s.", id=value)
            if name == "run_id":
                return _("There is no run with id %(id)s.", id=value)
            if name == "version":
                return _("This script has no version %(n)s.", n=value)
            if name == "token_id":
                return _("There is no such token.")
            if name == "user_id":
                return _("There is no such user.")
            return _("There is nothing at this address.")
    return None


def _api_errors(api: FastAPI) -> None:
    @api.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        missing = _not_found(request, exc)
        if missing:
            return JSONResponse({"detail": missing}, status_code=404)
        return JSONResponse({"detail": _detail_of(exc)}, status_code=422)

    @api.exception_handler(ScriptError)
    async def _rule(request: Request, exc: ScriptError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @api.exception_handler(PrefectUnavailable)
    async def _prefect_down(request: Request, exc: PrefectUnavailable):
        detail = _("Prefect is not reachable: %(err)s", err=str(exc)[:200])
        return JSONResponse({"detail": detail}, status_code=503)

    @api.exception_handler(StarletteHTTPException)  # FastAPI's and the router's own (404, 405)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            root = request.scope.get("root_path", "")
            path = request.url.path.removeprefix(root) if root else request.url.path
            allow = openapi.allowed_methods(api, path)
            headers = {**(headers or {}), "Allow": ", ".join(allow)}
            detail = _("This address answers %(methods)s only.", methods=", ".join(allow))
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)


def _page_errors(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse({"detail": _("Sign in first.")}, status_code=401)
        from urllib.parse import quote

        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        if request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code)
        return render(
            request,
            "errors/error.html",
            {"status": exc.status_code, "detail": exc.detail},
            status_code=exc.status_code,
        )

    @app.exception_handler(ScriptError)
    async def _rule(request: Request, exc: ScriptError):
        return await _http(request, HTTPException(exc.status, str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        missing = _not_found(request, exc)
        if missing:
            return await _http(request, HTTPException(404, missing))
        return render(
            request,
            "errors/error.html",
            {"status": 422, "detail": _detail_of(exc)},
            status_code=422,
        )


def _outbox_lifespan(settings: Settings, db: Database):
    """The notification outbox's sender loop lives as long as the web app: messages whose
    first try failed are retried from here, also while Prefect's server restarts."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(notifications_core.deliver_outbox(db, settings, stop))
        try:
            async with prefect_proxy.lifespan(_app):
                yield
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, 10)
            except TimeoutError:  # a try stuck on a slow SMTP server: its lease covers it
                task.cancel()

    return lifespan


def create_app(settings: Settings, *, db: Database | None = None, runner=None) -> FastAPI:
    db = db or Database(settings.sqlalchemy_url)
    app = FastAPI(
        title="ScriptFlow",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(writable_db)],
        lifespan=_outbox_lifespan(settings, db),
    )
    api = FastAPI(
        title="ScriptFlow API",
        version=__version__,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        dependencies=[Depends(writable_db)],
    )
    for a in (app, api):
        a.state.settings = settings
        a.state.db = db
        a.state.runner = runner
        a.state.throttle = LoginThrottle()
    api.state.throttle = app.state.throttle
    _api_errors(api)
    _page_errors(app)
    storage_errors.register(api, app)
    slow_prefect.register(app)

    for module in (
        auth,
        scripts_api,
        runs_api,
        files_api,
        schedules_api,
        settings_pages,
        notifications_api,
        scheduler,
        environments,
    ):
        if hasattr(module, "api"):
            api.include_router(module.api)
    for module in (
        health,
        auth,
        dashboard,
        scripts,
        how_it_runs,
        workspace,
        schedules,
        runs,
        settings_pages,
        notifications,
        scheduler,
        environments,
    ):
        if hasattr(module, "pages"):
            app.include_router(module.pages)
    openapi.document(api)
    app.router.routes.extend(prefect_proxy.routes + prefect_proxy_ws.routes)
    app.mount("/api/v1", api)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret,
        session_cookie="scriptflow_session",
        same_site="lax",
        https_only=settings.secure_cookies,
        max_age=14 * 24 * 3600,
    )
    app.add_middleware(LocaleMiddleware, default=settings.language)
    app.add_middleware(SecurityHeadersMiddleware)
    return app
