"""Request dependencies: database session, signed-in user (pages) or token user (API), CSRF."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts import service as accounts
from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.platform import i18n
from scriptflow_prefect.platform.db import WRITE_WAIT_SECONDS, commit_if_free
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.scripts.models import Script

# Ids are SQL INTEGER columns (32-bit on PostgreSQL): a larger one cannot exist, and handing
# it to the database is an overflow error (a 500), not "not found".
MAX_ID = 2**31 - 1
# A path id of any other size or shape fails validation, which the apps answer with 404.
DbId = Annotated[int, Path(ge=1, le=MAX_ID)]


class LoginRequired(Exception):
    """A page needs a signed-in user: the handler redirects to the login page."""


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.db.session() as session:
        yield session


# Commit before the response is sent (FastAPI's default "request" scope commits after):
# a client that acts on a 201 must find what it created.
DbDep = Annotated[Session, Depends(get_db, scope="function")]

_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
_write_waiters = ThreadPoolExecutor(max_workers=16, thread_name_prefix="db-write-wait")
F = TypeVar("F", bound=Any)


async def writable_db(request: Request) -> None:
    """Every request that may write (every route's first dependency, app.py) first waits,
    on a thread and for a bounded time, until the database takes writes: held by a backup,
    it is answered 503 before anything (Prefect included) is changed, and pages keep
    answering meanwhile. DatabaseBusy / DiskFull are answered by app.py's handlers."""
    endpoint = request.scope.get("endpoint")
    if request.method in _WRITES and getattr(endpoint, "writes_database", True):
        # Threads of their own: writes waiting out a backup must not take the default
        # executor's few threads from the pages that read output files on it.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(_write_waiters, request.app.state.db.wait_writable)


def no_database_write(endpoint: F) -> F:
    """Marks a POST that writes nothing to the overlay database (Run now, cancel, a preview):
    it goes ahead while a backup holds the database."""
    endpoint.writes_database = False  # type: ignore[attr-defined]
    return endpoint


def busy_headers() -> dict[str, str]:
    return {"Retry-After": str(WRITE_WAIT_SECONDS)}


def _use_user_language(request: Request, user: User) -> None:
    # Templates get a plain copy: an error rolls the session back, which would leave the
    # ORM object unusable while the error page is rendered.
    request.state.user = SimpleNamespace(
        id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        uses_prefect=user.uses_prefect,
        email=user.email,
        language=user.language,
        timezone=user.timezone,
    )
    if user.language in i18n.LOCALES:
        i18n.set_locale(user.language)
    i18n.set_zone(user.timezone or request.app.state.settings.timezone)


async def page_user(request: Request, db: DbDep) -> User:
    """The signed-in user of a page. The cookie alone is not enough: its session must still
    exist on the server (signing out deletes it), for the user it names."""
    sid, uid = request.session.get("sid"), request.session.get("uid")
    user = accounts.session_user(db, sid) if isinstance(sid, str) else None
    commit_if_free(db)  # the hourly last-seen stamp: skipped while a backup holds the lock
    if (
        user is None
        or user.id != uid
        or not user.is_active
        or request.session.get("epoch") != user.session_epoch
    ):
        request.session.clear()
        raise LoginRequired()
    _use_user_language(request, user)
    return user


# Documents the scheme in the OpenAPI; the answers without a usable token are our own (401).
_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer sf_…`")


async def api_user(
    request: Request,
    db: DbDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> User:
    token = credentials.credentials if credentials else ""
    if not token.strip():
        raise HTTPException(
            401,
            _("Send an API token: Authorization: Bearer <token>."),
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = accounts.user_for_token(db, token.strip())
    if user is None:
        raise HTTPException(
            401,
            _("The API token is unknown, expired or revoked."),
            headers={"WWW-Authenticate": "Bearer"},
        )
    # The last-used stamp: end the write now, not after the request's awaits; skipped, not
    # waited for, while another connection (a backup) holds the write lock.
    commit_if_free(db)
    _use_user_language(request, user)
    return user


PageUser = Annotated[User, Depends(page_user)]
ApiUser = Annotated[User, Depends(api_user)]


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise HTTPException(403, _("Only an administrator can do this."))


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def check_csrf(request: Request) -> None:
    """Every state-changing page request carries the session's CSRF token (form or header)."""
    expected = request.session.get("csrf")
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        content_type = request.headers.get("content-type", "")
        if "form" in content_type:
            form = await request.form()
            sent = form.get("csrf_token")  # type: ignore[assignment]
    if not expected or not sent or not secrets.compare_digest(str(sent), expected):
        raise HTTPException(403, _("The form has expired. Reload the page and try again."))


Csrf = Depends(check_csrf)


def visible_script(db: Session, user: User, script_id: int, *, deleted: bool = False) -> Script:
    """The script if this user may see it; 404 otherwise (others' scripts do not exist)."""
    script = db.get(Script, script_id) if 1 <= script_id <= MAX_ID else None
    if (
        script is None
        or (script.deleted_at is not None and not deleted)
        or (not user.is_admin and script.owner_id != user.id)
    ):
        raise HTTPException(404, _("There is no script with id %(id)s.", id=script_id))
    return script
