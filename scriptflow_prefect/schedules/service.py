"""Between a script's simple schedule (kept in the overlay as the user typed it) and the
schedules of its deployment (Prefect runs those). Previews come from the same objects."""

from __future__ import annotations

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
from scriptflow_prefect.schedules.truth import DEACTIVATED_HERE, Truth, read_truths
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


def schedule_to_dict(truth: Truth) -> dict[str, Any] | None:
    """The API's schedule object for a script's schedule as Prefect runs it."""
    return truth.to_dict(get_locale())


async def truth_of(script: Script) -> Truth:
    """One script's schedule as Prefect runs it (503 if Prefect cannot say)."""
    try:
        return (await read_truths([script]))[script.id]
    except PrefectUnavailable as exc:
        raise _unavailable(exc) from exc


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
    deployment is the script's business: scripts.deployment.sync_deployment). Saving an
    active schedule also lifts a pause of the whole deployment: the form says "Active"."""
    active = bool(script.schedule and script.schedule.get("active", True))
    try:
        await schedules_prefect.replace_schedules(
            script.deployment_id, prefect_schedules_for(script.schedule), unpause=active
        )
    except PrefectUnavailable as exc:
        raise _unavailable(exc) from exc


def _missing_deployment(script: Script) -> str:
    return _(
        "%(name)s has no deployment in Prefect (deleted there?): repair it on the scheduler "
        "status page first.",
        name=script.name,
    )


class SetInPrefect(ServiceError):
    """Saving the simple form would replace schedules a power user set in Prefect (409)."""

    def __init__(self, truth: Truth):
        super().__init__(
            409,
            _(
                "This script runs on a schedule set in Prefect: %(words)s. Saving the form "
                "replaces it; confirm that you want to replace it.",
                words=truth.words(get_locale()) or "",
            ),
        )


async def set_schedule(
    db: Session, user: User, script: Script, data: dict[str, Any], *, replace: bool = False
) -> Script:
    """Save the simple form. Schedules set in Prefect that the form cannot express are
    never silently overwritten: without `replace`, a 409 says what would be lost."""
    fields = {k: v for k, v in data.items() if k not in ("next_runs", "replace")}
    spec = spec_of(fields)
    if script.deployment_id:
        truth = await truth_of(script)
        if truth.deployment_missing:
            raise ServiceError(409, _missing_deployment(script))
        if truth.source == "prefect" and not replace:
            raise SetInPrefect(truth)
    old = script.schedule
    script.schedule = spec.model_dump(mode="json")
    settings = dict(script.settings or {})
    # Saving the schedule re-enables it after an automatic switch-off and clears the flag.
    settings.pop("disabled_reason", None)
    settings.pop("disabled_acknowledged", None)
    settings.pop(DEACTIVATED_HERE, None)  # the form's Active box says it now
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
    """Switch the script's schedules on or off in Prefect where they are, whoever set them:
    nothing is replaced, so a schedule set in Prefect stays as it was."""
    if not script.deployment_id:
        return script
    try:
        found = await schedules_prefect.set_schedules_active(script.deployment_id, active)
    except PrefectUnavailable as exc:
        raise _unavailable(exc) from exc
    if not found:
        raise ServiceError(409, _missing_deployment(script))
    if script.schedule:
        script.schedule = {**script.schedule, "active": active}
    # Remembered, so that a schedule set in Prefect and switched off here reads "inactive",
    # not "paused in Prefect"; switching on also ends an automatic switch-off.
    settings = {
        k: v
        for k, v in (script.settings or {}).items()
        if k not in ("disabled_reason", "disabled_acknowledged", DEACTIVATED_HERE)
    }
    script.settings = settings if active else {**settings, DEACTIVATED_HERE: True}
    script.updated_at = utcnow()
    audit(
        db,
        user.id,
        "schedule.activate" if active else "schedule.deactivate",
        script.name,
        script_id=script.id,
    )
    return script


async def delete_schedule(db: Session, user: User, script: Script) -> None:
    """Remove every schedule of the script's deployment, those set in Prefect too (the page
    asks first)."""
    old = script.schedule
    script.schedule = None
    try:
        await _put_schedules(script)
    except Exception:
        script.schedule = old
        raise
    audit(db, user.id, "schedule.delete", script.name, script_id=script.id)


async def scheduler_runs(
    script_ids: list[int] | None, *, next_limit: int
) -> schedules_prefect.SchedulerRuns:
    """Runs of these scripts (None: every script) in progress, next and late."""
    return await schedules_prefect.read_scheduler_runs(script_ids, next_limit=next_limit)
