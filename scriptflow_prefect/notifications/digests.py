"""Daily and weekly summary emails: who gets which scripts (the `send_digest/daily|weekly`
deployments, kept in step here), and what a summary says: runs and failures per script, the
slowest scripts, schedules switched off after failures, and what runs next (read from Prefect
by the send_digest flow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule
from sqlalchemy import select
from sqlalchemy.orm import Session

from scriptflow_prefect.notifications import attempts, config, events, outbox
from scriptflow_prefect.notifications import prefect as notifications_prefect
from scriptflow_prefect.notifications.channels import CHANNELS
from scriptflow_prefect.notifications.channels.email import mailer
from scriptflow_prefect.notifications.prefs import effective_prefs, recipients_of
from scriptflow_prefect.platform.prefect_names import EMAIL_BLOCK, TAG, script_tag
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.runs.models import run_to_dict
from scriptflow_prefect.scripts.models import Script

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
    # SQLite's json_array() takes at most 127 arguments: past that Prefect's tag filter
    # answers 500, so many scripts are read as all of ScriptFlow's runs, counted by script.
    wanted = tags if len(tags) <= 100 else None
    final = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]
    offset = 0
    while offset < RUN_SCAN_LIMIT:
        batch = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[TAG], any_=wanted),
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
            tags=FlowRunFilterTags(all_=[TAG], any_=wanted),
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


# -- who gets which digest: the send_digest deployments ---------------------------------------
def _cron(time_of_day: str, weekday: str | None) -> str:
    hour, minute = (int(x) for x in time_of_day.split(":"))
    dow = "*" if weekday is None else str((config.WEEKDAYS.index(weekday) + 1) % 7)
    return f"{minute} {hour} * * {dow}"


def digest_plans(db: Session) -> dict[str, list[dict[str, Any]]]:
    """Per period, each recipient with the scripts their digest covers."""
    plans: dict[str, dict[str, dict[str, Any]]] = {"daily": {}, "weekly": {}}
    for script in db.scalars(
        select(Script).where(Script.deleted_at.is_(None)).order_by(Script.name)
    ):
        prefs = effective_prefs(db, script)
        if prefs["digest"] not in plans:
            continue
        for r in recipients_of(db, script, prefs):
            entry = plans[prefs["digest"]].setdefault(r["email"].lower(), {**r, "scripts": []})
            entry["scripts"].append({"id": script.id, "name": script.name})
    return {period: list(p.values()) for period, p in plans.items()}


async def sync_digests(db: Session, settings: Settings) -> None:
    d = config.defaults(db)
    configured = CHANNELS["email"].is_configured(db)
    plans = digest_plans(db) if configured else {"daily": [], "weekly": []}
    for period, recipients in plans.items():
        if not recipients:
            await notifications_prefect.delete_digest_deployment(period)
            continue
        cron = _cron(d["digest_time"], d["digest_weekday"] if period == "weekly" else None)
        await notifications_prefect.upsert_digest_deployment(
            period,
            {"period": period, "recipients": recipients, "block_name": EMAIL_BLOCK},
            [
                DeploymentScheduleCreate(
                    schedule=CronSchedule(cron=cron, timezone=settings.timezone)
                )
            ],
        )


# -- sending one (the send_digest flow, in the worker) -----------------------------------------
def send_digest_email(
    config: mailer.SmtpConfig,
    msg: EmailMessage,
    retry_delays: list[float],
    period: str,
    email: str,
    payload: dict[str, Any],
    flow_run_id: str | None,
) -> str:
    """Through the outbox when this worker has ScriptFlow's database (a sender loop retries
    a failure), else with the block's short retries. "sent", "retrying", "failed", ..."""
    resource, name = events.digest_resource(period), f"{period} digest"
    db = outbox.local_db()
    if db is not None:
        return attempts.write_and_try(
            db,
            attempts.smtp_sender(config),
            channel="email",
            message=bytes(msg),
            resource_id=resource,
            resource_name=name,
            payload=payload,
            recipient=email,
            dedupe_key=f"digest:{flow_run_id}:{email.lower()}" if flow_run_id else None,
        )
    result = mailer.deliver_sync(config, msg, retry_delays)
    payload = {**payload, "attempts": result.attempts, "errors": result.errors}
    if result.sent:
        events.record(events.SENT, resource, name, recipient=email, payload=payload)
        return "sent"
    events.record(
        events.FAILED, resource, name, recipient=email, payload={**payload, "reason": result.reason}
    )
    return "failed"
