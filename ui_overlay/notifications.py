"""Notification pages: email settings and defaults (a section of Settings), a script's email
preferences (a section of its page), the history page and the dashboard's alert line."""

from __future__ import annotations

import asyncio
import math
import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from scriptflow_prefect.ui_overlay.deps import Csrf, DbDep, PageUser, require_admin, visible_script
from scriptflow_prefect.ui_overlay.templating import env, flash, render

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.notifications import history as history_core
from scriptflow_prefect.notifications import service as core
from scriptflow_prefect.notifications.channels import CHANNELS
from scriptflow_prefect.platform import i18n
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.service import ScriptError, visible_scripts_query

pages = APIRouter()
PER_PAGE = 25


# -- data for the sections other pages include ---------------------------------------------------
def _session(request: Request):
    return request.app.state.db.session()


def email_section(request: Request) -> dict:
    with _session(request) as db:
        return {
            "email": core.email_settings(db),
            "defaults": core.defaults(db),
            "weekdays": core.WEEKDAYS,
            "channels": core.all_channel_settings(db),
        }


def script_section(request: Request, script_id: int) -> dict:
    with _session(request) as db:
        script = db.get(Script, script_id)
        if script is None:
            return {}
        return {
            **core.prefs_to_dict(db, script),
            "channel_labels": {k: c.label_text() for k, c in CHANNELS.items()},
        }


def dashboard_alert(request: Request, user) -> dict | None:
    """The last known alert; a stale one is refreshed in the background (and the line is
    re-rendered by refresh.js), so the dashboard never waits for Prefect."""
    if user is None:
        return None
    if not history_core.alert_is_fresh(user.id):

        async def refresh():
            with _session(request) as db:
                me = db.get(User, user.id)
                if me is not None:
                    await history_core.alert(db, me)

        task = asyncio.get_running_loop().create_task(refresh())
        _background.add(task)
        task.add_done_callback(_background.discard)
    return history_core.cached_alert(user.id)


_background: set[asyncio.Task] = set()
env.globals.update(
    email_section=email_section, script_notifications=script_section, email_alert=dashboard_alert
)


def _back(request: Request, to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303)


def _flag(value: str) -> bool:
    return value in ("1", "on", "true", "yes")


# -- Settings: email server, test email, defaults (admins) ---------------------------------------
@pages.post("/settings/email", dependencies=[Csrf])
async def save_email(
    request: Request,
    user: PageUser,
    db: DbDep,
    host: Annotated[str, Form()] = "",
    port: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    clear_password: Annotated[str, Form()] = "",
    security: Annotated[str, Form()] = "starttls",
    from_address: Annotated[str, Form()] = "",
):
    require_admin(user)
    data = {
        "host": host.strip(),
        "username": username.strip(),
        "security": security,
        "from_address": from_address.strip(),
        "port": int(port) if port.strip().isdigit() else (port.strip() or None),
    }
    if password or clear_password:
        data["password"] = "" if clear_password else password
    try:
        await core.save_email_settings(db, user, data, request.app.state.settings)
    except ScriptError as exc:
        db.rollback()
        flash(request, str(exc), "error")
        return _back(request, "/settings#email")
    flash(
        request,
        _("Email settings saved.")
        if data["host"]
        else _("Email settings saved: ScriptFlow sends no email."),
    )
    return _back(request, "/settings#email")


@pages.post("/settings/email/test", dependencies=[Csrf])
async def test_email(request: Request, user: PageUser, db: DbDep, to: Annotated[str, Form()] = ""):
    require_admin(user)
    settings = request.app.state.settings
    try:
        message = await core.send_test_email(
            db,
            settings,
            to.strip() or user.email,
            language=i18n.get_locale(),
            zone=user.timezone or settings.timezone,
        )
    except ScriptError as exc:
        flash(request, str(exc), "error")
        return _back(request, "/settings#email-test")
    flash(request, message)
    return _back(request, "/settings#email-test")


@pages.post("/settings/notifications", dependencies=[Csrf])
async def save_defaults(
    request: Request,
    user: PageUser,
    db: DbDep,
    on_failure: Annotated[str, Form()] = "",
    on_success: Annotated[str, Form()] = "",
    digest: Annotated[str, Form()] = "none",
    digest_time: Annotated[str, Form()] = "08:00",
    digest_weekday: Annotated[str, Form()] = "mon",
    throttle_minutes: Annotated[str, Form()] = "15",
):
    require_admin(user)
    try:
        minutes: float | str = float(throttle_minutes.replace(",", "."))
    except ValueError:
        minutes = throttle_minutes
    data = {
        "on_failure": _flag(on_failure),
        "on_success": _flag(on_success),
        "digest": digest,
        "digest_time": digest_time.strip(),
        "digest_weekday": digest_weekday,
        "throttle_minutes": minutes,
    }
    try:
        await core.save_defaults(db, user, data, request.app.state.settings)
    except ScriptError as exc:
        db.rollback()
        flash(request, str(exc), "error")
        return _back(request, "/settings#notification-defaults")
    flash(request, _("Notification defaults saved."))
    return _back(request, "/settings#notification-defaults")


@pages.post("/settings/channels/{kind}", dependencies=[Csrf])
async def save_channel(
    request: Request,
    kind: str,
    user: PageUser,
    db: DbDep,
    url: Annotated[str, Form()] = "",
    clear: Annotated[str, Form()] = "",
):
    require_admin(user)
    core.channel_settings(db, kind)  # 404 for a kind that is not a channel
    back = f"/settings#channel-{kind}"
    if not url.strip() and not clear:
        flash(request, _("Give the address, or tick the box to switch the channel off."), "error")
        return _back(request, back)
    try:
        saved = await core.save_channel_settings(
            db, user, kind, {"url": "" if clear else url.strip()}, request.app.state.settings
        )
    except ScriptError as exc:
        db.rollback()
        flash(request, str(exc), "error")
        return _back(request, back)
    label = CHANNELS[kind].label_text()
    flash(
        request,
        _("%(channel)s saved.", channel=label)
        if saved["configured"]
        else _("%(channel)s switched off.", channel=label),
    )
    return _back(request, back)


@pages.post("/settings/channels/{kind}/test", dependencies=[Csrf])
async def test_channel(request: Request, kind: str, user: PageUser, db: DbDep):
    require_admin(user)
    core.channel_settings(db, kind)  # 404 for a kind that is not a channel
    settings = request.app.state.settings
    try:
        message = await core.send_test(
            db,
            settings,
            kind,
            {},
            language=i18n.get_locale(),
            zone=user.timezone or settings.timezone,
        )
    except ScriptError as exc:
        flash(request, str(exc), "error")
        return _back(request, f"/settings#channel-{kind}")
    flash(request, message)
    return _back(request, f"/settings#channel-{kind}")


# -- a script's preferences ----------------------------------------------------------------------
@pages.post("/scripts/{script_id}/notifications", dependencies=[Csrf])
async def save_script_prefs(
    request: Request,
    script_id: int,
    user: PageUser,
    db: DbDep,
    on_failure: Annotated[str, Form()] = "",
    on_success: Annotated[str, Form()] = "",
    recipients: Annotated[str, Form()] = "",
    digest: Annotated[str, Form()] = "none",
):
    script = visible_script(db, user, script_id)
    form = await request.form()
    data = {
        "on_failure": _flag(on_failure),
        "on_success": _flag(on_success),
        "digest": digest,
        "recipients": [r for r in re.split(r"[\s,;]+", recipients) if r],
        "channels": [str(c) for c in form.getlist("channels")] or ["email"],
    }
    try:
        await core.save_prefs(db, user, script, data, request.app.state.settings)
    except ScriptError as exc:
        db.rollback()
        flash(request, str(exc), "error")
        return _back(request, f"/scripts/{script_id}#notifications")
    flash(request, _("Notifications of %(name)s saved.", name=script.name))
    return _back(request, f"/scripts/{script_id}#notifications")


# -- history and the dashboard's alert line ------------------------------------------------------
@pages.get("/notifications")
async def history_page(
    request: Request, user: PageUser, db: DbDep, script_id: str = "", page: int = 1
):
    sid = int(script_id) if script_id.isdigit() else None
    if sid is not None:
        visible_script(db, user, sid, deleted=True)
    page = min(max(page, 1), 200)
    items, total = await history_core.history(db, user, script_id=sid, page=page, per_page=PER_PAGE)
    scripts = list(db.scalars(visible_scripts_query(user).order_by(Script.name)))
    return render(
        request,
        "notifications/history.html",
        {
            "items": items,
            "total": total,
            "page": page,
            "pages": max(1, math.ceil(total / PER_PAGE)),
            "scripts": scripts,
            "script_id": sid,
        },
    )


@pages.get("/notifications/alert")
async def alert_line(request: Request, user: PageUser, db: DbDep):
    """The dashboard's alert line alone (refresh.js re-renders it every few seconds)."""
    alert = (
        history_core.cached_alert(user.id)
        if history_core.alert_is_fresh(user.id)
        else await history_core.alert(db, user)
    )
    return render(request, "notifications/_alert.html", {"alert": alert})
