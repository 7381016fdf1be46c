"""Notification settings kept in the overlay (app_settings rows) and the global defaults
that scripts without their own preferences follow."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.models import AppSetting
from scriptflow_prefect.scripts.service import ScriptError

DEFAULTS_KEY = "notification_defaults"
DIGESTS = ("none", "daily", "weekly")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULTS: dict[str, Any] = {
    "on_failure": True,
    "on_success": False,
    "digest": "none",
    "digest_time": "08:00",
    "digest_weekday": "mon",
    "throttle_minutes": 15,
}
TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def fail(problems: list[str], status: int = 422) -> None:
    """422 (or `status`) with every problem at once."""
    if problems:
        raise ScriptError(status, " ".join(problems))


def unavailable(exc: Exception) -> ScriptError:
    return ScriptError(
        503, _("Prefect is not reachable, nothing was changed: %(err)s", err=str(exc)[:200])
    )


def get(db: Session, key: str) -> dict[str, Any]:
    row = db.get(AppSetting, key)
    return dict(row.value) if row else {}


def put(db: Session, key: str, value: dict[str, Any]) -> None:
    row = db.get(AppSetting, key)
    if row is None:
        db.add(AppSetting(key=key, value=value))
    else:
        row.value = value
    db.flush()


def defaults(db: Session) -> dict[str, Any]:
    return {**DEFAULTS, **get(db, DEFAULTS_KEY)}


def check_flags(new: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("on_failure", "on_success"):
        if not isinstance(new[key], bool):
            problems.append(_("%(field)s must be true or false.", field=key))
    if new["digest"] not in DIGESTS:
        problems.append(_("digest must be none, daily or weekly."))
    return problems


def check_defaults(data: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    new = {k: data.get(k, current[k]) for k in DEFAULTS}
    problems = check_flags(new)
    if not isinstance(new["digest_time"], str) or not TIME_RE.match(new["digest_time"]):
        problems.append(_("digest_time must be a time of day as HH:MM, such as 08:00."))
    if new["digest_weekday"] not in WEEKDAYS:
        problems.append(_("digest_weekday must be one of mon, tue, wed, thu, fri, sat, sun."))
    minutes = new["throttle_minutes"]
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, int | float)
        or not 0 <= minutes <= 1440
    ):
        problems.append(_("throttle_minutes must be a number of minutes from 0 to 1440."))
    fail(problems)
    return new
