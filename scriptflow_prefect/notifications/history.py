"""The history of ScriptFlow's emails and the dashboard's alert, read back from Prefect.

Every outcome is a Prefect event (outcomes.py): `scriptflow.email.sent|failed|held`, plus
`prefect.automation.action.failed` when Prefect could not even run a ScriptFlow automation's
action (its block gone, for example). They are kept as long as Prefect keeps events
(PREFECT_SERVER_EVENTS_RETENTION_PERIOD). Messages still waiting in the outbox (outbox.py)
come first, as "pending", with their next try."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from babel.dates import format_timedelta
from sqlalchemy import select
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.notifications import events as outcomes
from scriptflow_prefect.notifications import outbox
from scriptflow_prefect.notifications import prefect as notifications_prefect
from scriptflow_prefect.notifications.automations import script_of
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.i18n import _, babel_locale, get_locale
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.service import ScriptError, visible_script_ids

HISTORY_DAYS = 30
ALERT_HOURS = 24


STATUS_OF_EVENT = {
    outcomes.SENT: "sent",
    outcomes.FAILED: "failed",
    outcomes.HELD: "held",
    outcomes.ACTION_FAILED: "failed",
}


def _item(e, names: dict[int, str], automations: dict[str, int]) -> dict[str, Any]:
    p = dict(e.payload or {})
    if e.event == outcomes.ACTION_FAILED:
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
    reason = p.get("reason")
    if p.get("gave_up"):
        reason = _(
            "Gave up after %(tries)s tries: %(error)s", tries=p.get("attempts"), error=reason
        )
    elif p.get("dropped"):
        reason = _("Dropped: too many messages were waiting to be sent.")
    late = p.get("late_seconds")
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
        "reason": reason,
        "gave_up": bool(p.get("gave_up")),
        "late_seconds": late,
        "late": late_text(late),
    }


def late_text(seconds: float | None) -> str | None:
    """ "delivered 2 hours late", in the reader's language."""
    if not seconds:
        return None
    delay = format_timedelta(
        timedelta(seconds=seconds), threshold=1.5, locale=babel_locale(get_locale())
    )
    return _("delivered %(delay)s late", delay=delay)


def _pending_item(e, names: dict[int, str]) -> dict[str, Any]:
    p = dict(e.payload or {})
    return {
        "id": f"outbox-{e.id}",
        "at": e.created_at,
        "status": "pending",
        "kind": p.get("kind"),
        "script_id": e.script_id,
        "script_name": names.get(e.script_id) or p.get("script_name") or e.resource_name,
        "recipient": e.recipient,
        "subject": p.get("subject"),
        "outcome": p.get("outcome"),
        "run_id": e.run_id,
        "attempts": e.attempts,
        "errors": list(e.errors),
        "held_back": p.get("held_back"),
        "reason": e.errors[-1] if e.errors else None,
        "next_attempt_at": e.next_attempt_at,
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
        ids, prefixes = [outcomes.script_resource(script_id)], None
    elif visible is None:
        ids, prefixes = None, ["scriptflow."]
    else:
        ids, prefixes = [outcomes.script_resource(i) for i in visible], None
    ours, total = ([], 0)
    if ids is None or ids:
        ours, total = await notifications_prefect.read_events(
            names=names, since=since, resource_ids=ids, resource_prefixes=prefixes, wanted=wanted
        )
    if script_id is None and visible is None:  # an admin: also automations since deleted
        failed, ftotal = await notifications_prefect.read_events(
            names=[outcomes.ACTION_FAILED],
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
                    names=[outcomes.ACTION_FAILED], since=since, resource_ids=aids, wanted=wanted
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
    visible = visible_script_ids(db, user)
    if script_id is not None:
        visible = [script_id]
    waiting = outbox.waiting(db, visible)
    try:
        found, total, automations = await _read(
            db,
            user,
            script_id=script_id,
            since=since,
            names=[outcomes.SENT, outcomes.FAILED, outcomes.HELD],
            wanted=page * per_page,
        )
    except platform_prefect.PrefectUnavailable as exc:
        raise ScriptError(503, _("Prefect is not reachable: %(err)s", err=str(exc)[:200])) from exc
    names = dict(db.execute(select(Script.id, Script.name)).all())
    items = [_pending_item(e, names) for e in waiting] + [
        _item(e, names, automations) for e in found
    ]
    return items[(page - 1) * per_page : page * per_page], total + len(waiting)


_alerts: dict[int, tuple[float, dict[str, Any] | None]] = {}
ALERT_CACHE_SECONDS = 10.0


async def alert(db: Session, user: User) -> dict[str, Any] | None:
    """Emails that could not be sent in the last day (for the dashboard), or None."""
    since = datetime.now(UTC) - timedelta(hours=ALERT_HOURS)
    try:
        found, total, automations = await _read(
            db, user, script_id=None, since=since, names=[outcomes.FAILED], wanted=1
        )
    except platform_prefect.PrefectUnavailable:
        return cached_alert(user.id)
    names = dict(db.execute(select(Script.id, Script.name)).all())
    result = {"count": total, "latest": _item(found[0], names, automations)} if found else None
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
