"""gettext for every user-facing string: pages, API reasons, emails (Babel catalogues).

The locale of the current request lives in a context variable, so Python code and
templates translate without passing the locale around."""

from __future__ import annotations

import contextvars
from datetime import datetime, tzinfo
from functools import cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from babel import numbers as babel_numbers
from babel.support import NullTranslations, Translations

LOCALES = ("en", "pt_BR")
DEFAULT_LOCALE = "en"
# The catalogues sit in the core: emails are translated inside Prefect's server too.
LOCALE_DIR = Path(__file__).resolve().parent / "locale"

_current: contextvars.ContextVar[str] = contextvars.ContextVar("locale", default=DEFAULT_LOCALE)
# The zone dates are shown in: the user's own, else SCRIPTFLOW_TIMEZONE.
_zone: contextvars.ContextVar[str] = contextvars.ContextVar("zone", default="UTC")


def set_zone(zone: str) -> contextvars.Token:
    return _zone.set(zone)


@cache
def translations(locale: str) -> NullTranslations:
    if locale == "en":
        return NullTranslations()  # msgids are English
    return Translations.load(str(LOCALE_DIR), [locale], domain="messages")


def set_locale(locale: str) -> contextvars.Token:
    return _current.set(locale if locale in LOCALES else DEFAULT_LOCALE)


def get_locale() -> str:
    return _current.get()


def gettext(message: str, **params) -> str:
    text = translations(get_locale()).gettext(message)
    # A literal "%%" needs the formatting pass even without parameters.
    return text % params if params or "%%" in text else text


_ = gettext


def ngettext(singular: str, plural: str, n: int, **params) -> str:
    text = translations(get_locale()).ngettext(singular, plural, n)
    return text % {"num": n, **params}


def N_(message: str) -> str:
    """Mark a string for extraction; translate it later with `_` where it is shown."""
    return message


def negotiate(accept_language: str | None, default: str = DEFAULT_LOCALE) -> str:
    """Pick en or pt_BR from an Accept-Language header."""
    if not accept_language:
        return default
    wanted = []
    for part in accept_language.split(","):
        lang, _sep, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        if lang:
            wanted.append((weight, lang.replace("-", "_")))
    wanted.sort(key=lambda w: -w[0])
    for _w, lang in wanted:
        if lang == "*":
            return default
        for known in LOCALES:
            if lang.lower() == known.lower() or lang.split("_")[0].lower() == known[:2].lower():
                return known
    return default


@cache
def babel_locale(locale: str) -> Locale:
    try:
        return Locale.parse(locale)
    except (UnknownLocaleError, ValueError):
        return Locale.parse(DEFAULT_LOCALE)


def format_datetime(dt: datetime | None, tz: tzinfo | str | None = None, fmt: str = "short") -> str:
    if dt is None:
        return ""
    zone = babel_dates.get_timezone(tz or _zone.get())
    loc = babel_locale(get_locale())
    if fmt == "short":  # dd/mm/aaaa 24 h in pt-BR, the locale's own order elsewhere
        pattern = loc.datetime_formats["short"].format(
            loc.time_formats["short"].pattern,
            "dd/MM/yyyy" if loc.language == "pt" else loc.date_formats["short"].pattern,
        )
        pattern = pattern.replace("'", "")
        return babel_dates.format_datetime(dt, pattern, tzinfo=zone, locale=loc)
    return babel_dates.format_datetime(dt, fmt, tzinfo=zone, locale=loc)


def format_time(dt: datetime, tz: tzinfo | str | None = None) -> str:
    if isinstance(tz, str):  # babel's format_time takes only a tzinfo
        tz = babel_dates.get_timezone(tz)
    return babel_dates.format_time(dt, "short", tzinfo=tz, locale=babel_locale(get_locale()))


def format_number(n: float | int, digits: int = 0) -> str:
    fmt = "#,##0" + ("." + "0" * digits if digits else "")
    return babel_numbers.format_decimal(n, fmt, locale=babel_locale(get_locale()))


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return _("%(s)s s", s=format_number(seconds, 1))
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return _("%(m)s min %(s)s s", m=minutes, s=secs)
    hours, minutes = divmod(minutes, 60)
    return _("%(h)s h %(m)s min", h=hours, m=minutes)
