"""One builder of Prefect flow-run filters for every run list: history pages, search, the
newest run of each script, summaries and counts.

Prefect's tag filters are JSON tests on SQLite (~2.5 µs a run, for every run in reach), so the
filter uses indexed columns wherever it can: the scripts' deployments (when ScriptFlow knows
them all: history.service.scope), state type and expected start time. Tags are used for the
trigger, for every script at once (`scriptflow`, tested only on the runs SQLite visits while
it walks an index for the page), and for scripts whose deployments ScriptFlow does not know.

Example::

    RunQuery(script_ids=[7], statuses=[Status.FAILED]).flow_run_filter()
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateName,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)

from scriptflow_prefect.platform.prefect_names import TAG, TIMED_OUT_STATE_NAME, script_tag
from scriptflow_prefect.runs.models import Status, Trigger, states_of


def state_filter(statuses: list[str]) -> FlowRunFilterState:
    """Prefect's state condition for these statuses (timed out: FAILED named TimedOut)."""
    wanted = {Status(s) for s in statuses}
    types = {t for s in wanted for t in states_of(s)}
    name = None
    if Status.FAILED in wanted and Status.TIMED_OUT not in wanted:
        name = FlowRunFilterStateName(not_any_=[TIMED_OUT_STATE_NAME])
    elif wanted == {Status.TIMED_OUT}:
        name = FlowRunFilterStateName(any_=[TIMED_OUT_STATE_NAME])
    return FlowRunFilterState(type=FlowRunFilterStateType(any_=sorted(types)), name=name)


@dataclass
class RunQuery:
    script_ids: list[int] | None = None  # None: every script (an admin)
    deployment_ids: list[UUID] | None = None  # every deployment those scripts ever had
    statuses: list[str] | None = None
    trigger: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    run_ids: list[UUID] | None = None
    edge: datetime | None = None  # where history ends (default: now, give or take a second)

    @property
    def empty(self) -> bool:
        return self.script_ids == [] or self.run_ids == []

    def end(self) -> datetime:
        return self.edge or datetime.now(UTC) + timedelta(seconds=1)

    def flow_run_filter(self) -> FlowRunFilter:
        f = FlowRunFilter()
        trigger_tags = [Trigger(self.trigger).tag] if self.trigger else []
        tags_any = None
        if self.script_ids is None:
            # Every script: ScriptFlow's tag. A list of deployments would make SQLite read
            # every run of them and sort them all.
            tags_all = [TAG, *trigger_tags] if trigger_tags else []
            tags_any = None if trigger_tags else [TAG]
        elif self.deployment_ids:  # the scripts' deployments: an indexed column
            f.deployment_id = FlowRunFilterDeploymentId(any_=self.deployment_ids)
            tags_all = trigger_tags
        else:  # the runs of deleted scripts keep their `script-<id>` tag
            tags_any = [script_tag(i) for i in self.script_ids]
            tags_all = trigger_tags
        if tags_all or tags_any:
            f.tags = FlowRunFilterTags(all_=tags_all or None, any_=tags_any)
        if self.statuses:
            f.state = state_filter(self.statuses)
        # History is what has happened: runs scheduled for later are not in it (the next run
        # is shown on its own).
        now = self.end()
        before = min(self.until, now) if self.until else now
        f.expected_start_time = FlowRunFilterExpectedStartTime(after_=self.since, before_=before)
        if self.run_ids:
            f.id = FlowRunFilterId(any_=self.run_ids)
        return f
