"""Response models of /api/v1: the shapes API.md promises, documented in the OpenAPI schema
at /api/v1/openapi.json. A model lists the contract's fields; extra fields the core serves
are passed through (`extra="allow"`), so an answer only ever gains fields."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi.encoders import jsonable_encoder
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializationInfo,
    model_serializer,
)

from scriptflow_prefect.runs.models import IsoDatetime, Run, Trigger

# Free-form values (and extra fields below) in JSON as the API has always written them.
Loose = Annotated[Any, PlainSerializer(jsonable_encoder, when_used="json")]


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _extras_as_before(self, handler, info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        if info.mode_is_json() and self.__pydantic_extra__:
            data.update(jsonable_encoder(self.__pydantic_extra__))
        return data


class Error(BaseModel):
    """Every error of /api/v1: one reason a person can act on."""

    model_config = ConfigDict(extra="forbid")
    detail: str


# -- runs -------------------------------------------------------------------------------------


class RunPage(Open):
    items: list[Run]
    total: int


class OutputLine(Open):
    ts: str
    stream: Literal["stdout", "stderr"]
    text: str


class CurrentLine(Open):
    stream: Literal["stdout", "stderr"]
    text: str


class OutputPage(Open):
    lines: list[OutputLine]
    next: str
    complete: bool
    current: CurrentLine | None = None  # the line being written (a progress bar), live runs


class OutputMatches(Open):
    matches: list[str]
    total: int
    first_error: str | None = None


class RunSummary(Open):
    rate_7: float | None = None
    finished_7: int
    rate_30: float | None = None
    finished_30: int
    avg_duration: float | None = None
    p95_duration: float | None = None
    strip: list[Loose]
    runs_30: int
    unacknowledged: list[Run]


# -- scripts and schedules ---------------------------------------------------------------------


class PrefectSchedule(Open):
    """One of the deployment's schedules as Prefect has it."""

    id: str
    kind: Literal["cron", "interval", "rrule", "other"]
    value: str = Field(description="the cron, the interval in seconds, or the RRULE")
    timezone: str
    active: bool
    description: str


ScheduleState = Literal["active", "inactive", "disabled", "paused_in_prefect"]


class Schedule(Open):
    """A script's schedule as Prefect runs it. The simple form's fields are null when the
    schedule was set in Prefect in a way the form cannot express (`source` "prefect")."""

    frequency: Literal["daily", "weekly", "monthly"] | None
    time: str | None
    timezone: str | None
    days_of_week: list[str] = []
    day_of_month: int | Literal["last"] | None = None
    active: bool
    next_runs: list[IsoDatetime]
    source: Literal["scriptflow", "prefect"] | None = None
    state: ScheduleState | None = Field(
        None,
        description="inactive: switched off in ScriptFlow; disabled: switched off by the run "
        "policy after failures in a row; paused_in_prefect: paused in Prefect",
    )
    description: str | None = None
    prefect_schedules: list[PrefectSchedule] = []


class WorkingFolder(Open):
    mode: Literal["script", "path", "fresh"]
    path: str | None = None


class Script(Open):
    id: int
    name: str
    description: str | None = None
    type: Literal["python", "batch"]
    filename: str
    size: int
    sha256: str
    version: int
    created_at: IsoDatetime
    updated_at: IsoDatetime
    owner: str
    timeout_seconds: int | None = None
    schedule: Schedule | None = None
    last_run: Run | None = None
    schedule_source: Literal["scriptflow", "prefect"] | None = Field(
        None,
        description="prefect: the deployment's schedules were set in Prefect in a way the "
        "simple form cannot express",
    )
    next_run_at: IsoDatetime | None = Field(
        None, description="the next run Prefect will start; null when none or unknown"
    )
    arguments: list[str] = []
    environment: dict[str, str] = {}
    secrets: list[str] = []
    requirements: list[str] = []
    working_folder: WorkingFolder
    run_as: str | None = None
    warnings: list[str] = []
    files: list[ScriptFile] = []


class ScriptFile(Open):
    name: str
    size: int
    sha256: str


class FolderEntry(Open):
    name: str
    path: str
    type: Literal["file", "folder"]
    size: int | None = None
    modified_at: IsoDatetime


class FolderListing(Open):
    path: str
    entries: list[FolderEntry]
    more: int = 0


class EnvironmentPackage(Open):
    name: str
    version: str


class ScriptEnvironment(Open):
    """`GET /api/v1/scripts/{id}/environment`: the script's Python dependencies."""

    status: Literal["ready", "building", "failed"]
    packages: list[EnvironmentPackage]
    log: str
    requirements: list[str] = []  # its requirements and its `# /// script` block's, together
    python: str = ""
    built_at: IsoDatetime | None = None
    message: str | None = None  # why it failed, in the reader's language


class ScriptPage(Open):
    items: list[Script]
    total: int


class Version(Open):
    version: int
    sha256: str
    size: int
    created_at: IsoDatetime
    author: str | None = None


class Versions(Open):
    items: list[Version]


class SchedulePreview(Open):
    next_runs: list[IsoDatetime]


class ScriptSchedule(Schedule):
    script_id: int
    script_name: str
    state: ScheduleState


class ScriptSchedules(Open):
    items: list[ScriptSchedule]
    total: int


class NextRun(Open):
    id: str
    script_id: int | None = None
    script_name: str | None = None
    scheduled_at: IsoDatetime | None = None
    trigger: Trigger


class Scheduler(Open):
    running: list[Run]
    next: list[NextRun]
    late: list[Run]
    workers: list[Loose]


# -- drift between ScriptFlow and Prefect (scripts/drift.py) ------------------------------------


class DriftScript(Open):
    id: int
    name: str


class DriftDeployment(Open):
    id: str
    name: str


class DriftItem(Open):
    """One difference between a script and its Prefect deployment. `repair` says what the
    repair does (null: shown for information, e.g. a concurrency limit set in Prefect)."""

    id: str
    kind: Literal["missing", "renamed", "orphan", "parameters", "tags", "work_pool", "concurrency"]
    script: DriftScript | None
    deployment: DriftDeployment | None
    message: str
    repair: str | None
    repairable: bool


class DriftList(Open):
    items: list[DriftItem]


class DriftFailure(Open):
    item: DriftItem
    detail: str


class DriftRepairResult(Open):
    repaired: list[DriftItem]
    failed: list[DriftFailure]


# -- notifications, settings, auth ---------------------------------------------------------------


class EmailSettings(Open):
    """The password is write-only: `password_set` says whether one is stored."""

    host: str
    port: int | None = None
    username: str
    security: Literal["none", "starttls", "ssl"]
    from_address: str


class TestEmail(Open):
    sent: bool
    to: str


class NotificationDefaults(Open):
    on_failure: bool
    on_success: bool
    digest: Literal["none", "daily", "weekly"]


class NotificationPrefs(Open):
    on_failure: bool
    on_success: bool
    recipients: list[str]
    digest: Literal["none", "daily", "weekly"]
    channels: list[str]


class ChannelSettings(Open):
    """A channel's settings as the Settings page shows them: addresses and passwords only as
    `url_set` / `password_set` flags (the email channel has the fields of EmailSettings)."""

    configured: bool


class ChannelWithKind(ChannelSettings):
    kind: str


class ChannelTest(Open):
    sent: bool
    detail: str


class Notification(Open):
    id: str
    at: IsoDatetime | None = None
    status: str
    script_id: int | None = None
    script_name: str | None = None


class NotificationPage(Open):
    items: list[Notification]
    total: int


class Token(Open):
    token: str
    expires_at: IsoDatetime | None = None
