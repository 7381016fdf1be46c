"""What a scheduled run does about the runs around it: missed times, overlap, retry after a
failure and switching the schedule off after consecutive failures.

Prefect's scheduler never backfills and its automations count failures in a time window,
not in a row (ARCHITECTURE.md), so these rules run inside the `run_script` flow, which can
read the deployment's recent runs. Every decision is logged to the run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Scheduled
from pydantic import BaseModel, Field

from scriptflow_prefect.runs.messages import RunMessage
from scriptflow_prefect.runs.models import Trigger, retry_number, retry_tags


class RunPolicy(BaseModel):
    """Per-script settings, passed to the flow as a deployment parameter."""

    retries: int = Field(1, ge=0, le=3)
    retry_delay_seconds: int = Field(300, ge=1, le=86400)
    disable_after_failures: int = Field(3, ge=0, le=100)  # 0: never
    missed: Literal["once", "skip"] = "once"
    overlap: Literal["skip", "queue"] = "skip"
    # A scheduled run starting later than this was missed (ScriptFlow was down).
    late_after_seconds: int = Field(120, ge=10, le=86400)


@dataclass
class Decision:
    run: bool
    message: RunMessage | None = None  # why not


def _others(client, flow_run, state_types, expected_after=None, expected_before=None) -> list:
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(not_any_=[flow_run.id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=state_types)),
            expected_start_time=FlowRunFilterExpectedStartTime(
                after_=expected_after, before_=expected_before
            )
            if expected_after or expected_before
            else None,
        ),
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[flow_run.deployment_id])),
        limit=200,
    )
    return runs


def before_start(client, flow_run, policy: RunPolicy, now: datetime | None = None) -> Decision:
    """Skip a missed or overlapping scheduled run, or wait for the previous one (queue)."""
    if Trigger.of(flow_run) != Trigger.SCHEDULED or flow_run.deployment_id is None:
        return Decision(True)
    now = now or datetime.now(UTC)
    expected = flow_run.expected_start_time or now
    late = now - expected > timedelta(seconds=policy.late_after_seconds)
    if late:
        at = expected.isoformat(timespec="minutes")
        if policy.missed == "skip":
            return Decision(False, RunMessage("missed_skipped", {"when": at}))
        # A newer due time that already ran counts too: the runs of a catch-up are not always
        # picked up in the same poll, and the newest may be over before this one looks.
        due = _others(
            client,
            flow_run,
            [
                StateType.SCHEDULED,
                StateType.PENDING,
                StateType.RUNNING,
                StateType.COMPLETED,
                StateType.FAILED,
                StateType.CRASHED,
            ],
            expected_after=expected,
            expected_before=now,
        )
        newer_late = [
            r
            for r in due
            if Trigger.of(r) == Trigger.SCHEDULED
            and r.expected_start_time
            and expected < r.expected_start_time <= now
        ]
        if newer_late:
            return Decision(False, RunMessage("missed_caught_up", {"when": at}))
    # Only runs that started before this one count (ties by id): two runs that start together
    # must not both skip, nor both wait for each other; and the late runs of a catch-up that
    # give way to this one are not overlapping it.
    me = client.read_flow_run(flow_run.id)

    def order(r):
        return (r.start_time or now, str(r.id))

    def previous() -> list:
        return [
            r
            for r in _others(client, flow_run, [StateType.RUNNING])
            if order(r) < order(me) and not _gives_way_as_missed(r, expected, policy)
        ]

    running = previous()
    if running:
        if policy.overlap == "skip":
            return Decision(False, RunMessage("overlap_skipped"))
        while running:  # queue: wait for the previous run, then start
            time.sleep(2)
            running = previous()
    return Decision(True)


def _gives_way_as_missed(run, expected: datetime, policy: RunPolicy) -> bool:
    """`run` is a late scheduled run that skips itself as missed (before_start) in favour of
    the run due at `expected`."""
    if Trigger.of(run) != Trigger.SCHEDULED or run.expected_start_time is None:
        return False
    started = run.start_time or datetime.now(UTC)
    if started - run.expected_start_time <= timedelta(seconds=policy.late_after_seconds):
        return False
    return policy.missed == "skip" or run.expected_start_time < expected <= started


def after_failure(client, flow_run, policy: RunPolicy, log) -> None:
    """Schedule a retry, and switch the schedule off after too many failures in a row."""
    trigger = Trigger.of(flow_run)
    if trigger not in (Trigger.SCHEDULED, Trigger.RETRY) or flow_run.deployment_id is None:
        return
    number = retry_number(flow_run)
    if number < policy.retries:
        when = datetime.now(UTC) + timedelta(seconds=policy.retry_delay_seconds)
        client.create_flow_run_from_deployment(
            flow_run.deployment_id,
            parameters=flow_run.parameters,
            state=Scheduled(scheduled_time=when),
            tags=retry_tags(number + 1),
        )
        log.warning(
            "Retry %s of %s scheduled for %s",
            number + 1,
            policy.retries,
            when.isoformat(timespec="seconds"),
        )
    if policy.disable_after_failures and trigger == Trigger.SCHEDULED:
        finished = _others(
            client, flow_run, [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]
        )
        scheduled = sorted(
            (r for r in finished if Trigger.of(r) == Trigger.SCHEDULED),
            key=lambda r: r.expected_start_time or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )
        in_a_row = 1  # this run
        for r in scheduled:
            if r.state is None or r.state.type == StateType.COMPLETED:
                break
            in_a_row += 1
        if in_a_row >= policy.disable_after_failures:
            for schedule in client.read_deployment_schedules(flow_run.deployment_id):
                if schedule.active:
                    client.update_deployment_schedule(
                        flow_run.deployment_id, schedule.id, active=False
                    )
            log.error(
                "%s scheduled runs failed in a row: the schedule is switched off until "
                "someone saves it again.",
                in_a_row,
            )


def policy_from(value: dict[str, Any] | None) -> RunPolicy:
    return RunPolicy(**(value or {}))
