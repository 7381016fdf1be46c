"""Sign in and out (pages) and API tokens for username + password (API)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import urlparse

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from scriptflow_prefect.ui_overlay import schemas
from scriptflow_prefect.ui_overlay.addresses import client_address
from scriptflow_prefect.ui_overlay.deps import Csrf, DbDep, csrf_token
from scriptflow_prefect.ui_overlay.openapi import errors
from scriptflow_prefect.ui_overlay.templating import render

from scriptflow_prefect.accounts import service as accounts
from scriptflow_prefect.platform.db import audit
from scriptflow_prefect.platform.i18n import _

pages = APIRouter()
api = APIRouter(tags=["auth"])
API_TOKEN_TTL = timedelta(days=30)


def _safe_next(target: str | None) -> str:
    """Only local paths: an open redirect would help phishing."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parsed = urlparse(target)
    return "/" if parsed.netloc or parsed.scheme else target


def _too_many(request: Request, username: str) -> int:
    return request.app.state.throttle.retry_after(username, client_address(request))


@pages.get("/login")
async def login_page(request: Request, next: str | None = None):
    csrf_token(request)
    return render(request, "auth/login.html", {"next": _safe_next(next), "error": None})


@pages.post("/login", dependencies=[Csrf])
async def login(
    request: Request,
    db: DbDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
):
    throttle = request.app.state.throttle
    address = client_address(request)
    if len(username) > accounts.USERNAME_MAX:  # no user has such a name; nothing to count
        return render(
            request,
            "auth/login.html",
            {
                "next": _safe_next(next),
                "username": "",
                "error": _("A user name has at most %(n)s characters.", n=accounts.USERNAME_MAX),
            },
            status_code=422,
        )
    wait = _too_many(request, username)
    if wait:
        return render(
            request,
            "auth/login.html",
            {
                "next": _safe_next(next),
                "username": username,
                "error": _("Too many failed attempts. Try again in %(n)s seconds.", n=wait),
            },
            status_code=429,
        )
    user = accounts.authenticate(db, username, password) if username and password else None
    if user is None:
        throttle.failed(username, address)
        audit(db, None, "login.failed", username)
        return render(
            request,
            "auth/login.html",
            {
                "next": _safe_next(next),
                "username": username,
                "error": _("Wrong user name or password."),
            },
            status_code=401,
        )
    throttle.succeeded(username, address)
    sign_in(request, db, user)
    audit(db, user.id, "login", user.username)
    return RedirectResponse(_safe_next(next), status_code=303)


def sign_in(request: Request, db, user) -> None:
    """A new session, on the server and in the cookie: nothing from before carries over
    (session fixation)."""
    request.session.clear()
    sid = accounts.start_session(db, user)
    request.session.update(sid=sid, uid=user.id, epoch=user.session_epoch)
    csrf_token(request)


@pages.post("/logout", dependencies=[Csrf])
async def logout(request: Request, db: DbDep):
    """Ends the session on the server too: a copy of the cookie no longer signs anyone in."""
    sid = request.session.get("sid")
    if isinstance(sid, str):
        accounts.end_session(db, sid)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


class TokenRequest(BaseModel):
    username: str = Field(min_length=1, max_length=accounts.USERNAME_MAX)
    password: str = Field(min_length=1, max_length=1024)


@api.post(
    "/auth/token",
    response_model=schemas.Token,
    responses={
        **errors(401),
        429: {
            **errors(429)[429],
            "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}},
        },
    },
)
async def create_api_token(request: Request, body: TokenRequest, db: DbDep):
    """Trade a user name and password for an API token (valid 30 days)."""
    wait = _too_many(request, body.username)
    if wait:
        raise HTTPException(
            429,
            _("Too many failed attempts. Try again in %(n)s seconds.", n=wait),
            headers={"Retry-After": str(wait)},
        )
    user = accounts.authenticate(db, body.username, body.password)
    if user is None:
        request.app.state.throttle.failed(body.username, client_address(request))
        raise HTTPException(401, _("Wrong user name or password."))
    request.app.state.throttle.succeeded(body.username, client_address(request))
    token, row = accounts.create_token(db, user, label="api login", ttl=API_TOKEN_TTL)
    audit(db, user.id, "token.create", row.prefix)
    return {"token": token, "expires_at": row.expires_at}
