"""ScriptFlow's simple schedule form <-> the Prefect schedules a deployment runs.

Every form becomes one or more Prefect ``CronSchedule``s, never ``RRuleSchedule``:
measured on Prefect 3.9, the server's RRULE generator moves a wall time that falls in
a DST gap one hour *earlier* (02:30 -> 01:30), while its cron generator moves it
forward by the gap (02:30 -> 03:30, Lord Howe 02:15 -> 02:45) and runs an ambiguous
time once, at its first occurrence, which is what ScriptFlow promises.

Cron has no "day D or the month's last day", so days 29 and 30 use two schedules split
by month (D in every month but February, ``L`` in February). The month sets are
disjoint, so two schedules can never produce runs at the same instant (Prefect's
idempotency key includes the schedule id, so it would not merge them).
Day 31 or later is always the last day, so it is the single cron ``L``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, available_timezones

from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from scriptflow_prefect.platform.i18n import N_

__all__ = [
    "ScheduleError",
    "ScheduleSpec",
    "annotate",
    "crons_of",
    "next_runs",
    "parse_spec",
    "schedule_dates",
    "to_prefect_schedules",
]

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FREQUENCIES = ("daily", "weekly", "monthly")
_TIME_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


class ScheduleError(ValueError):
    """An invalid schedule, with a message a person can act on.

    ``msgid`` is the English template (``%(name)s`` placeholders) and ``params`` its
    values, so the UI can look the template up in its catalog and translate it.
    """

    def __init__(self, field: str | None, msgid: str, **params: Any) -> None:
        self.field = field
        self.msgid = msgid
        self.params = params
        super().__init__(msgid % params if params else msgid)


def _show(value: Any) -> str:
    # How the offending value appears in a message: as the user would have typed it in JSON.
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@cache
def _timezones() -> frozenset[str]:
    # The same list Prefect validates schedule time zones against.
    return frozenset(available_timezones())


_MISSING = {
    "frequency": N_('frequency is missing: it must be "daily", "weekly" or "monthly".'),
    "time": N_(
        "time is missing: give the time of day as HH:MM in 24-hour form, for example 08:15."
    ),
    "timezone": N_(
        "timezone is missing: give an IANA time zone name such as Europe/Lisbon or UTC."
    ),
}


class ScheduleSpec(BaseModel):
    """ScriptFlow's schedule form; constructing one validates it completely."""

    model_config = ConfigDict(extra="ignore")

    frequency: Literal["daily", "weekly", "monthly"]
    time: str
    timezone: str
    days_of_week: list[Day] = []
    day_of_month: int | Literal["last"] | None = None
    active: bool = True

    # "before" validators do their own type checks: pydantic's lax coercion would
    # otherwise accept "5" as day 5 or 1 as true, and its messages are not for end users.
    @field_validator("frequency", mode="before")
    @classmethod
    def _frequency(cls, v: Any) -> Any:
        if v not in FREQUENCIES:
            raise ScheduleError(
                "frequency",
                N_('frequency must be "daily", "weekly" or "monthly" (got %(value)s).'),
                value=_show(v),
            )
        return v

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        if not isinstance(v, str) or not _TIME_RE.fullmatch(v):
            raise ScheduleError(
                "time",
                N_(
                    "time %(value)s is not a valid time of day: use HH:MM in 24-hour form,"
                    " from 00:00 to 23:59, for example 08:15."
                ),
                value=_show(v),
            )
        return v

    @field_validator("timezone", mode="before")
    @classmethod
    def _timezone(cls, v: Any) -> Any:
        if not isinstance(v, str) or v not in _timezones():
            raise ScheduleError(
                "timezone",
                N_(
                    "timezone %(value)s is not a known IANA time zone name: use a name such as"
                    " Europe/Lisbon, America/New_York or UTC."
                ),
                value=_show(v),
            )
        return v

    @field_validator("days_of_week", mode="before")
    @classmethod
    def _days(cls, v: Any) -> Any:
        if v is None:
            return []
        if not isinstance(v, list | tuple):
            raise ScheduleError(
                "days_of_week",
                N_('days_of_week must be a list of days such as ["mon", "fri"] (got %(value)s).'),
                value=_show(v),
            )
        for day in v:
            if day not in DAYS:
                raise ScheduleError(
                    "days_of_week",
                    N_(
                        "days_of_week contains %(value)s, which is not a day:"
                        " use mon, tue, wed, thu, fri, sat or sun."
                    ),
                    value=_show(day),
                )
        # Calendar order without repeats, so equal day sets give equal schedules.
        return [day for day in DAYS if day in v]

    @field_validator("day_of_month", mode="before")
    @classmethod
    def _day_of_month(cls, v: Any) -> Any:
        if v is None or v == "last":
            return v
        if isinstance(v, float) and v.is_integer():  # JSON's 5.0 is the whole number 5
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 31:
            raise ScheduleError(
                "day_of_month",
                N_('day_of_month must be a whole number from 1 to 31, or "last" (got %(value)s).'),
                value=_show(v),
            )
        return v

    @field_validator("active", mode="before")
    @classmethod
    def _active(cls, v: Any) -> Any:
        if not isinstance(v, bool):
            raise ScheduleError(
                "active", N_("active must be true or false (got %(value)s)."), value=_show(v)
            )
        return v

    @model_validator(mode="after")
    def _fits_frequency(self) -> ScheduleSpec:
        if self.frequency == "weekly" and not self.days_of_week:
            raise ScheduleError(
                "days_of_week",
                N_(
                    'A weekly schedule needs at least one day in days_of_week, for example ["mon"].'
                ),
            )
        if self.frequency != "weekly" and self.days_of_week:
            raise ScheduleError(
                "days_of_week",
                N_(
                    "days_of_week only applies to weekly schedules: remove it,"
                    ' or set frequency to "weekly".'
                ),
            )
        if self.frequency == "monthly" and self.day_of_month is None:
            raise ScheduleError(
                "day_of_month",
                N_('A monthly schedule needs day_of_month: a day from 1 to 31, or "last".'),
            )
        if self.frequency != "monthly" and self.day_of_month is not None:
            raise ScheduleError(
                "day_of_month",
                N_(
                    "day_of_month only applies to monthly schedules: remove it,"
                    ' or set frequency to "monthly".'
                ),
            )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def wall_time(self) -> dt.time:
        hour, minute = self.time.split(":")
        return dt.time(int(hour), int(minute))


def parse_spec(data: Any) -> ScheduleSpec:
    """Validate the schedule form (e.g. a request body); unknown keys are ignored."""
    if not isinstance(data, Mapping):
        raise ScheduleError(
            None,
            N_("A schedule must be an object with frequency, time and timezone (got %(value)s)."),
            value=_show(data),
        )
    try:
        return ScheduleSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise _schedule_error(exc) from None


def _schedule_error(exc: ValidationError) -> ScheduleError:
    # Pydantic reports every field; one actionable reason is enough, in field order.
    errors = exc.errors()
    for error in errors:
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ScheduleError):
            return cause
        field = str(error["loc"][0]) if error["loc"] else None
        if error["type"] == "missing" and field in _MISSING:
            return ScheduleError(field, _MISSING[field])
    field = str(errors[0]["loc"][0]) if errors[0]["loc"] else None
    return ScheduleError(
        field, N_("The schedule is not valid: %(detail)s"), detail=errors[0]["msg"]
    )


def crons_of(spec: ScheduleSpec) -> list[str]:
    at = f"{spec.wall_time.minute} {spec.wall_time.hour}"
    if spec.frequency == "daily":
        return [f"{at} * * *"]
    if spec.frequency == "weekly":
        days = "*" if len(spec.days_of_week) == 7 else ",".join(spec.days_of_week)
        return [f"{at} * * {days}"]
    day = spec.day_of_month
    if day == "last" or day == 31:
        return [f"{at} L * *"]
    assert isinstance(day, int)
    if day <= 28:
        return [f"{at} {day} * *"]
    # Only February is shorter than 29 or 30 days: disjoint month sets, so no double runs.
    return [f"{at} {day} 1,3-12 *", f"{at} L 2 *"]


def to_prefect_schedules(spec: ScheduleSpec) -> list[DeploymentScheduleCreate]:
    """The deployment's schedules for ``spec``; see the module docstring for why cron."""
    return [
        DeploymentScheduleCreate(
            schedule=CronSchedule(cron=cron, timezone=spec.timezone), active=spec.active
        )
        for cron in crons_of(spec)
    ]


def schedule_dates(schedule: Any, after: datetime, n: int) -> list[datetime]:
    """The first `n` dates strictly after `after` of one Prefect schedule (cron, interval or
    rrule, as the client has it), from the server's own generator."""
    # The one place this module imports prefect.server: the preview must come from the
    # date generator the server's scheduler service runs, fed the schedule exactly as the
    # API would receive it (JSON), or the preview could drift from what actually runs.
    # `_get_dates_generator` is what the scheduler calls (get_dates is async and sorts it).
    from prefect.server.schemas.schedules import SCHEDULE_TYPES
    from pydantic import TypeAdapter

    server_schedule = TypeAdapter(SCHEDULE_TYPES).validate_python(schedule.model_dump(mode="json"))
    # Prefect's start is inclusive; ScriptFlow's `after` is not.
    start = after + timedelta(microseconds=1)
    return list(server_schedule._get_dates_generator(n=n, start=start))


def next_runs(spec: ScheduleSpec, after: datetime | None = None, n: int = 5) -> list[datetime]:
    """The next ``n`` run times strictly after ``after`` (default now), in spec.timezone.

    A naive ``after`` is read as a wall time in spec.timezone.
    """
    if n <= 0:
        return []
    tz = spec.tz
    if after is None:
        after = datetime.now(tz)
    elif after.tzinfo is None:
        after = after.replace(tzinfo=tz)
    instants: set[float] = set()
    for schedule in to_prefect_schedules(spec):
        # Each schedule's first n dates contain the first n of the union.
        instants.update(d.timestamp() for d in schedule_dates(schedule.schedule, after, n))
    # Plain datetimes in a ZoneInfo, not Prefect's pendulum subclass in its own tz type.
    return [datetime.fromtimestamp(ts, tz) for ts in sorted(instants)[:n]]


def annotate(spec: ScheduleSpec, runs: list[datetime]) -> list[dict[str, Any]]:
    """Preview rows: why a run is not at the typed time or day.

    ``dst_gap``: the typed time does not exist that day, so it runs later by the gap.
    ``short_month``: the month has no such day, so it runs on the last day.
    If both apply (rare), ``dst_gap`` wins: the time is the more surprising change.
    """
    tz = spec.tz
    rows: list[dict[str, Any]] = []
    for run in runs:
        local = run.astimezone(tz)
        note: str | None = None
        if (local.hour, local.minute) != (spec.wall_time.hour, spec.wall_time.minute):
            note = "dst_gap"
        elif isinstance(spec.day_of_month, int) and local.day < spec.day_of_month:
            note = "short_month"
        rows.append({"at": local.isoformat(), "note": note})
    return rows
