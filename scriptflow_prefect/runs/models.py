"""Typed run data: a run's `Status` and `Trigger`, how Prefect's states and tags map to them
(here and nowhere else), and `Run`, a run as the API, the pages and the emails show it.

Example::

    run = Run.from_flow_run(flow_run, {7: "nightly-backup"})
    run.status in FINAL, run.trigger is Trigger.SCHEDULED
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from prefect.client.schemas.objects import FlowRun, State, StateType
from pydantic import BaseModel, Field, PlainSerializer

from scriptflow_prefect.platform.prefect_names import EXIT_CODE_LABEL, TIMED_OUT_STATE_NAME
from scriptflow_prefect.runs.messages import RunMessage

# In JSON as Python writes it ("+00:00", as the API always has), not pydantic's "Z".
IsoDatetime = Annotated[
    datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str, when_used="json")
]


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    CRASHED = "crashed"


FINAL = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED, Status.CRASHED}
)
FAILURES = frozenset({Status.FAILED, Status.TIMED_OUT, Status.CRASHED})


class Trigger(StrEnum):
    MANUAL = "manual"
    SCHEDULED = "scheduled"
    RETRY = "retry"

    @property
    def tag(self) -> str:
        """The tag on the runs it starts: ScriptFlow tags manual runs and retries, Prefect's
        scheduler its runs (`auto-scheduled`)."""
        return _TRIGGER_TAGS[self]

    @classmethod
    def of(cls, flow_run: FlowRun) -> Trigger:
        if cls.RETRY.tag in flow_run.tags:
            return cls.RETRY
        if flow_run.auto_scheduled or cls.SCHEDULED.tag in flow_run.tags:
            return cls.SCHEDULED
        return cls.MANUAL


_TRIGGER_TAGS = {
    Trigger.MANUAL: "manual",
    Trigger.SCHEDULED: "auto-scheduled",
    Trigger.RETRY: "retry",
}


def retry_tags(number: int) -> list[str]:
    """Tags of the `number`th retry of a scheduled run."""
    return [Trigger.RETRY.tag, f"{Trigger.RETRY.tag}-{number}"]


def retry_number(flow_run: FlowRun) -> int:
    prefix = Trigger.RETRY.tag + "-"
    for tag in flow_run.tags:
        if tag.startswith(prefix) and tag[len(prefix) :].isdigit():
            return int(tag[len(prefix) :])
    return 0


STATUS_BY_STATE = {
    StateType.SCHEDULED: Status.QUEUED,
    StateType.PENDING: Status.QUEUED,
    StateType.PAUSED: Status.QUEUED,
    StateType.RUNNING: Status.RUNNING,
    StateType.CANCELLING: Status.RUNNING,
    StateType.COMPLETED: Status.SUCCEEDED,
    StateType.FAILED: Status.FAILED,
    StateType.CANCELLED: Status.CANCELLED,
    StateType.CRASHED: Status.CRASHED,
}


def states_of(status: Status) -> list[StateType]:
    """Prefect's state types of a status (timed out: FAILED, named TimedOut)."""
    wanted = Status.FAILED if status == Status.TIMED_OUT else status
    return [t for t, s in STATUS_BY_STATE.items() if s == wanted]


def status_of(state: State | None) -> Status:
    if state is None:
        return Status.QUEUED
    if state.type == StateType.FAILED and state.name == TIMED_OUT_STATE_NAME:
        return Status.TIMED_OUT
    return STATUS_BY_STATE.get(state.type, Status.QUEUED)


class RunFile(BaseModel):
    """A file the run created or changed in its working folder. `stored` False: listed, not
    kept, for `reason`: "too_big" (over 20 MB), "over_total" (the run's 50 MB were used),
    "unreadable", "disk_full"."""

    name: str
    size: int
    stored: bool = True
    reason: str | None = None


class Run(BaseModel):
    """A run of a script. `message` is Prefect's state message (English); `message_code` and
    `message_params` say which of ScriptFlow's messages it is, for translation (None for a
    message Prefect wrote)."""

    id: str
    script_id: int | None = None
    script_name: str | None = None
    status: Status
    trigger: Trigger
    scheduled_at: IsoDatetime | None = None
    started_at: IsoDatetime | None = None
    ended_at: IsoDatetime | None = None
    duration_seconds: float | None = None
    exit_code: int | None = None
    script_version: int | None = None
    arguments: list[str] | None = Field(
        None, description="The arguments it ran with (None: a run from before they existed)"
    )
    message: str | None = None
    message_code: str | None = None
    message_params: dict[str, Any] | None = None
    match: dict[str, Any] | None = Field(
        None, description="With `q`: the run's first output line holding the words"
    )
    files: list[RunFile] = Field(
        default_factory=list,
        description="Files the run created or changed in its working folder (GET "
        "/api/v1/runs/{id}/files/{name} downloads one)",
    )
    files_complete: bool = Field(
        True, description="False when the folder was too big to look at all of it"
    )

    @classmethod
    def from_flow_run(cls, flow_run: FlowRun, script_names: dict[int, str] | None = None) -> Run:
        params = flow_run.parameters or {}
        script_id = params.get("script_id")
        labels = flow_run.labels or {}
        exit_code = labels.get(EXIT_CODE_LABEL)
        started, ended = flow_run.start_time, flow_run.end_time
        status = status_of(flow_run.state)
        duration = None
        if started and ended:
            duration = round((ended - started).total_seconds(), 3)
        elif started and status == Status.RUNNING:
            duration = round(flow_run.estimated_run_time.total_seconds(), 3)
        text = flow_run.state.message if flow_run.state else None
        coded = RunMessage.from_labels(labels, text)
        return cls(
            id=str(flow_run.id),
            script_id=script_id if isinstance(script_id, int) else None,
            script_name=(script_names or {}).get(script_id) or params.get("script_name"),
            status=status,
            trigger=Trigger.of(flow_run),
            scheduled_at=flow_run.expected_start_time,
            started_at=started,
            ended_at=ended,
            duration_seconds=duration,
            exit_code=int(exit_code) if exit_code not in (None, "") else None,
            script_version=params.get("version"),
            arguments=_texts(params.get("arguments")),
            message=text,
            message_code=coded.code if coded else None,
            message_params=coded.params if coded else None,
        )


def _texts(value: Any) -> list[str] | None:
    # A power user may start a run in Prefect with any JSON as a parameter.
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def run_to_dict(flow_run: FlowRun, script_names: dict[int, str] | None = None) -> dict[str, Any]:
    """The run as a dict (status and trigger stay enums, equal to their strings)."""
    return dict(Run.from_flow_run(flow_run, script_names))
