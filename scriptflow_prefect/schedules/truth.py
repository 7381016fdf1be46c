"""When a script really runs: read from its deployment's schedules in Prefect, every time.

The overlay keeps the simple form as the user last saved it (`Script.schedule`); Prefect runs
the deployment's schedules, and power users change those with Prefect's CLI and UI. So every
page and API answer about *when* asks Prefect (one request for a whole page of scripts), and
says where the schedule came from:

- `scriptflow`: Prefect runs exactly what the form last wrote (active or not);
- `prefect`: Prefect's schedules differ (a cron, interval or RRULE added, the form's schedule
  replaced or given its own parameters): shown as they are, with their next runs;
- None: Prefect has no schedule for it (never set, or removed in Prefect).

The state tells why a schedule does not run: `inactive` (switched off in ScriptFlow),
`disabled` (the run policy switched it off after failures in a row: its last scheduled runs
all failed) or `paused_in_prefect` (anyone else, in Prefect: a paused schedule or deployment).
When Prefect cannot be reached, the last saved form is shown and `known` is False."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.prefect import PrefectUnavailable
from scriptflow_prefect.runs.policies import policy_from
from scriptflow_prefect.schedules import prefect as schedules_prefect
from scriptflow_prefect.schedules.foreign import as_dict, spec_of_schedules
from scriptflow_prefect.schedules.spec import (
    ScheduleSpec,
    crons_of,
    next_runs,
    parse_spec,
    schedule_dates,
)
from scriptflow_prefect.schedules.words import describe

Source = Literal["scriptflow", "prefect"]
State = Literal["active", "inactive", "disabled", "paused_in_prefect", "none"]
PREVIEW = 5
WHY_KEPT_SECONDS = 8.0  # under the 10 s in which a change made in Prefect must show
_WHY: dict[tuple[int, int], tuple[float, bool]] = {}  # (script, n) -> (when, failed)
# In Script.settings: its schedules were switched off here (set_active), whoever set them.
DEACTIVATED_HERE = "deactivated_here"
log = logging.getLogger(__name__)


class Script(Protocol):
    id: int
    schedule: dict[str, Any] | None
    settings: dict[str, Any] | None
    deployment_id: str | None


@dataclass
class Truth:
    source: Source | None
    state: State
    spec: ScheduleSpec | None  # the form's view, when the form can express what runs
    next_runs: list[datetime] = field(default_factory=list)
    prefect_schedules: list[dict[str, Any]] = field(default_factory=list)
    known: bool = True  # False: Prefect was not reachable, this is the last saved form
    removed_in_prefect: bool = False  # saved here, but Prefect has no schedule for it
    deployment_missing: bool = False  # the script's deployment is gone from Prefect
    deployment_paused: bool = False  # the whole deployment is paused in Prefect

    @property
    def next_run_at(self) -> datetime | None:
        return self.next_runs[0] if self.next_runs and self.known else None

    @property
    def scheduled(self) -> bool:
        return self.source is not None

    def words(self, locale: str) -> str | None:
        if self.source is None:
            return None
        if self.source == "scriptflow" and self.spec is not None:
            return describe(self.spec, locale)
        if self.spec is not None:
            text = describe(self.spec, locale)
        else:
            text = "; ".join(s["description"] for s in self.prefect_schedules)
        return _("%(schedule)s (set in Prefect)", schedule=text)

    def to_dict(self, locale: str) -> dict[str, Any] | None:
        """The API's schedule object; None when nothing is scheduled."""
        if self.source is None:
            return None
        form = self.spec.model_dump() if self.spec else {}
        return {
            "frequency": form.get("frequency"),
            "time": form.get("time"),
            "timezone": form.get("timezone") or _first_timezone(self.prefect_schedules),
            "days_of_week": form.get("days_of_week", []),
            "day_of_month": form.get("day_of_month"),
            "active": self.state == "active",
            "next_runs": self.next_runs,
            "source": self.source,
            "state": self.state,
            "description": self.words(locale),
            "prefect_schedules": self.prefect_schedules,
        }


def _first_timezone(schedules: list[dict[str, Any]]) -> str | None:
    return schedules[0]["timezone"] if schedules else None


def saved_truth(script: Script, after: datetime | None = None) -> Truth:
    """What the last saved form says, for when Prefect cannot be asked."""
    if not script.schedule:
        return Truth(source=None, state="none", spec=None, known=False)
    spec = parse_spec(script.schedule)
    runs = next_runs(spec, after) if spec.active else []
    state: State = "active" if spec.active else "inactive"
    return Truth(source="scriptflow", state=state, spec=spec, next_runs=runs, known=False)


def _dates(schedule: Any, start: datetime) -> list[datetime]:
    try:
        return schedule_dates(schedule.schedule, start, PREVIEW)
    except Exception:  # noqa: BLE001 - a valid cron with no date ever ("0 0 30 2 *")
        log.warning("no next runs for the Prefect schedule %s", schedule.schedule)
        return []


def _union_of_dates(schedules: list[Any], after: datetime | None, tz: str | None) -> list[datetime]:
    start = after or datetime.now(UTC)
    instants: set[float] = set()
    for s in schedules:
        instants.update(d.timestamp() for d in _dates(s, start))
    try:
        zone = ZoneInfo(tz or "UTC")
    except (ValueError, KeyError):  # a name Prefect took but this machine lacks
        zone = ZoneInfo("UTC")
    return [datetime.fromtimestamp(ts, zone) for ts in sorted(instants)[:PREVIEW]]


def _source(script: Script, schedules: list[Any]) -> Source | None:
    """scriptflow when Prefect runs what the form last wrote (read back the way the form
    writes crons, so "0 6 * * 1-5" retyped for weekdays is still the form's), all on or all
    off together; prefect for anything else."""
    if not schedules:
        return None
    if not script.schedule:
        return "prefect"
    saved = parse_spec(script.schedule)
    back = spec_of_schedules(schedules)  # None: mixed on/off, own parameters, not cron
    if back is None or back.timezone != saved.timezone:
        return "prefect"
    return "scriptflow" if sorted(crons_of(back)) == sorted(crons_of(saved)) else "prefect"


def _truth(script: Script, deployment: Any | None, after: datetime | None) -> Truth:
    schedules = list(deployment.schedules or []) if deployment is not None else []
    source = _source(script, schedules)
    if source is None:
        return Truth(
            source=None,
            state="none",
            spec=None,
            removed_in_prefect=bool(script.schedule),
            deployment_missing=deployment is None and bool(script.deployment_id),
        )
    paused = bool(deployment.paused)
    running = [] if paused else [s for s in schedules if s.active]
    described = [as_dict(s) for s in schedules]
    if source == "scriptflow":
        spec = parse_spec(script.schedule).model_copy(update={"active": bool(running)})
        runs = next_runs(spec, after) if running else []
    else:
        spec = spec_of_schedules(schedules)
        tz = spec.timezone if spec else _first_timezone(described)
        runs = _union_of_dates(running, after, tz) if running else []
    switched_off_here = (script.settings or {}).get(DEACTIVATED_HERE) or (
        source == "scriptflow" and not parse_spec(script.schedule).active
    )
    state: State = "active"
    if not running:
        state = "inactive" if switched_off_here and not paused else "paused_in_prefect"
    truth = Truth(source, state, spec, runs, described)
    truth.deployment_paused = paused
    return truth


async def read_truths(scripts: list[Script], after: datetime | None = None) -> dict[int, Truth]:
    """Each script's schedule as Prefect runs it. Raises PrefectUnavailable; callers that
    can show something anyway use `truths_or_saved`."""
    ids = [s.deployment_id for s in scripts if s.deployment_id]
    deployments = await schedules_prefect.read_deployments(ids)
    truths = {s.id: _truth(s, deployments.get(s.deployment_id or ""), after) for s in scripts}

    # A schedule that stopped by itself: the run policy's doing if the last scheduled runs
    # all failed; anyone else's in Prefect otherwise. One request per stopped schedule, kept
    # for a while: the dashboard asks every few seconds, and the answer changes only when a
    # scheduled run ends or someone switches the schedule (which ends the stop).
    async def why(script: Script) -> None:
        n = policy_from((script.settings or {}).get("policy")).disable_after_failures
        key = (script.id, n)
        kept = _WHY.get(key)
        if kept is None or time.monotonic() - kept[0] > WHY_KEPT_SECONDS:
            kept = time.monotonic(), await schedules_prefect.failed_in_a_row(*key)
            _WHY[key] = kept
        if kept[1]:
            truths[script.id].state = "disabled"

    # The policy switches schedules off one by one, never the whole deployment: a paused
    # deployment is someone's doing in Prefect, whatever its runs did.
    stopped = [
        s
        for s in scripts
        if truths[s.id].state == "paused_in_prefect" and not truths[s.id].deployment_paused
    ]
    await asyncio.gather(*(why(s) for s in stopped))
    if len(_WHY) > 10_000:  # bounded: deleted scripts' answers go
        _WHY.clear()
    return truths


async def truths_or_saved(scripts: list[Script], after: datetime | None = None) -> dict[int, Truth]:
    try:
        return await read_truths(scripts, after)
    except PrefectUnavailable:
        return {s.id: saved_truth(s, after) for s in scripts}
