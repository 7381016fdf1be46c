"""A schedule in words, e.g. "Mondays and Fridays at 08:15, Europe/Lisbon", in en or pt-BR."""

from __future__ import annotations

from typing import Any

from scriptflow_prefect.schedules.spec import DAYS, ScheduleSpec

# Phrase templates per locale. The translation catalog is built elsewhere later; until
# then these are the source of the words.
PHRASES: dict[str, dict[str, Any]] = {
    "en": {
        "daily": "Every day {at}, {tz}",
        "weekly": "{days} {at}, {tz}",
        "monthly_day": "On day {day} of every month {at}, {tz}",
        "monthly_day_or_last": "On day {day} of every month (or the last day) {at}, {tz}",
        "monthly_last": "On the last day of every month {at}, {tz}",
        "at": "at {time}",
        "at_one": "at {time}",
        "and": " and ",
        "days": {
            "mon": "Mondays",
            "tue": "Tuesdays",
            "wed": "Wednesdays",
            "thu": "Thursdays",
            "fri": "Fridays",
            "sat": "Saturdays",
            "sun": "Sundays",
        },
    },
    "pt_BR": {
        "daily": "Todos os dias {at}, {tz}",
        "weekly": "{days} {at}, {tz}",
        "monthly_day": "No dia {day} de cada mês {at}, {tz}",
        "monthly_day_or_last": "No dia {day} de cada mês (ou no último dia) {at}, {tz}",
        "monthly_last": "No último dia de cada mês {at}, {tz}",
        "at": "às {time}",
        # "à 01:00", "à 00:30": a uma hora / a zero hora are singular in Portuguese.
        "at_one": "à {time}",
        "and": " e ",
        "days": {
            "mon": "segundas",
            "tue": "terças",
            "wed": "quartas",
            "thu": "quintas",
            "fri": "sextas",
            "sat": "sábados",
            "sun": "domingos",
        },
    },
}


def _phrases(locale: str) -> dict[str, Any]:
    key = locale.replace("-", "_")
    if key in PHRASES:
        return PHRASES[key]
    language = key.split("_")[0].lower()
    for name, phrases in PHRASES.items():
        if name.split("_")[0].lower() == language:
            return phrases
    return PHRASES["en"]


def describe(spec: ScheduleSpec, locale: str = "en") -> str:
    """The schedule in words, e.g. "Mondays and Fridays at 08:15, Europe/Lisbon"."""
    p = _phrases(locale)
    at = p["at_one" if spec.wall_time.hour <= 1 else "at"].format(time=spec.time)
    words = {"at": at, "tz": spec.timezone, "day": spec.day_of_month}
    if spec.frequency == "daily" or (
        spec.frequency == "weekly" and len(spec.days_of_week) == len(DAYS)
    ):
        return p["daily"].format(**words)
    if spec.frequency == "weekly":
        names = [p["days"][day] for day in spec.days_of_week]
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + p["and"] + names[-1]
        return p["weekly"].format(days=joined[:1].upper() + joined[1:], **words)
    if spec.day_of_month == "last":
        return p["monthly_last"].format(**words)
    assert isinstance(spec.day_of_month, int)
    key = "monthly_day_or_last" if spec.day_of_month >= 29 else "monthly_day"
    return p[key].format(**words)
