"""Settings page: your profile and password, your API tokens, and (admins) the users."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from scriptflow_prefect.ui_overlay.auth import sign_in
from scriptflow_prefect.ui_overlay.deps import Csrf, DbDep, DbId, PageUser, require_admin
from scriptflow_prefect.ui_overlay.templating import flash, render
from sqlalchemy import select

from scriptflow_prefect.accounts import service as accounts
from scriptflow_prefect.accounts.models import ApiToken, User
from scriptflow_prefect.notifications import service as notifications
from scriptflow_prefect.platform import i18n
from scriptflow_prefect.platform.db import audit
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.scripts.service import ScriptError

pages = APIRouter()
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _page(request, db, user, status_code: int = 200, **extra):
    tokens = list(
        db.scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.created_at.desc())
        )
    )
    users = list(db.scalars(select(User).order_by(User.username))) if user.is_admin else []
    ctx = {
        "tokens": tokens,
        "users": users,
        "new_token": None,
        "error": None,
        "locales": i18n.LOCALES,
    }
    ctx.update(extra)
    return render(request, "settings/index.html", ctx, status_code=status_code)


async def _notifications_follow(request: Request, db) -> None:
    """A user's address, language or active flag changed: commit, then the notifications
    that tell them follow (accounts does not know about notifications; the page calls both)."""
    db.commit()
    try:
        await notifications.users_changed(db, request.app.state.settings)
    except ScriptError as exc:
        flash(request, str(exc), "error")


@pages.get("/settings")
async def settings_page(request: Request, user: PageUser, db: DbDep):
    return _page(request, db, user)


@pages.post("/settings/profile", dependencies=[Csrf])
async def save_profile(
    request: Request,
    user: PageUser,
    db: DbDep,
    email: Annotated[str, Form()] = "",
    language: Annotated[str, Form()] = "",
):
    email = email.strip()
    if email and not EMAIL_RE.match(email):
        return _page(
            request,
            db,
            user,
            error=_("%(email)s is not an email address.", email=email),
            status_code=422,
        )
    user.email = email or None
    user.language = language if language in i18n.LOCALES else None
    if user.language:
        i18n.set_locale(user.language)
    flash(request, _("Profile saved."))
    await _notifications_follow(request, db)
    return RedirectResponse("/settings", status_code=303)


@pages.post("/settings/password", dependencies=[Csrf])
async def change_password(
    request: Request,
    user: PageUser,
    db: DbDep,
    current: Annotated[str, Form()] = "",
    new: Annotated[str, Form()] = "",
):
    if accounts.authenticate(db, user.username, current) is None:
        return _page(request, db, user, error=_("The current password is wrong."), status_code=422)
    try:
        accounts.set_password(user, new)
    except accounts.AccountError as exc:
        return _page(request, db, user, error=_(exc.msgid, **exc.params), status_code=422)
    sign_in(request, db, user)  # stay signed in here, nowhere else
    audit(db, user.id, "password.change", user.username)
    flash(
        request, _("Password changed. Other sessions were signed out and your API tokens revoked.")
    )
    return RedirectResponse("/settings", status_code=303)


@pages.post("/settings/tokens", dependencies=[Csrf])
async def create_token(
    request: Request, user: PageUser, db: DbDep, label: Annotated[str, Form()] = ""
):
    token, row = accounts.create_token(db, user, label=label.strip() or _("API token"))
    audit(db, user.id, "token.create", row.prefix)
    return _page(request, db, user, new_token=token)


@pages.post("/settings/tokens/{token_id}/revoke", dependencies=[Csrf])
async def revoke_token(request: Request, token_id: DbId, user: PageUser, db: DbDep):
    if not accounts.revoke_token(db, user, token_id):
        raise HTTPException(404, _("There is no such token."))
    flash(request, _("Token revoked."))
    return RedirectResponse("/settings", status_code=303)


@pages.post("/settings/users", dependencies=[Csrf])
async def add_user(
    request: Request,
    user: PageUser,
    db: DbDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    is_admin: Annotated[str, Form()] = "",
    is_power_user: Annotated[str, Form()] = "",
):
    require_admin(user)
    try:
        new = accounts.create_user(
            db,
            username.strip(),
            password,
            is_admin=bool(is_admin),
            email=email.strip() or None,
            is_power_user=bool(is_power_user),
        )
    except accounts.AccountError as exc:
        return _page(request, db, user, error=_(exc.msgid, **exc.params), status_code=422)
    audit(db, user.id, "user.create", new.username)
    flash(request, _("User %(name)s added.", name=new.username))
    await _notifications_follow(request, db)
    return RedirectResponse("/settings#users", status_code=303)


@pages.post("/settings/users/{user_id}/active", dependencies=[Csrf])
async def toggle_active(request: Request, user_id: DbId, user: PageUser, db: DbDep):
    require_admin(user)
    target = db.get(User, user_id)
    if target is None:
        raise HTTPException(404, _("There is no such user."))
    if target.id == user.id:
        return _page(request, db, user, error=_("You cannot disable yourself."), status_code=422)
    target.is_active = not target.is_active
    target.session_epoch += 1
    accounts.end_sessions(db, target)
    audit(db, user.id, "user.active" if target.is_active else "user.disable", target.username)
    flash(
        request,
        _("%(name)s is now enabled.", name=target.username)
        if target.is_active
        else _("%(name)s is now disabled.", name=target.username),
    )
    await _notifications_follow(request, db)
    return RedirectResponse("/settings#users", status_code=303)


@pages.post("/settings/users/{user_id}/power", dependencies=[Csrf])
async def set_power_user(
    request: Request,
    user_id: DbId,
    user: PageUser,
    db: DbDep,
    power: Annotated[str, Form()] = "",
):
    """Lets a user into the Prefect UI (`/prefect/`), or out again. Admins always are. The
    form says which (`power` 1 or 0), not "the other way": a second click, an old tab or two
    admins at once cannot give access back just after it was taken away."""
    require_admin(user)
    target = db.get(User, user_id)
    if target is None:
        raise HTTPException(404, _("There is no such user."))
    if target.is_admin:
        return _page(
            request,
            db,
            user,
            error=_("An administrator always opens the Prefect UI."),
            status_code=422,
        )
    if power not in ("0", "1"):
        raise HTTPException(422, _("Say whether the user is a power user: power=1 or power=0."))
    target.is_power_user = power == "1"
    audit(db, user.id, "user.power" if target.is_power_user else "user.unpower", target.username)
    flash(
        request,
        _("%(name)s may now open the Prefect UI.", name=target.username)
        if target.is_power_user
        else _("%(name)s may no longer open the Prefect UI.", name=target.username),
    )
    return RedirectResponse("/settings#users", status_code=303)
