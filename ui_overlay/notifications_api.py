"""/api/v1 email notifications: email settings and test email (admins), global defaults,
per-script preferences, and the history of what was sent, failed or held back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request
from scriptflow_prefect.ui_overlay import schemas
from scriptflow_prefect.ui_overlay.bodies import (
    ChannelSettingsBody,
    EmailSettingsBody,
    NotificationDefaultsBody,
    NotificationPrefsBody,
    TestMessageBody,
)
from scriptflow_prefect.ui_overlay.deps import ApiUser, DbDep, require_admin, visible_script
from scriptflow_prefect.ui_overlay.openapi import body, errors

from scriptflow_prefect.notifications import history as history_core
from scriptflow_prefect.notifications import service as core
from scriptflow_prefect.platform import i18n
from scriptflow_prefect.platform.i18n import _

api = APIRouter(tags=["notifications"])
EMAIL_FIELDS = {"host", "port", "username", "password", "security", "from_address"}
PREF_FIELDS = {"on_failure", "on_success", "recipients", "digest", "channels"}


def body_object(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise HTTPException(422, _("Send a JSON object."))
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HTTPException(422, _("Unknown fields: %(fields)s.", fields=", ".join(unknown)))
    return body


@api.get("/settings/email", response_model=schemas.EmailSettings, responses=errors(403))
async def get_email_settings(user: ApiUser, db: DbDep):
    require_admin(user)
    return core.email_settings(db)


@api.put(
    "/settings/email",
    response_model=schemas.EmailSettings,
    responses=errors(403, 503),
    openapi_extra=body(EmailSettingsBody),
)
async def put_email_settings(
    request: Request, user: ApiUser, db: DbDep, body: Annotated[Any, Body()]
):
    require_admin(user)
    return await core.save_email_settings(
        db, user, body_object(body, EMAIL_FIELDS), request.app.state.settings
    )


@api.post(
    "/settings/email/test",
    response_model=schemas.TestEmail,
    responses=errors(403, 409, 502, 503),
    openapi_extra=body(TestMessageBody),
)
async def test_email(request: Request, user: ApiUser, db: DbDep, body: Annotated[Any, Body()]):
    require_admin(user)
    to = body_object(body, {"to"}).get("to") or user.email
    settings = request.app.state.settings
    detail = await core.send_test_email(
        db, settings, to, language=i18n.get_locale(), zone=user.timezone or settings.timezone
    )
    return {"sent": True, "to": to, "detail": detail}


@api.get("/settings/channels", response_model=list[schemas.ChannelWithKind], responses=errors(403))
async def list_channels(user: ApiUser, db: DbDep):
    require_admin(user)
    return [{"kind": "email", **core.email_settings(db)}, *core.all_channel_settings(db)]


@api.get("/settings/channels/{kind}", response_model=schemas.ChannelSettings, responses=errors(403))
async def get_channel(kind: str, user: ApiUser, db: DbDep):
    require_admin(user)
    return core.channel_settings(db, kind)


@api.put(
    "/settings/channels/{kind}",
    response_model=schemas.ChannelSettings,
    responses=errors(403, 503),
    openapi_extra=body(ChannelSettingsBody),
)
async def put_channel(
    request: Request, kind: str, user: ApiUser, db: DbDep, body: Annotated[Any, Body()]
):
    """`{"url": "https://..."}` (write-only; "" or null switches the channel off). The email
    channel takes the fields of /settings/email."""
    require_admin(user)
    fields = EMAIL_FIELDS if kind == "email" else {"url"}
    return await core.save_channel_settings(
        db, user, kind, body_object(body, fields), request.app.state.settings
    )


@api.post(
    "/settings/channels/{kind}/test",
    response_model=schemas.ChannelTest,
    responses=errors(403, 409, 502, 503),
    openapi_extra=body(TestMessageBody),
)
async def test_channel(
    request: Request, kind: str, user: ApiUser, db: DbDep, body: Annotated[Any, Body()] = None
):
    require_admin(user)
    data = body_object(body if body is not None else {}, {"to"})
    if kind == "email":
        data.setdefault("to", user.email)
    settings = request.app.state.settings
    detail = await core.send_test(
        db,
        settings,
        kind,
        data,
        language=i18n.get_locale(),
        zone=user.timezone or settings.timezone,
    )
    return {"sent": True, "detail": detail}


@api.get(
    "/settings/notifications", response_model=schemas.NotificationDefaults, responses=errors(403)
)
async def get_defaults(user: ApiUser, db: DbDep):
    require_admin(user)
    return core.defaults(db)


@api.put(
    "/settings/notifications",
    response_model=schemas.NotificationDefaults,
    responses=errors(403, 503),
    openapi_extra=body(NotificationDefaultsBody),
)
async def put_defaults(request: Request, user: ApiUser, db: DbDep, body: Annotated[Any, Body()]):
    require_admin(user)
    return await core.save_defaults(
        db, user, body_object(body, set(core.DEFAULTS)), request.app.state.settings
    )


@api.get("/scripts/{script_id}/notifications", response_model=schemas.NotificationPrefs)
async def get_prefs(script_id: int, user: ApiUser, db: DbDep):
    return core.prefs_to_dict(db, visible_script(db, user, script_id))


@api.put(
    "/scripts/{script_id}/notifications",
    response_model=schemas.NotificationPrefs,
    responses=errors(409, 503),
    openapi_extra=body(NotificationPrefsBody),
)
async def put_prefs(
    request: Request, script_id: int, user: ApiUser, db: DbDep, body: Annotated[Any, Body()]
):
    script = visible_script(db, user, script_id)
    return await core.save_prefs(
        db, user, script, body_object(body, PREF_FIELDS), request.app.state.settings
    )


@api.get("/notifications", response_model=schemas.NotificationPage, responses=errors(404, 503))
async def list_notifications(
    user: ApiUser,
    db: DbDep,
    script_id: int | None = None,
    page: Annotated[int, Query(ge=1, le=200)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 25,
):
    if script_id is not None:
        visible_script(db, user, script_id, deleted=True)
    items, total = await history_core.history(
        db, user, script_id=script_id, page=page, per_page=per_page
    )
    return {"items": items, "total": total}
