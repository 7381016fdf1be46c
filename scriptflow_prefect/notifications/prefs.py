"""A script's notification preferences: when, to whom, through which channels. A script
without its own follows the global defaults (config.py), by email to its owner."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.notifications import config
from scriptflow_prefect.notifications.channels import CHANNELS, DEFAULT
from scriptflow_prefect.notifications.channels.email import mailer
from scriptflow_prefect.notifications.models import NotificationPref
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.scripts.models import Script

MAX_RECIPIENTS = 20


def effective_prefs(db: Session, script: Script) -> dict[str, Any]:
    row = db.get(NotificationPref, script.id)
    if row is None:
        d = config.defaults(db)
        return {
            "on_failure": d["on_failure"],
            "on_success": d["on_success"],
            "digest": d["digest"],
            "recipients": [],
            "channels": list(DEFAULT),
            "customised": False,
        }
    return {
        "on_failure": row.on_failure,
        "on_success": row.on_success,
        "digest": row.digest,
        "recipients": list(row.recipients or []),
        "channels": list(row.channels or DEFAULT),
        "customised": True,
    }


def recipients_of(db: Session, script: Script, prefs: dict[str, Any]) -> list[dict[str, Any]]:
    """Each recipient with the language and time zone of the user who has that address."""
    emails = prefs["recipients"] or ([script.owner.email] if script.owner.email else [])
    emails = [e for e in emails if mailer.is_email(e)]
    users = {
        u.email.lower(): u
        for u in db.scalars(select(User).where(User.email.is_not(None), User.is_active))
        if u.email
    }
    out = []
    for email in emails:
        u = users.get(email.lower())
        out.append(
            {
                "email": email,
                "language": u.language if u else None,
                "timezone": u.timezone if u else None,
            }
        )
    return out


def prefs_to_dict(db: Session, script: Script) -> dict[str, Any]:
    p = effective_prefs(db, script)
    return {
        "on_failure": p["on_failure"],
        "on_success": p["on_success"],
        "recipients": [r["email"] for r in recipients_of(db, script, p)],
        "digest": p["digest"],
        "channels": p["channels"],
        "default_recipients": not p["recipients"],
        "email_configured": CHANNELS["email"].is_configured(db),
        "channels_configured": [k for k, c in CHANNELS.items() if c.is_configured(db)],
    }


def _check_channels(
    db: Session, value: Any, problems: list[str], conflicts: list[str]
) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        problems.append(
            _("channels must be a list of one or more of %(kinds)s.", kinds=", ".join(CHANNELS))
        )
        return list(DEFAULT)
    clean = []
    for kind in value:
        if kind not in CHANNELS:
            problems.append(
                _(
                    "%(kind)s is not a channel; the channels are %(kinds)s.",
                    kind=kind[:40],
                    kinds=", ".join(CHANNELS),
                )
            )
        elif kind != "email" and not CHANNELS[kind].is_configured(db):
            conflicts.append(
                _(
                    "%(channel)s is not set up: an admin saves its address in Settings first.",
                    channel=CHANNELS[kind].label_text(),
                )
            )
        elif kind not in clean:
            clean.append(kind)
    return clean


def check_prefs(db: Session, script: Script, data: dict[str, Any]) -> dict[str, Any]:
    current = effective_prefs(db, script)
    new = {k: data.get(k, current[k]) for k in ("on_failure", "on_success", "digest")}
    problems = config.check_flags(new)
    # What the server lacks rather than what the request got wrong: 409, after the 422s.
    conflicts: list[str] = []
    channels = _check_channels(db, data.get("channels", current["channels"]), problems, conflicts)
    recipients = data.get("recipients", current["recipients"])
    clean: list[str] = []
    if recipients is None:
        recipients = []
    if not isinstance(recipients, list):
        problems.append(_("recipients must be a list of email addresses."))
        recipients = []
    if len(recipients) > MAX_RECIPIENTS:
        problems.append(_("At most %(n)s recipients.", n=MAX_RECIPIENTS))
    for value in recipients:
        if not mailer.is_email(value):
            problems.append(_("%(value)s is not an email address.", value=str(value)[:100]))
        elif value.lower() not in {c.lower() for c in clean}:
            clean.append(value)
    wants_mail = (
        "email" in channels and (new["on_failure"] is True or new["on_success"] is True)
    ) or new["digest"] in ("daily", "weekly")
    if not problems and wants_mail and not clean and not script.owner.email:
        conflicts.append(_("Add a recipient: the script's owner has no email address."))
    config.fail(problems)
    config.fail(conflicts, status=409)
    return {**new, "recipients": clean, "channels": channels}


def save_prefs_row(db: Session, script: Script, new: dict[str, Any]) -> None:
    row = db.get(NotificationPref, script.id)
    if row is None:
        row = NotificationPref(script_id=script.id, automation_ids=[])
        db.add(row)
    row.on_failure, row.on_success = new["on_failure"], new["on_success"]
    row.digest, row.recipients = new["digest"], new["recipients"]
    row.channels = None if new["channels"] == list(DEFAULT) else new["channels"]
    db.flush()
