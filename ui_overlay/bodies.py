"""Request bodies that routes read and check themselves (answering 422 with a reason a person
can act on), as /api/v1/openapi.json shows them (`openapi_extra=openapi.body(Model)`).

They say exactly what the checks in the core accept, so that a client can tell a good body
from a bad one without sending it; tests/test_openapi_contract.py holds the two together."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel

from scriptflow_prefect.notifications.channels import CHANNELS
from scriptflow_prefect.notifications.channels.email.mailer import EMAIL_RE
from scriptflow_prefect.schedules.spec import Day
from scriptflow_prefect.scripts import run_config
from scriptflow_prefect.scripts.service import MAX_TIMEOUT, NAME_CONTROLS

TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


def _whole_number(value: Any) -> Any:
    # JSON's 5 and 5.0 are the same number; "5" and true are not numbers.
    if isinstance(value, bool | str):
        raise ValueError("must be a whole number")
    return value


def whole(ge: int, le: int) -> Any:
    """A whole number from `ge` to `le` (the bounds first: they are what the schema shows)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_whole_number)]


@cache
def script_name_pattern() -> str:
    """What scripts.service.check_name accepts, as a pattern: no / % & < >, control, format
    character or lone surrogate (whitespace of any kind is folded to one space first), and
    something other than whitespace."""
    # The Basic Multilingual Plane only, surrogates aside: schema tools drop a pattern with
    # them. What is left out (a dozen rare format characters) is still refused, with a reason.
    banned = set("/%&<>")
    banned |= {
        chr(c)
        for c in range(0xFFFF + 1)
        if unicodedata.category(chr(c)) in NAME_CONTROLS
        and not chr(c).isspace()
        and not 0xD800 <= c <= 0xDFFF
    }
    ranges, run = [], []
    for c in sorted(ord(b) for b in banned):
        if run and c == run[-1] + 1:
            run.append(c)
        else:
            if run:
                ranges.append((run[0], run[-1]))
            run = [c]
    ranges.append((run[0], run[-1]))

    def char(c: int) -> str:
        return f"\\u{c:04x}"

    cls = "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges)
    return f"^[^{cls}]*[^{cls}\\s][^{cls}]*$"


ScriptName = Annotated[
    str,
    # Documented, not enforced here: check_name answers with a reason a person can act on.
    Field(json_schema_extra={"maxLength": 100, "pattern": script_name_pattern()}),
]


class PolicyChanges(BaseModel):
    """A script's run policy (runs/policies.py); fields left out keep their value."""

    # RunPolicy ignores other keys; a field sent as null would be refused, so none is nullable.
    model_config = ConfigDict(extra="allow")
    retries: whole(0, 3) = None  # type: ignore[assignment]
    retry_delay_seconds: whole(1, 86400) = None  # type: ignore[assignment]
    disable_after_failures: whole(0, 100) = None  # type: ignore[assignment]
    missed: Literal["once", "skip"] = None  # type: ignore[assignment]
    overlap: Literal["skip", "queue"] = None  # type: ignore[assignment]
    late_after_seconds: whole(10, 86400) = None  # type: ignore[assignment]


Timeout = whole(1, MAX_TIMEOUT)

EmailAddress = Annotated[str, Field(pattern=EMAIL_RE.pattern, max_length=254)]


@cache
def _zones() -> tuple[str, ...]:
    return tuple(sorted(available_timezones()))


class TimeZone(RootModel[Literal[_zones()]]):  # type: ignore[misc]
    """An IANA time zone name, as Prefect's schedules know them."""


NoDays = Annotated[list[Day], Field(max_length=0)] | None


class _Schedule(BaseModel):
    # Other keys are ignored (a schedule read from GET, with its next_runs, can be sent back).
    model_config = ConfigDict(extra="allow")
    time: Annotated[str, Field(pattern=TIME, description="HH:MM, 24-hour")]
    timezone: TimeZone
    active: bool = True
    replace: bool = Field(
        False,
        description="Replace schedules set in Prefect that the simple form cannot express "
        "(schedule_source prefect); without it such a PUT answers 409 and changes nothing",
    )


class DailySchedule(_Schedule):
    frequency: Literal["daily"]
    days_of_week: NoDays = None
    day_of_month: None = None


class WeeklySchedule(_Schedule):
    frequency: Literal["weekly"]
    days_of_week: Annotated[list[Day], Field(min_length=1)]
    day_of_month: None = None


class MonthlySchedule(_Schedule):
    frequency: Literal["monthly"]
    day_of_month: Annotated[int, Field(ge=1, le=31)] | Literal["last"]
    days_of_week: NoDays = None


AnySchedule = Annotated[
    DailySchedule | WeeklySchedule | MonthlySchedule, Field(discriminator="frequency")
]


class ScheduleBody(RootModel[AnySchedule]):
    """A schedule (API.md "Schedules"); `next_runs` and other keys are ignored."""


class _Preview(BaseModel):
    after: datetime | None = Field(None, description="ISO 8601 with offset; default now")


class DailyPreview(DailySchedule, _Preview):
    pass


class WeeklyPreview(WeeklySchedule, _Preview):
    pass


class MonthlyPreview(MonthlySchedule, _Preview):
    pass


class PreviewBody(
    RootModel[
        Annotated[DailyPreview | WeeklyPreview | MonthlyPreview, Field(discriminator="frequency")]
    ]
):
    """A schedule to preview (`active` is ignored), and the moment to look after."""


class NotificationPrefsBody(BaseModel):
    """A script's notification preferences; fields left out keep their value. A channel an
    admin has not set up, or no recipient when the owner has no address: 409."""

    model_config = ConfigDict(extra="forbid")
    on_failure: bool = True
    on_success: bool = False
    recipients: Annotated[list[EmailAddress], Field(max_length=20)] | None = None
    digest: Literal["none", "daily", "weekly"] = "none"
    channels: Annotated[list[Literal[tuple(CHANNELS)]], Field(min_length=1)] = ["email"]  # type: ignore[valid-type]


class NotificationDefaultsBody(BaseModel):
    """The defaults of scripts without preferences of their own; fields left out keep theirs."""

    model_config = ConfigDict(extra="forbid")
    on_failure: bool = True
    on_success: bool = False
    digest: Literal["none", "daily", "weekly"] = "none"
    digest_time: Annotated[str, Field(pattern=TIME)] = "08:00"
    digest_weekday: Day = "mon"
    throttle_minutes: Annotated[float, Field(ge=0, le=1440)] = 15


class EmailSettingsBody(BaseModel):
    """SMTP settings; fields left out keep their value, an empty host turns email off. With a
    host, from_address is required (422 otherwise)."""

    model_config = ConfigDict(extra="forbid")
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    username: Annotated[str, Field(max_length=255)] | None = None
    password: Annotated[str, Field(max_length=1024)] | None = None
    security: Literal["none", "starttls", "ssl"] | None = None
    from_address: str | None = None


class ChannelBody(BaseModel):
    """A chat or webhook channel's address (write-only); "" or null switches it off. The email
    channel takes the fields of EmailSettingsBody instead."""

    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, Field(max_length=2048)] | None


class TestMessageBody(BaseModel):
    """Where the email channel's test message goes (default: your own address)."""

    model_config = ConfigDict(extra="forbid")
    to: EmailAddress | None = None


class ChannelSettingsBody(RootModel[ChannelBody | EmailSettingsBody]):
    """PUT /settings/channels/{kind}: `{"url"}`, or the email settings for kind `email`."""


# How a script runs (scripts/run_config.py): what its checks accept, as far as a schema can say.
_RESERVED = "(?![Ss][Cc][Rr][Ii][Pp][Tt][Ff][Ll][Oo][Ww]_|[Pp][Rr][Ee][Ff][Ee][Cc][Tt]_)"
# Documented, not enforced here (look-ahead is beyond pydantic's regex engine): run_config
# answers with a reason a person can act on.
VariableName = Annotated[
    str, Field(json_schema_extra={"pattern": f"^{_RESERVED}[A-Za-z_][A-Za-z0-9_]{{0,127}}$"})
]
_NO_NUL = {"pattern": "^[^\\u0000]*$"}
Argument = Annotated[
    str, Field(max_length=run_config.MAX_ARGUMENT_CHARS, json_schema_extra=_NO_NUL)
]
Arguments = Annotated[list[Argument], Field(max_length=run_config.MAX_ARGUMENTS)]
VariableValue = Annotated[
    str, Field(max_length=run_config.MAX_VALUE_CHARS, json_schema_extra=_NO_NUL)
]
Environment = Annotated[
    dict[VariableName, VariableValue], Field(max_length=run_config.MAX_VARIABLES)
]
SecretChanges = Annotated[
    dict[VariableName, VariableValue | None], Field(max_length=run_config.MAX_VARIABLES)
]
# PEP 508 is more than a pattern can say; a requirement it refuses gets 422 with the reason.
Requirements = Annotated[list[str], Field(max_length=run_config.MAX_REQUIREMENTS)]
Account = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\\@$-]{1,104}$")]


class WorkingFolderBody(BaseModel):
    """`script` (the default), `path` (an absolute folder: /srv/x or D:\\x) or `fresh`."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["script", "path", "fresh"] = "script"
    path: Annotated[str, Field(max_length=1024)] | None = None


# -- POST /scheduler/drift/repair (ui_overlay/scheduler.py) -----------------------------------
# scripts/drift.py's DriftItem.id: the kind, the script's id (0: none), the deployment's id.
DRIFT_ITEM_ID = (
    r"^(missing|renamed|orphan|parameters|tags|work_pool|concurrency):[0-9]{1,10}:[-0-9a-f]{1,36}$"
)


class DriftRepairOne(BaseModel):
    """One item: its id from GET /scheduler/drift."""

    model_config = ConfigDict(extra="forbid")
    item: str = Field(max_length=80, pattern=DRIFT_ITEM_ID)


class DriftRepairAll(BaseModel):
    """Every repairable item."""

    model_config = ConfigDict(extra="forbid")
    all: Literal[True]


class DriftRepairBody(RootModel[DriftRepairOne | DriftRepairAll]):
    """`{"item": "<id from GET /scheduler/drift>"}` or `{"all": true}`."""
