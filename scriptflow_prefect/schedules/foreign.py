"""Schedules as Prefect has them, whoever set them: read back into the simple form when they
are exactly what the form writes (spec.crons_of), described in words when they are not.

A power user may add a cron, an interval or an RRULE in Prefect, pause one schedule of two, or
give a schedule its own parameters. None of that fits the simple form; it is shown as what it
is, never rewritten into the nearest thing the form can say."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

from scriptflow_prefect.platform.i18n import _, ngettext
from scriptflow_prefect.schedules.spec import DAYS, ScheduleError, ScheduleSpec, crons_of

# Cron's number of each day name ScriptFlow writes (Sunday is 0, and 7 too).
_NUMBERS = {day: (i + 1) % 7 for i, day in enumerate(DAYS)}


def cron_key(schedule: Any) -> tuple[str, str] | None:
    """(cron, timezone) of a plain cron schedule; None for anything else, including a cron
    with day_or off (the form never writes one)."""
    if not isinstance(schedule, CronSchedule) or not schedule.day_or:
        return None
    return " ".join(schedule.cron.split()), schedule.timezone or "UTC"


def _number(token: str) -> int | None:
    """Cron's day-of-week number of a token: 0-7 (0 and 7 are Sunday) or a name (sun=0)."""
    if token.isdigit() and int(token) <= 7:
        return int(token)
    return _NUMBERS.get(token)


def _days(field: str) -> list[str] | None:
    """The days a day-of-week field names, in ScriptFlow's order; None if it is more than a
    list of days and ranges (steps, `L`, `#`)."""
    numbers: set[int] = set()
    for part in field.lower().split(","):
        low, _sep, high = part.partition("-")
        a, b = _number(low), _number(high) if high else _number(low)
        if a is None or b is None or a > b:
            return None
        numbers.update(n % 7 for n in range(a, b + 1))  # 0-7 is every day, 7 Sunday again
    return [day for day in DAYS if _NUMBERS[day] in numbers]


def _normal(cron: str) -> str:
    """A cron as ScriptFlow writes it: days of week as names (1-5 -> mon,...,fri; 0-7 -> *),
    minute and hour without leading zeros (06 -> 6)."""
    fields = cron.split()
    if len(fields) != 5:
        return cron
    for i in (0, 1):
        if fields[i].isdigit():
            fields[i] = str(int(fields[i]))
    if fields[4] != "*" and (days := _days(fields[4])):
        fields[4] = "*" if len(days) == len(DAYS) else ",".join(days)
    return " ".join(fields)


def _candidate(crons: list[str], timezone: str) -> dict[str, Any] | None:
    fields = crons[0].split()
    if len(fields) != 5 or not (fields[0].isdigit() and fields[1].isdigit()):
        return None
    minute, hour, dom, month, dow = fields
    base = {"time": f"{int(hour):02d}:{int(minute):02d}", "timezone": timezone}
    if dom == "*" and month == "*":
        if dow == "*":
            return {**base, "frequency": "daily"}
        days = _days(dow)
        return {**base, "frequency": "weekly", "days_of_week": days} if days else None
    if dow != "*":
        return None
    if dom == "L":
        return {**base, "frequency": "monthly", "day_of_month": "last"}
    # The month field is checked by the round trip (a day 29/30 pair lists the months).
    return {**base, "frequency": "monthly", "day_of_month": int(dom)} if dom.isdigit() else None


def spec_of_schedules(schedules: list[Any]) -> ScheduleSpec | None:
    """The simple form whose Prefect schedules are exactly these (cron strings, time zone,
    active flags alike), or None if the form cannot express them."""
    keys = [cron_key(s.schedule) for s in schedules]
    if not keys or any(k is None for k in keys):
        return None
    if len({k[1] for k in keys if k}) != 1 or len({s.active for s in schedules}) != 1:
        return None
    if any(getattr(s, "parameters", None) for s in schedules):
        return None  # its own parameters: it runs differently from the script's other runs
    crons = [_normal(k[0]) for k in keys if k]
    timezone = next(k[1] for k in keys if k)
    # A day 29/30 pair's "L in February" half says nothing of the day: read the other first.
    candidate = _candidate(sorted(crons, key=lambda c: c.split()[2:3] == ["L"]), timezone)
    if candidate is None:
        return None
    try:
        spec = ScheduleSpec.model_validate({**candidate, "active": schedules[0].active})
    except (ScheduleError, ValueError):
        return None
    return spec if sorted(crons_of(spec)) == sorted(crons) else None


def _interval(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return ngettext("every day", "every %(num)s days", seconds // 86400)
    if seconds % 3600 == 0:
        return ngettext("every hour", "every %(num)s hours", seconds // 3600)
    if seconds % 60 == 0:
        return ngettext("every minute", "every %(num)s minutes", seconds // 60)
    return ngettext("every second", "every %(num)s seconds", seconds)


def describe_one(schedule: Any) -> str:
    """One Prefect schedule in words a person can check against Prefect's UI."""
    s = schedule.schedule
    tz = getattr(s, "timezone", None) or "UTC"
    if isinstance(s, CronSchedule):
        text = _("cron “%(cron)s”, %(tz)s", cron=s.cron, tz=tz)
        if not s.day_or:
            text += " " + _("(day of month and day of week must both match)")
    elif isinstance(s, IntervalSchedule):
        anchor = s.anchor_date.isoformat(timespec="minutes")
        text = _(
            "%(every)s from %(anchor)s, %(tz)s", every=_interval(s.interval), anchor=anchor, tz=tz
        )
    elif isinstance(s, RRuleSchedule):
        text = _("rule “%(rrule)s”, %(tz)s", rrule=s.rrule, tz=tz)
    else:
        text = _("a schedule of a kind ScriptFlow does not know")
    if getattr(schedule, "parameters", None):
        text += " " + _("(with its own parameters)")
    if not schedule.active:
        text += " " + _("(paused)")
    return text


def as_dict(schedule: Any) -> dict[str, Any]:
    """One Prefect schedule for the API: kind, expression, time zone, on or off."""
    s = schedule.schedule
    if isinstance(s, CronSchedule):
        kind, value = "cron", s.cron
    elif isinstance(s, IntervalSchedule):
        kind, value = "interval", str(int(s.interval.total_seconds()))
    elif isinstance(s, RRuleSchedule):
        kind, value = "rrule", s.rrule
    else:
        kind, value = "other", ""
    return {
        "id": str(getattr(schedule, "id", "") or ""),
        "kind": kind,
        "value": value,
        "timezone": getattr(s, "timezone", None) or "UTC",
        "active": bool(schedule.active),
        "description": describe_one(schedule),
    }
