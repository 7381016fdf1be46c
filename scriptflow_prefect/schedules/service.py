"""Between a script's simple schedule (kept in the overlay as the user typed it) and the
schedules of its deployment (Prefect runs those). Previews come from the same objects."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.platform.db import audit
from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.platform.i18n import _, get_locale
from scriptflow_prefect.platform.models import utcnow
from scriptflow_prefect.platform.prefect import PrefectUnavailable
from scriptflow_prefect.schedules import prefect as schedules_prefect
from scriptflow_prefect.schedules.spec import (
    ScheduleError,
    ScheduleSpec,
    annotate,
    next_runs,
    parse_spec,
    to_prefect_schedules,
)
from scriptflow_prefect.schedules.words import describe

# Scripts use schedules (scripts.service builds a deployment's schedules here), so this module
# never imports scripts: it works on any object with the Script fields below.


class Script(Protocol):
    id: int
    name: str
    schedule: dict[str, Any] | None
    settings: dict[str, Any] | None
    deployment_id: str | None
    updated_at: datetime


class InvalidSchedule(ServiceError):
    """A schedule a person must correct (422); the message is translated."""

    def __init__(self, message: str):
        super().__init__(422, message)


def translate_error(exc: ScheduleError) -> InvalidSchedule:
    return InvalidSchedule(_(exc.msgid, **exc.params))


def spec_of(data: Any) -> ScheduleSpec:
    try:
        return parse_spec(data)
    except ScheduleError as exc:
        raise translate_error(exc) from None


def prefect_schedules_for(schedule: dict[str, Any] | None) -> list:
    """A deployment's schedules for a script's stored schedule (None: no schedule)."""
    return to_prefect_schedules(parse_spec(schedule)) if schedule else []


def schedule_to_dict(script: Script, after: datetime | None = None) -> dict[str, Any] | None:
    if not script.schedule:
        return None
    spec = parse_spec(script.schedule)
    runs = next_runs(spec, after) if spec.active else []
    return {**spec.model_dump(), "next_runs": runs}


def preview(data: dict[str, Any]) -> dict[str, Any]:
    """The next 5 runs of a schedule that is not saved yet, with notes and words."""
    after = data.get("after")
    if after is not None:
        try:
            after = datetime.fromisoformat(str(after).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidSchedule(_("after must be an ISO-8601 date and time.")) from None
    fields = {k: v for k, v in data.items() if k not in ("after", "next_runs")}
    # `active` is checked like the rest, but a preview shows the runs of the schedule on.
    spec = spec_of(fields).model_copy(update={"active": True})
    runs = next_runs(spec, after)
    return {
        "next_runs": runs,
        "notes": annotate(spec, runs),
        "description": describe(spec, get_locale()),
    }


def _unavailable(exc: Exception) -> ServiceError:
    return ServiceError(
        503, _("Prefect is not reachable, nothing was changed: %(err)s", err=str(exc)[:200])
    )


async def _put_schedules(script: Script) -> None:
    """Give the script's deployment the schedules of its stored schedule (the rest of the
    deployment is the script's business: scripts.deployment.sync_deployment)."""
    try:
        await schedules_prefect.replace_schedules(
            script.deployment_id, prefect_schedules_for(script.schedule)
        )
    except PrefectUnavailable as exc:
        raise _unavailable(exc) from exc


async def set_schedule(db: Session, user: User, script: Script, data: dict[str, Any]) -> Script:
    fields = {k: v for k, v in data.items() if k != "next_runs"}
    spec = spec_of(fields)
    old = script.schedule
    script.schedule = spec.model_dump(mode="json")
    settings = dict(script.settings or {})
    # Saving the schedule re-enables it after an automatic switch-off and clears the flag.
    settings.pop("disabled_reason", None)
    settings.pop("disabled_acknowledged", None)
    script.settings = settings
    script.updated_at = utcnow()
    try:
        await _put_schedules(script)  # switched on again even if Prefect had paused it
    except Exception:
        script.schedule = old
        raise
    audit(db, user.id, "schedule.set", script.name, script_id=script.id, schedule=script.schedule)
    return script


async def set_active(db: Session, user: User, script: Script, active: bool) -> Script:
    if not script.schedule:
        return script
    return await set_schedule(db, user, script, {**script.schedule, "active": active})


async def delete_schedule(db: Session, user: User, script: Script) -> None:
    old = script.schedule
    script.schedule = None
    try:
        await _put_schedules(script)
    except Exception:
        script.schedule = old
        raise
    audit(db, user.id, "schedule.delete", script.name, script_id=script.id)


async def schedule_states(scripts: list[Script]) -> dict[int, str]:
    """active / inactive / disabled (Prefect paused it after consecutive failures). A
    deployment Prefect does not have counts as active; any other failure is a 503."""

    async def one(script: Script) -> tuple[int, str]:
        spec = script.schedule or {}
        if not spec.get("active", True):
            return script.id, "inactive"
        if not script.deployment_id:
            return script.id, "active"
        try:
            schedules = await schedules_prefect.read_schedules(script.deployment_id)
        except PrefectUnavailable as exc:
            raise ServiceError(
                503,
                _(
                    "Prefect is not reachable, the schedules' state is unknown: %(err)s",
                    err=str(exc)[:200],
                ),
            ) from exc
        if schedules and not any(s.active for s in schedules):
            return script.id, "disabled"
        return script.id, "active"

    pairs = await asyncio.gather(*(one(s) for s in scripts if s.schedule))
    return dict(pairs)


async def scheduler_runs(
    script_ids: list[int] | None, *, next_limit: int
) -> schedules_prefect.SchedulerRuns:
    """Runs of these scripts (None: every script) in progress, next and late."""
    return await schedules_prefect.read_scheduler_runs(script_ids, next_limit=next_limit)
