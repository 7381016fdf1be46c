"""ScriptFlow schedule form -> Prefect schedules, previews, words and notes."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import run_async

from scriptflow_prefect.schedules import spec as schedules
from scriptflow_prefect.schedules.spec import (
    ScheduleError,
    ScheduleSpec,
    annotate,
    next_runs,
    parse_spec,
    to_prefect_schedules,
)
from scriptflow_prefect.schedules.words import describe


def spec(frequency: str = "daily", time: str = "09:00", timezone: str = "UTC", **kw: Any):
    return parse_spec({"frequency": frequency, "time": time, "timezone": timezone, **kw})


def local(tz: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz), fold=fold)


def runs_on(s: ScheduleSpec, day: date) -> list[datetime]:
    start = datetime.combine(day - timedelta(days=1), datetime.min.time(), s.tz)
    return [r for r in next_runs(s, after=start, n=4) if r.date() == day]


def instants(runs: list[datetime]) -> list[float]:
    # Aware datetimes in one zone compare by wall time, ignoring fold (PEP 495), so
    # compare instants wherever the two occurrences of a fall-back time matter.
    return [r.timestamp() for r in runs]


def year_of_runs(s: ScheduleSpec, year: int, n: int = 400) -> list[datetime]:
    runs = next_runs(s, after=datetime(year - 1, 12, 31, 23, 59), n=n)
    return [r for r in runs if r.year == year]


# --- DST ----------------------------------------------------------------------------------

# (zone, spring-forward day, fall-back day); the southern hemisphere moves the other way.
DST_ZONES = [
    ("Europe/Berlin", date(2027, 3, 28), date(2027, 10, 31), "02:30"),
    ("America/New_York", date(2027, 3, 14), date(2027, 11, 7), "01:30"),
    ("Australia/Sydney", date(2027, 10, 3), date(2027, 4, 4), "02:30"),
]


@pytest.mark.parametrize(("tz", "gap_day"), [(z, g) for z, g, _, _ in DST_ZONES])
def test_it_moves_a_dst_gap_time_forward(tz: str, gap_day: date) -> None:
    s = spec(time="02:30", timezone=tz)
    runs = runs_on(s, gap_day)
    assert runs == [local(tz, gap_day.year, gap_day.month, gap_day.day, 3, 30)]
    assert runs[0].strftime("%H:%M") == "03:30"
    # The days around it keep the typed time.
    for other in (gap_day - timedelta(days=1), gap_day + timedelta(days=1)):
        assert [r.strftime("%H:%M") for r in runs_on(s, other)] == ["02:30"]


def test_it_moves_a_dst_gap_time_forward_by_a_half_hour_gap() -> None:
    # Lord Howe Island springs forward 02:00 -> 02:30.
    s = spec(time="02:15", timezone="Australia/Lord_Howe")
    assert runs_on(s, date(2027, 10, 3)) == [local("Australia/Lord_Howe", 2027, 10, 3, 2, 45)]


def test_it_moves_the_first_minute_of_the_gap_to_the_end_of_it() -> None:
    s = spec(time="02:00", timezone="Europe/Berlin")
    assert runs_on(s, date(2027, 3, 28)) == [local("Europe/Berlin", 2027, 3, 28, 3, 0)]


@pytest.mark.parametrize(("tz", "back_day", "time"), [(z, b, t) for z, _, b, t in DST_ZONES])
def test_it_runs_an_ambiguous_time_once_at_its_first_occurrence(
    tz: str, back_day: date, time: str
) -> None:
    s = spec(time=time, timezone=tz)
    hour, minute = map(int, time.split(":"))
    first = local(tz, back_day.year, back_day.month, back_day.day, hour, minute, fold=0)
    second = local(tz, back_day.year, back_day.month, back_day.day, hour, minute, fold=1)
    assert first.utcoffset() != second.utcoffset()  # really ambiguous
    runs = runs_on(s, back_day)
    assert runs == [first]
    assert runs[0].utcoffset() == first.utcoffset()
    # Asked between the two occurrences, the preview must not offer the second one.
    between = first + timedelta(minutes=30)
    assert next_runs(s, after=between, n=1)[0].date() == back_day + timedelta(days=1)


@pytest.mark.parametrize(("tz", "gap_day", "back_day"), [(z, g, b) for z, g, b, _ in DST_ZONES])
def test_daily_keeps_its_wall_time_across_dst(tz: str, gap_day: date, back_day: date) -> None:
    s = spec(time="09:00", timezone=tz)
    for day in (gap_day, back_day):
        start = datetime.combine(day - timedelta(days=3), datetime.min.time(), s.tz)
        runs = next_runs(s, after=start, n=7)
        assert [r.strftime("%H:%M") for r in runs] == ["09:00"] * 7
        assert [r.date() for r in runs] == [day + timedelta(days=i - 3) for i in range(7)]
        assert len({r.utcoffset() for r in runs}) == 2


@pytest.mark.parametrize(("tz", "gap_day", "back_day"), [(z, g, b) for z, g, b, _ in DST_ZONES])
def test_the_preview_does_not_depend_on_when_it_is_asked(
    tz: str, gap_day: date, back_day: date
) -> None:
    # The scheduler refills from "now" at any moment; a start inside the gap or the
    # repeated hour must neither lose nor repeat a run.
    for time in ("02:30", "01:30"):
        s = spec(time=time, timezone=tz)
        for day in (gap_day, back_day):
            start = datetime.combine(day - timedelta(days=1), datetime.min.time(), s.tz)
            canonical = next_runs(s, after=start, n=6)
            after = start.astimezone(UTC)
            while after < start + timedelta(days=2):
                expected = [r for r in canonical if r > after][:2]
                assert instants(next_runs(s, after=after, n=2)) == instants(expected), after
                after += timedelta(minutes=20)


def test_weekly_moves_a_dst_gap_time_forward() -> None:
    s = spec("weekly", "02:30", "Europe/Berlin", days_of_week=["sun"])
    runs = next_runs(s, after=datetime(2027, 3, 20), n=3)
    assert [r.isoformat() for r in runs] == [
        "2027-03-21T02:30:00+01:00",
        "2027-03-28T03:30:00+02:00",
        "2027-04-04T02:30:00+02:00",
    ]


# --- month ends and leap years -------------------------------------------------------------


@pytest.mark.parametrize("day", [29, 30, 31, "last"])
def test_late_days_run_on_feb_29_in_a_leap_year(day: int | str) -> None:
    s = spec("monthly", "06:00", "Europe/Lisbon", day_of_month=day)
    runs = next_runs(s, after=datetime(2028, 2, 1), n=1)
    assert runs == [local("Europe/Lisbon", 2028, 2, 29, 6, 0)]


@pytest.mark.parametrize("day", [29, 30, 31, "last"])
def test_late_days_run_on_feb_28_in_a_common_year(day: int | str) -> None:
    s = spec("monthly", "06:00", "Europe/Lisbon", day_of_month=day)
    runs = next_runs(s, after=datetime(2027, 2, 1), n=2)
    assert runs[0] == local("Europe/Lisbon", 2027, 2, 28, 6, 0)
    assert runs[1].month == 3


def test_day_28_is_not_clamped() -> None:
    s = spec("monthly", "06:00", "UTC", day_of_month=28)
    assert [r.day for r in year_of_runs(s, 2028)] == [28] * 12


def test_day_31_runs_on_every_months_last_day_for_a_whole_year() -> None:
    s = spec("monthly", "23:59", "America/New_York", day_of_month=31)
    runs = year_of_runs(s, 2027)
    assert [(r.month, r.day) for r in runs] == [
        (1, 31), (2, 28), (3, 31), (4, 30), (5, 31), (6, 30),
        (7, 31), (8, 31), (9, 30), (10, 31), (11, 30), (12, 31),
    ]  # fmt: skip
    assert {r.strftime("%H:%M") for r in runs} == {"23:59"}


@pytest.mark.parametrize("day", [29, 30, 31, "last"])
def test_each_month_runs_exactly_once_over_two_years(day: int | str) -> None:
    s = spec("monthly", "00:00", "Australia/Sydney", day_of_month=day)
    runs = next_runs(s, after=datetime(2027, 12, 31, 12), n=24)
    assert [(r.year, r.month) for r in runs] == [(2028 + i // 12, i % 12 + 1) for i in range(24)]
    assert runs[1].day == 29 and runs[13].day == 28  # Feb 2028, Feb 2029
    if isinstance(day, int) and day < 31:
        assert {r.day for r in runs if r.month != 2} == {day}


def test_several_schedules_never_share_an_instant() -> None:
    # Prefect keys runs by schedule id, so two schedules at one instant would be two runs.
    for day in (29, 30):
        s = spec("monthly", "12:00", "UTC", day_of_month=day)
        per_schedule = [
            schedules.schedule_dates(p.schedule, datetime(2027, 1, 1, tzinfo=UTC), 60)
            for p in to_prefect_schedules(s)
        ]
        assert len(per_schedule) == 2
        instants = [d.timestamp() for dates in per_schedule for d in dates]
        assert len(instants) == len(set(instants))


# --- weekly ---------------------------------------------------------------------------------


def test_weekly_runs_on_a_single_day() -> None:
    s = spec("weekly", "07:00", "UTC", days_of_week=["wed"])
    runs = next_runs(s, after=datetime(2027, 1, 1), n=4)
    assert [r.strftime("%a %d") for r in runs] == ["Wed 06", "Wed 13", "Wed 20", "Wed 27"]


def test_weekly_runs_on_each_chosen_day() -> None:
    s = spec("weekly", "08:15", "Europe/Lisbon", days_of_week=["fri", "mon"])
    runs = next_runs(s, after=datetime(2027, 1, 1), n=4)
    assert [r.strftime("%a %d") for r in runs] == ["Fri 01", "Mon 04", "Fri 08", "Mon 11"]


def test_weekly_on_all_seven_days_is_daily() -> None:
    every = spec("weekly", "07:00", "Europe/Berlin", days_of_week=list(reversed(schedules.DAYS)))
    daily = spec("daily", "07:00", "Europe/Berlin")
    after = datetime(2027, 3, 25)
    assert next_runs(every, after=after, n=10) == next_runs(daily, after=after, n=10)
    assert describe(every) == describe(daily)


def test_weekly_days_are_kept_in_calendar_order_without_repeats() -> None:
    s = spec("weekly", "07:00", "UTC", days_of_week=["sun", "mon", "sun"])
    assert s.days_of_week == ["mon", "sun"]
    assert describe(s) == "Mondays and Sundays at 07:00, UTC"


# --- next_runs contract ---------------------------------------------------------------------


def test_next_runs_are_strictly_after_and_in_the_schedule_timezone() -> None:
    s = spec("daily", "09:00", "Europe/Lisbon")
    at_run = local("Europe/Lisbon", 2027, 6, 1, 9, 0)
    runs = next_runs(s, after=at_run, n=5)
    assert runs[0] == at_run + timedelta(days=1)
    assert len(runs) == 5
    assert all(isinstance(r.tzinfo, ZoneInfo) and r.tzinfo.key == "Europe/Lisbon" for r in runs)
    assert type(runs[0]) is datetime


def test_next_runs_read_a_naive_after_in_the_schedule_timezone() -> None:
    s = spec("daily", "09:00", "America/New_York")
    assert next_runs(s, after=datetime(2027, 6, 1, 8, 59), n=1)[0].day == 1
    assert next_runs(s, after=datetime(2027, 6, 1, 9, 0), n=1)[0].day == 2


def test_next_runs_default_to_now() -> None:
    s = spec("daily", "09:00", "UTC")
    before = datetime.now(UTC)
    runs = next_runs(s)
    assert len(runs) == 5 and runs[0] > before
    assert next_runs(s, n=0) == []


def test_inactive_schedules_still_preview_and_are_created_inactive() -> None:
    s = spec("monthly", "09:00", "UTC", day_of_month=30, active=False)
    assert [p.active for p in to_prefect_schedules(s)] == [False, False]
    assert len(next_runs(s, after=datetime(2027, 1, 1))) == 5


def test_every_form_is_a_prefect_cron_schedule() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    cases = {
        ("daily", None): ["30 2 * * *"],
        ("weekly", None): ["30 2 * * mon,fri"],
        ("monthly", 15): ["30 2 15 * *"],
        ("monthly", 29): ["30 2 29 1,3-12 *", "30 2 L 2 *"],
        ("monthly", 30): ["30 2 30 1,3-12 *", "30 2 L 2 *"],
        ("monthly", 31): ["30 2 L * *"],
        ("monthly", "last"): ["30 2 L * *"],
    }
    for (frequency, day), crons in cases.items():
        kw: dict[str, Any] = {"day_of_month": day} if day else {}
        if frequency == "weekly":
            kw["days_of_week"] = ["mon", "fri"]
        made = to_prefect_schedules(spec(frequency, "02:30", "Asia/Tokyo", **kw))
        assert all(isinstance(p.schedule, CronSchedule) for p in made)
        assert [p.schedule.cron for p in made] == crons
        assert {p.schedule.timezone for p in made} == {"Asia/Tokyo"}


def test_only_the_preview_helper_imports_prefect_server() -> None:
    tree = ast.parse(inspect.getsource(schedules))
    server_imports = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and "prefect.server" in ast.unparse(node)
    ]
    helper = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "schedule_dates"
    )
    inside = {id(node) for node in ast.walk(helper)}
    assert server_imports and all(id(node) in inside for node in server_imports)


# --- validation -----------------------------------------------------------------------------

BASE = {"frequency": "daily", "time": "09:00", "timezone": "UTC"}
WEEKLY = {**BASE, "frequency": "weekly", "days_of_week": ["mon"]}
MONTHLY = {**BASE, "frequency": "monthly", "day_of_month": 1}


def without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


INVALID = [
    # (data, field, words the message must contain)
    ({**BASE, "frequency": "hourly"}, "frequency", ['"hourly"', "daily", "weekly", "monthly"]),
    ({**BASE, "frequency": None}, "frequency", ["null", "daily"]),
    ({**BASE, "frequency": "Daily"}, "frequency", ['"Daily"']),
    (without(BASE, "frequency"), "frequency", ["frequency is missing"]),
    (without(BASE, "time"), "time", ["time is missing", "HH:MM"]),
    (without(BASE, "timezone"), "timezone", ["timezone is missing", "IANA"]),
    ({**BASE, "time": "25:00"}, "time", ['"25:00"', "HH:MM", "24-hour"]),
    ({**BASE, "time": "9:5"}, "time", ['"9:5"', "HH:MM"]),
    ({**BASE, "time": "9:05"}, "time", ['"9:05"', "HH:MM"]),
    ({**BASE, "time": "09:60"}, "time", ['"09:60"', "00:00 to 23:59"]),
    ({**BASE, "time": "09:00:00"}, "time", ['"09:00:00"']),
    ({**BASE, "time": "0900"}, "time", ['"0900"']),
    ({**BASE, "time": 900}, "time", ["900", "HH:MM"]),
    ({**BASE, "time": ""}, "time", ['""', "HH:MM"]),
    ({**BASE, "timezone": "Mars/Olympus"}, "timezone", ['"Mars/Olympus"', "IANA", "UTC"]),
    ({**BASE, "timezone": "Europe/Berlin "}, "timezone", ['"Europe/Berlin "']),
    ({**BASE, "timezone": "../../etc/passwd"}, "timezone", ["IANA"]),
    ({**BASE, "timezone": 1}, "timezone", ["IANA"]),
    (without(WEEKLY, "days_of_week"), "days_of_week", ["weekly", "at least one day"]),
    ({**WEEKLY, "days_of_week": []}, "days_of_week", ["at least one day"]),
    ({**WEEKLY, "days_of_week": ["monday"]}, "days_of_week", ['"monday"', "mon, tue"]),
    ({**WEEKLY, "days_of_week": "mon"}, "days_of_week", ["list", '"mon"']),
    ({**WEEKLY, "day_of_month": 1}, "day_of_month", ["only applies to monthly"]),
    ({**BASE, "days_of_week": ["mon"]}, "days_of_week", ["only applies to weekly"]),
    ({**BASE, "day_of_month": 5}, "day_of_month", ["only applies to monthly"]),
    ({**MONTHLY, "days_of_week": ["mon"]}, "days_of_week", ["only applies to weekly"]),
    (without(MONTHLY, "day_of_month"), "day_of_month", ["monthly", "1 to 31", '"last"']),
    ({**MONTHLY, "day_of_month": 0}, "day_of_month", ["(got 0)", "1 to 31"]),
    ({**MONTHLY, "day_of_month": 32}, "day_of_month", ["(got 32)", "1 to 31"]),
    ({**MONTHLY, "day_of_month": -1}, "day_of_month", ["(got -1)"]),
    ({**MONTHLY, "day_of_month": "31"}, "day_of_month", ['"31"', "whole number"]),
    ({**MONTHLY, "day_of_month": 1.5}, "day_of_month", ["1.5"]),
    ({**MONTHLY, "day_of_month": True}, "day_of_month", ["true"]),
    ({**MONTHLY, "day_of_month": "first"}, "day_of_month", ['"first"', '"last"']),
    ({**BASE, "active": "yes"}, "active", ['"yes"', "true or false"]),
    ({**BASE, "active": 1}, "active", ["(got 1)"]),
    ([], None, ["object", "frequency"]),
    ("daily", None, ["object"]),
    (None, None, ["object", "null"]),
]


@pytest.mark.parametrize(("data", "field", "words"), INVALID)
def test_every_invalid_form_says_what_is_wrong(
    data: Any, field: str | None, words: list[str]
) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_spec(data)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.field == field
    message = str(error)
    if field:
        assert field in message
    for word in words:
        assert word in message
    # The UI translates msgid and fills in params itself.
    assert message == (error.msgid % error.params if error.params else error.msgid)


def test_unknown_keys_are_ignored() -> None:
    s = parse_spec({**BASE, "next_runs": ["2027-01-01T00:00:00Z"], "colour": "blue"})
    assert s.frequency == "daily"


def test_null_days_of_week_is_no_days() -> None:
    assert parse_spec({**BASE, "days_of_week": None, "day_of_month": None}).days_of_week == []


# --- words ----------------------------------------------------------------------------------

DESCRIPTIONS = [
    (WEEKLY | {"days_of_week": ["mon", "fri"], "time": "08:15", "timezone": "Europe/Lisbon"},
     "Mondays and Fridays at 08:15, Europe/Lisbon",
     "Segundas e sextas às 08:15, Europe/Lisbon"),
    (WEEKLY | {"days_of_week": ["mon", "wed", "fri"]},
     "Mondays, Wednesdays and Fridays at 09:00, UTC",
     "Segundas, quartas e sextas às 09:00, UTC"),
    (WEEKLY | {"days_of_week": ["sat"]}, "Saturdays at 09:00, UTC", "Sábados às 09:00, UTC"),
    (BASE | {"time": "06:00"}, "Every day at 06:00, UTC", "Todos os dias às 06:00, UTC"),
    (BASE | {"time": "01:30"}, "Every day at 01:30, UTC", "Todos os dias à 01:30, UTC"),
    (MONTHLY | {"day_of_month": 15, "timezone": "America/New_York"},
     "On day 15 of every month at 09:00, America/New_York",
     "No dia 15 de cada mês às 09:00, America/New_York"),
    (MONTHLY | {"day_of_month": 31},
     "On day 31 of every month (or the last day) at 09:00, UTC",
     "No dia 31 de cada mês (ou no último dia) às 09:00, UTC"),
    (MONTHLY | {"day_of_month": 29},
     "On day 29 of every month (or the last day) at 09:00, UTC",
     "No dia 29 de cada mês (ou no último dia) às 09:00, UTC"),
    (MONTHLY | {"day_of_month": "last", "time": "18:45"},
     "On the last day of every month at 18:45, UTC",
     "No último dia de cada mês às 18:45, UTC"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "en", "pt"), DESCRIPTIONS)
def test_it_describes_a_schedule_in_english_and_portuguese(
    data: dict[str, Any], en: str, pt: str
) -> None:
    s = parse_spec(data)
    assert describe(s) == en
    assert describe(s, "pt_BR") == pt
    assert describe(s, "pt-BR") == pt


def test_an_unknown_locale_falls_back_to_english() -> None:
    assert describe(spec(time="06:00"), "xx_YY") == "Every day at 06:00, UTC"


# --- annotate -------------------------------------------------------------------------------


def test_annotate_marks_a_time_moved_by_a_dst_gap() -> None:
    s = spec(time="02:30", timezone="America/New_York")
    rows = annotate(s, next_runs(s, after=datetime(2027, 3, 13), n=3))
    assert rows == [
        {"at": "2027-03-13T02:30:00-05:00", "note": None},
        {"at": "2027-03-14T03:30:00-04:00", "note": "dst_gap"},
        {"at": "2027-03-15T02:30:00-04:00", "note": None},
    ]


def test_annotate_marks_a_day_clamped_to_a_short_month() -> None:
    s = spec("monthly", "10:00", "UTC", day_of_month=30)
    rows = annotate(s, next_runs(s, after=datetime(2028, 1, 1), n=3))
    assert [r["note"] for r in rows] == [None, "short_month", None]
    assert rows[1]["at"] == "2028-02-29T10:00:00+00:00"


def test_annotate_does_not_mark_the_last_day_or_a_fall_back_time() -> None:
    last = spec("monthly", "10:00", "UTC", day_of_month="last")
    assert {r["note"] for r in annotate(last, next_runs(last, after=datetime(2027, 1, 1)))} == {
        None
    }
    ambiguous = spec(time="02:30", timezone="Europe/Berlin")
    rows = annotate(ambiguous, next_runs(ambiguous, after=datetime(2027, 10, 30), n=3))
    assert {r["note"] for r in rows} == {None}


def test_annotate_shows_runs_in_the_schedule_timezone() -> None:
    s = spec(time="09:00", timezone="Asia/Tokyo")
    run = datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
    assert annotate(s, [run]) == [{"at": "2027-01-01T09:00:00+09:00", "note": None}]


# --- preview == what Prefect's scheduler inserts ----------------------------------------------


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    import prefect.settings as ps
    from prefect.testing.utilities import prefect_test_harness

    # The harness server inherits these; its telemetry only adds "database is locked" noise.
    with ps.temporary_settings(updates={ps.PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        with prefect_test_harness():
            yield


# A fixed "now" just before the 2027 spring-forward nights, so the inserted runs cross
# DST gaps, a fall-back, short months and Feb 29 2028 whatever day the test runs on.
FAKE_NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
SERVER_SPECS = {
    "daily-ny": {**BASE, "time": "02:30", "timezone": "America/New_York"},
    "sundays-berlin": {**WEEKLY, "time": "02:30", "timezone": "Europe/Berlin",
                       "days_of_week": ["sun"]},
    "day30-berlin": {**MONTHLY, "time": "02:30", "timezone": "Europe/Berlin",
                     "day_of_month": 30},
    "day31-sydney": {**MONTHLY, "time": "02:30", "timezone": "Australia/Sydney",
                     "day_of_month": 31},
}  # fmt: skip


async def _schedule_with_prefect() -> dict[str, list[datetime]]:
    import prefect.settings as ps
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    # The harness runs no scheduler; run one loop of the real service in this process,
    # against the harness's database. Importing prefect.server is fine in a test.
    from prefect.server.services import scheduler

    async with get_client() as client:
        flow_id = await client.create_flow_from_name("scriptflow-schedules-test")
        ids = {
            name: await client.create_deployment(
                flow_id=flow_id, name=name, schedules=to_prefect_schedules(parse_spec(data))
            )
            for name, data in SERVER_SPECS.items()
        }
        with (
            pytest.MonkeyPatch.context() as mp,
            ps.temporary_settings(
                updates={
                    # Fill a whole year (Feb 2028 included); daily stops at max_runs.
                    ps.PREFECT_SERVER_SERVICES_SCHEDULER_MAX_SCHEDULED_TIME: timedelta(days=400),
                    ps.PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME: timedelta(days=400),
                    ps.PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS: 250,
                }
            ),
        ):
            mp.setattr(scheduler, "now", lambda tz="UTC": FAKE_NOW)
            await scheduler.schedule_deployments()

        inserted: dict[str, list[datetime]] = {}
        for name, deployment_id in ids.items():
            runs = []
            while batch := await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
                offset=len(runs),
            ):
                runs.extend(batch)
            assert all(r.state and r.state.is_scheduled() for r in runs)
            inserted[name] = [r.expected_start_time for r in runs]
    return inserted


def test_the_preview_is_what_prefects_scheduler_inserts(prefect_server: None) -> None:
    inserted = run_async(_schedule_with_prefect())
    for name, data in SERVER_SPECS.items():
        s = parse_spec(data)
        times = inserted[name]
        assert len(times) >= 12, name
        assert len(set(times)) == len(times), f"{name}: two runs at one instant"
        assert instants(next_runs(s, after=FAKE_NOW, n=len(times))) == instants(times), name

    ny = [t.astimezone(ZoneInfo("America/New_York")) for t in inserted["daily-ny"]]
    assert local("America/New_York", 2027, 3, 14, 3, 30).timestamp() in instants(ny)
    assert local("America/New_York", 2027, 11, 7, 2, 30).timestamp() in instants(ny)
    assert len(ny) == 250 and len({t.date() for t in ny}) == 250
    sundays = instants(inserted["sundays-berlin"])
    assert local("Europe/Berlin", 2027, 3, 28, 3, 30).timestamp() in sundays
    assert local("Europe/Berlin", 2027, 10, 31, 2, 30, fold=0).timestamp() in sundays
    assert local("Europe/Berlin", 2027, 10, 31, 2, 30, fold=1).timestamp() not in sundays
    day30 = instants(inserted["day30-berlin"])
    assert local("Europe/Berlin", 2028, 2, 29, 2, 30).timestamp() in day30
    day31 = instants(inserted["day31-sydney"])
    assert local("Australia/Sydney", 2027, 4, 30, 2, 30).timestamp() in day31
    assert local("Australia/Sydney", 2028, 2, 29, 2, 30).timestamp() in day31


# -- the schedule as Prefect runs it, when Prefect says nothing or breaks ----------------------
class _PrefectAnswering:
    """An HTTP server on loopback standing in for Prefect's API at the network edge: every
    request gets `status` with `body` (200 []: no such deployment; 500: Prefect broke)."""

    def __init__(self, status: int, body: bytes):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                # Prefect's client asks for a CSRF token before a POST: none, as on a
                # server that has CSRF protection off (Prefect's default).
                csrf = "/csrf-token" in self.path
                answer = b'{"detail": "CSRF protection is disabled."}' if csrf else body
                self.send_response(422 if csrf else status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's names

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _truth_with_prefect_answering(status: int, body: bytes):
    import uuid
    from types import SimpleNamespace

    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from scriptflow_prefect.schedules import truth

    saved = {"frequency": "daily", "time": "06:00", "timezone": "UTC", "active": True}
    script = SimpleNamespace(
        id=7, schedule=saved, settings=None, deployment_id=str(uuid.uuid4()), name="x"
    )
    server = _PrefectAnswering(status, body)
    try:
        with temporary_settings({PREFECT_API_URL: server.url, PREFECT_CLIENT_MAX_RETRIES: 0}):
            return run_async(truth.truths_or_saved([script]))[7]
    finally:
        server.close()


def test_a_schedule_whose_deployment_prefect_does_not_have_is_not_scheduled():
    found = _truth_with_prefect_answering(200, b"[]")
    assert found.known and found.source is None and found.removed_in_prefect
    assert found.next_run_at is None


def test_when_prefect_breaks_the_saved_schedule_is_shown_as_unknown():
    found = _truth_with_prefect_answering(500, b'{"detail": "broken"}')
    assert not found.known and found.source == "scriptflow" and found.state == "active"
    assert found.next_runs and found.next_run_at is None  # Prefect's next run is not known


# -- schedules set in Prefect, read back into the simple form (schedules/foreign.py) -----------
def _cron(cron: str, active: bool = True):
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    return DeploymentScheduleCreate(schedule=CronSchedule(cron=cron, timezone="UTC"), active=active)


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 6 * * *", {"frequency": "daily", "time": "06:00"}),
        ("00 06 * * *", {"frequency": "daily", "time": "06:00"}),
        ("0 6 * * 0-7", {"frequency": "daily", "time": "06:00"}),  # every day, not Sundays
        ("0 6 * * 0-6", {"frequency": "daily", "time": "06:00"}),
        (
            "15 8 * * 1-5",
            {"frequency": "weekly", "days_of_week": ["mon", "tue", "wed", "thu", "fri"]},
        ),
        ("15 8 * * 6,7", {"frequency": "weekly", "days_of_week": ["sat", "sun"]}),
        ("0 1 L * *", {"frequency": "monthly", "day_of_month": "last"}),
        ("0 1 12 * *", {"frequency": "monthly", "day_of_month": 12}),
    ],
)
def test_a_cron_the_form_can_express_is_read_back_as_the_form(cron, expected):
    from scriptflow_prefect.schedules.foreign import spec_of_schedules

    spec = spec_of_schedules([_cron(cron)])
    assert spec is not None and spec.model_dump().items() >= expected.items()


@pytest.mark.parametrize(
    "crons",
    [
        ["0 */2 * * *"],
        ["0 6 * * 5-1"],
        ["0 6 1 * 1"],
        ["0 6 15 1 *"],
        ["0 6 * * *", "0 7 * * *"],
        ["0 0 30 2 *"],
    ],
)
def test_a_cron_the_form_cannot_express_is_not_read_as_the_form(crons):
    from scriptflow_prefect.schedules.foreign import spec_of_schedules

    assert spec_of_schedules([_cron(c) for c in crons]) is None


def test_a_pair_with_one_half_paused_is_not_the_forms():
    from scriptflow_prefect.schedules.foreign import spec_of_schedules

    pair = to_prefect_schedules(spec("monthly", "12:00", "UTC", day_of_month=30))
    assert spec_of_schedules(pair) is not None
    pair[1].active = False
    assert spec_of_schedules(pair) is None


def test_a_cron_with_no_date_ever_gives_no_next_runs_instead_of_an_error():
    from types import SimpleNamespace

    from scriptflow_prefect.schedules import truth

    script = SimpleNamespace(id=1, schedule=None, settings=None, deployment_id="x")
    deployment = SimpleNamespace(schedules=[_cron("0 0 30 2 *")], paused=False)
    found = truth._truth(script, deployment, None)
    assert found.source == "prefect" and found.next_runs == [] and found.state == "active"
