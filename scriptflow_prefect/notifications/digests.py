"""What a daily or weekly summary email says: runs and failures per script, the slowest
scripts, schedules switched off after failures, and what runs next. Read from Prefect."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from scriptflow_prefect.platform.prefect_names import TAG, script_tag
from scriptflow_prefect.runs.models import run_to_dict

PERIODS = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
FAILURES = ("failed", "timed_out", "crashed")
RUN_SCAN_LIMIT = 2000
SLOWEST = 5
NEXT_RUNS = 10


@dataclass
class ScriptFacts:
    id: int
    name: str
    runs: int = 0
    failures: int = 0
    succeeded: int = 0
    last_status: str | None = None
    last_failure_at: datetime | None = None
    longest_seconds: float | None = None
    total_seconds: float = 0.0
    timed: int = 0
    disabled: bool = False
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def average_seconds(self) -> float | None:
        return self.total_seconds / self.timed if self.timed else None


@dataclass
class Facts:
    since: datetime
    until: datetime
    scripts: dict[int, ScriptFacts]
    upcoming: list[dict[str, Any]]

    def summary(self, script_ids: list[int], public_url: str) -> dict[str, Any]:
        """The template context for one recipient, who gets only their scripts."""
        mine = [self.scripts[i] for i in script_ids if i in self.scripts]
        base = public_url.rstrip("/")
        timed = [s for s in mine if s.longest_seconds is not None]
        return {
            "since": self.since,
            "until": self.until,
            "runs": sum(s.runs for s in mine),
            "failures": sum(s.failures for s in mine),
            "scripts": sorted(mine, key=lambda s: s.name.lower()),
            "failing": sorted(
                [s for s in mine if s.failures], key=lambda s: (-s.failures, s.name.lower())
            ),
            "slowest": sorted(timed, key=lambda s: -(s.longest_seconds or 0))[:SLOWEST],
            "disabled": [s for s in mine if s.disabled],
            "upcoming": [u for u in self.upcoming if u["script_id"] in script_ids][:NEXT_RUNS],
            "url": base,
            "runs_url": f"{base}/runs",
        }


def collect(client, scripts: dict[int, str], since: datetime, until: datetime) -> Facts:
    """Facts about `scripts` (id -> name) between `since` and `until` (a sync Prefect client)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterTags,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    facts = {i: ScriptFacts(id=i, name=n) for i, n in scripts.items()}
    tags = [script_tag(i) for i in scripts]
    if not tags:
        return Facts(since, until, facts, [])
    final = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]
    offset = 0
    while offset < RUN_SCAN_LIMIT:
        batch = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[TAG], any_=tags),
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since, before_=until),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=final)),
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=200,
            offset=offset,
        )
        for flow_run in batch:
            _count(facts, run_to_dict(flow_run), flow_run)
        if len(batch) < 200:
            break
        offset += len(batch)

    for deployment in client.read_deployments(
        deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[TAG]))
    ):
        sid = (deployment.parameters or {}).get("script_id")
        if (
            sid in facts
            and deployment.schedules
            and not any(s.active for s in deployment.schedules)
        ):
            # Switched off by the run policy after failures in a row (the user's own "off"
            # keeps the last run as it was, which rarely is a failure).
            facts[sid].disabled = facts[sid].last_status in FAILURES

    upcoming = []
    for flow_run in client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[TAG], any_=tags),
            expected_start_time=FlowRunFilterExpectedStartTime(after_=until),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        limit=50,
    ):
        sid = (flow_run.parameters or {}).get("script_id")
        if sid in facts:
            upcoming.append(
                {"script_id": sid, "name": facts[sid].name, "at": flow_run.expected_start_time}
            )
    return Facts(since, until, facts, upcoming)


def _count(facts: dict[int, ScriptFacts], run: dict[str, Any], flow_run) -> None:
    sid = run["script_id"]
    if sid not in facts:
        return
    f = facts[sid]
    if f.runs == 0:  # newest first: the first one seen is the latest
        f.last_status = run["status"]
        f.name = run["script_name"] or f.name
    f.runs += 1
    f.statuses[run["status"]] = f.statuses.get(run["status"], 0) + 1
    if run["status"] in FAILURES:
        f.failures += 1
        f.last_failure_at = f.last_failure_at or run["ended_at"] or run["scheduled_at"]
    elif run["status"] == "succeeded":
        f.succeeded += 1
    if run["duration_seconds"] is not None:
        f.timed += 1
        f.total_seconds += run["duration_seconds"]
        f.longest_seconds = max(f.longest_seconds or 0.0, run["duration_seconds"])
