"""The history of ScriptFlow's emails and the dashboard's alert, read back from Prefect.

Every outcome is a Prefect event (deliveries.py): `scriptflow.email.sent|failed|held`, plus
`prefect.automation.action.failed` when Prefect could not even run a ScriptFlow automation's
action (its block gone, for example). They are kept as long as Prefect keeps events
(PREFECT_SERVER_EVENTS_RETENTION_PERIOD)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.notifications import prefect as notifications_prefect
from scriptflow_prefect.notifications.automations import script_of
from scriptflow_prefect.notifications.channels.email import deliveries
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.service import ScriptError, visible_script_ids

HISTORY_DAYS = 30
ALERT_HOURS = 24


STATUS_OF_EVENT = {
    deliveries.SENT: "sent",
    deliveries.FAILED: "failed",
    deliveries.HELD: "held",
    deliveries.ACTION_FAILED: "failed",
}


def _item(e, names: dict[int, str], automations: dict[str, int]) -> dict[str, Any]:
    p = dict(e.payload or {})
    if e.event == deliveries.ACTION_FAILED:
        aid = str(e.resource.id).removeprefix("prefect.automation.")
        sid = automations.get(aid)
        details = [str(v) for k, v in p.items() if k in ("notification_log", "template_error")]
        return {
            "id": str(e.id),
            "at": e.occurred,
            "status": "failed",
            "kind": "automation",
            "script_id": sid,
            "script_name": names.get(sid) if sid else e.resource.name,
            "recipient": None,
            "subject": None,
            "outcome": None,
            "run_id": None,
            "attempts": 0,
            "errors": details,
            "held_back": None,
            "reason": " — ".join([str(p.get("reason") or "")] + details).strip(" —"),
        }
    sid = p.get("script_id")
    return {
        "id": str(e.id),
        "at": e.occurred,
        "status": STATUS_OF_EVENT[e.event],
        "kind": p.get("kind"),
        "script_id": sid,
        "script_name": names.get(sid) or p.get("script_name") or (e.resource.name if sid else None),
        "recipient": p.get("recipient"),
        "subject": p.get("subject"),
        "outcome": p.get("outcome"),
        "run_id": p.get("run_id"),
        "attempts": p.get("attempts"),
        "errors": p.get("errors") or [],
        "held_back": p.get("held_back") or p.get("held_so_far"),
        "reason": p.get("reason"),
    }


async def _read(
    db: Session,
    user: User,
    *,
    script_id: int | None,
    since: datetime,
    names: list[str],
    wanted: int,
) -> tuple[list, int, dict[str, int]]:
    """Outcome events and action failures of what `user` may see, newest first."""
    visible = visible_script_ids(db, user)
    automations = {
        str(a.id): script_of(a) for a in await notifications_prefect.read_email_automations()
    }
    if script_id is not None:
        ids, prefixes = [deliveries.script_resource(script_id)], None
    elif visible is None:
        ids, prefixes = None, ["scriptflow."]
    else:
        ids, prefixes = [deliveries.script_resource(i) for i in visible], None
    ours, total = ([], 0)
    if ids is None or ids:
        ours, total = await notifications_prefect.read_events(
            names=names, since=since, resource_ids=ids, resource_prefixes=prefixes, wanted=wanted
        )
    if script_id is None and visible is None:  # an admin: also automations since deleted
        failed, ftotal = await notifications_prefect.read_events(
            names=[deliveries.ACTION_FAILED],
            since=since,
            wanted=wanted,
            resource_labels={"prefect.resource.name": "ScriptFlow ·*"},
        )
    else:
        mine = {script_id} if script_id is not None else set(visible or [])
        aids = [f"prefect.automation.{a}" for a, sid in automations.items() if sid in mine]
        failed, ftotal = (
            (
                await notifications_prefect.read_events(
                    names=[deliveries.ACTION_FAILED], since=since, resource_ids=aids, wanted=wanted
                )
            )
            if aids
            else ([], 0)
        )
    events = sorted(list(ours) + list(failed), key=lambda e: e.occurred, reverse=True)
    return events, total + ftotal, automations


async def history(
    db: Session, user: User, *, script_id: int | None = None, page: int = 1, per_page: int = 25
) -> tuple[list[dict[str, Any]], int]:
    since = datetime.now(UTC) - timedelta(days=HISTORY_DAYS)
    try:
        events, total, automations = await _read(
            db,
            user,
            script_id=script_id,
            since=since,
            names=[deliveries.SENT, deliveries.FAILED, deliveries.HELD],
            wanted=page * per_page,
        )
    except platform_prefect.PrefectUnavailable as exc:
        raise ScriptError(503, _("Prefect is not reachable: %(err)s", err=str(exc)[:200])) from exc
    chosen = events[(page - 1) * per_page : page * per_page]
    names = dict(db.execute(select(Script.id, Script.name)).all())
    return [_item(e, names, automations) for e in chosen], total


_alerts: dict[int, tuple[float, dict[str, Any] | None]] = {}
ALERT_CACHE_SECONDS = 10.0


async def alert(db: Session, user: User) -> dict[str, Any] | None:
    """Emails that could not be sent in the last day (for the dashboard), or None."""
    since = datetime.now(UTC) - timedelta(hours=ALERT_HOURS)
    try:
        events, total, automations = await _read(
            db, user, script_id=None, since=since, names=[deliveries.FAILED], wanted=1
        )
    except platform_prefect.PrefectUnavailable:
        return cached_alert(user.id)
    names = dict(db.execute(select(Script.id, Script.name)).all())
    result = {"count": total, "latest": _item(events[0], names, automations)} if events else None
    _alerts[user.id] = (asyncio.get_running_loop().time(), result)
    return result


def cached_alert(user_id: int) -> dict[str, Any] | None:
    return _alerts.get(user_id, (0.0, None))[1]


def alert_is_fresh(user_id: int) -> bool:
    at = _alerts.get(user_id, (None, None))[0]
    try:
        return at is not None and asyncio.get_running_loop().time() - at < ALERT_CACHE_SECONDS
    except RuntimeError:
        return False
