"""The dead-man rule, server side: a run whose worker vanished for good ends Crashed.

A worker that comes back reconciles its own runs (recovery.py); one that never does (its
machine is gone) cannot. Prefect's way (docs: "How to detect and respond to zombie flows"):
every run in progress emits a `prefect.flow-run.heartbeat` event every
SCRIPTFLOW_RUN_HEARTBEAT_SECONDS (Prefect's engine does it from a thread of its own, also in
our in-process worker: PREFECT_FLOWS_HEARTBEAT_FREQUENCY, platform/prefect_env.py), and one
automation with a proactive trigger crashes a ScriptFlow run (tag `scriptflow`) that was
heard from once and then neither beat again nor ended within SCRIPTFLOW_DEAD_MAN_SECONDS.

Its message has no parameters and no label (the server writes it): runs/messages.py knows it
by its text (`worker_lost`), for translation. Load: one event per running run per heartbeat
(10 runs at 30 s: 20 events a minute), each an insert in Prefect's events table."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.filters import AutomationFilter, AutomationFilterTags
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from scriptflow_prefect.platform.prefect_names import SKIPPED_STATE_NAME, TAG, TIMED_OUT_STATE_NAME
from scriptflow_prefect.runs.messages import RunMessage

log = logging.getLogger("scriptflow.recovery")
DEAD_MAN_TAG = "scriptflow-dead-man"
HEARTBEAT = "prefect.flow-run.heartbeat"
# Every state a run can end in, by the names ScriptFlow gives them (a timeout is a Failed
# state named TimedOut, a skipped run a Cancelled one named Skipped).
ENDED = [
    "Completed",
    "Failed",
    "Cancelled",
    "Crashed",
    TIMED_OUT_STATE_NAME,
    SKIPPED_STATE_NAME,
]


def automation(within_seconds: int) -> AutomationCore:
    return AutomationCore(
        name="ScriptFlow · runs whose worker stopped answering",
        description=(
            "Marks a ScriptFlow run Crashed when its worker sent no heartbeat for "
            f"{within_seconds} s and the run did not end. Managed by ScriptFlow "
            "(SCRIPTFLOW_DEAD_MAN_SECONDS): changes made here are undone at its next start."
        ),
        enabled=True,
        tags=[DEAD_MAN_TAG],
        trigger=EventTrigger(
            after={HEARTBEAT},
            expect={HEARTBEAT, *(f"prefect.flow-run.{name}" for name in ENDED)},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            # Only ScriptFlow's runs: another flow on this server may beat at its own pace.
            match_related={
                "prefect.resource.role": "tag",
                "prefect.resource.id": f"prefect.tag.{TAG}",
            },
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                state=StateType.CRASHED,
                message=RunMessage("worker_lost").text,
                force=True,
            )
        ],
    )


def _signature(a) -> str:
    return json.dumps(
        {
            "name": a.name,
            "description": a.description,
            "enabled": a.enabled,
            "trigger": a.trigger.model_dump(mode="json", exclude={"id"}),
            "actions": [x.model_dump(mode="json") for x in a.actions],
        },
        sort_keys=True,
        default=str,
    )


async def ensure_automation(client: PrefectClient, within_seconds: int) -> None:
    """Create the automation, or bring it in step; one only (idempotent, at each start)."""
    want = automation(within_seconds)
    existing = await client.read_automations(
        automations=AutomationFilter(tags=AutomationFilterTags(all_=[DEAD_MAN_TAG]))
    )
    for extra in existing[1:]:
        await client.delete_automation(extra.id)
    if not existing:
        await client.create_automation(want)
    elif _signature(existing[0]) != _signature(want):
        await client.update_automation(existing[0].id, want)
