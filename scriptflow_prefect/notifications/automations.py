"""Keeping each script's Prefect automations in step with its preferences.

Each script has at most two automations, "ScriptFlow · <script> · failure|success" (tags
`scriptflow-email`, `script-<id>`, `on-<kind>`: the names and tags from before channels
existed), with one send-notification action per channel the script uses."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from scriptflow_prefect.notifications import digests, events
from scriptflow_prefect.notifications import prefect as notifications_prefect
from scriptflow_prefect.notifications.channels import CHANNELS
from scriptflow_prefect.notifications.models import NotificationPref
from scriptflow_prefect.notifications.prefs import effective_prefs, recipients_of
from scriptflow_prefect.platform import prefect_names
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.scripts.models import Script

# What Prefect emits when a run ends (state names: the flow names a timeout "TimedOut").
EVENTS = {
    "failure": ["prefect.flow-run.Failed", "prefect.flow-run.TimedOut", "prefect.flow-run.Crashed"],
    "success": ["prefect.flow-run.Completed"],
}
_locks: dict[int, asyncio.Lock] = {}


def lock() -> asyncio.Lock:
    """One sync at a time per event loop, so that two never create the same automation."""
    loop = asyncio.get_running_loop()
    return _locks.setdefault(id(loop), asyncio.Lock())


def automation_for(script: Script, kind: str, actions: list, told: list[str]) -> AutomationCore:
    """The automation that tells `told` (for the Prefect UI, which is not translated) when
    a run of `script` fails (failed, timed out, crashed) or succeeds."""
    when = "fails, times out or crashes" if kind == "failure" else "succeeds"
    return AutomationCore(
        name=f"ScriptFlow · {script.name} · {kind}",
        description=(
            f"Tells {', '.join(told)} when a run of {script.name} {when}. Managed by "
            "ScriptFlow: change it on the script's page there, not here."
        ),
        enabled=True,
        tags=[prefect_names.EMAIL_TAG, prefect_names.script_tag(script.id), f"on-{kind}"],
        owner_resource=events.script_resource(script.id),
        trigger=EventTrigger(
            expect=set(EVENTS[kind]),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            # Runs carry their deployment's tags, and the tag outlives a rename.
            match_related={
                "prefect.resource.role": "tag",
                "prefect.resource.id": f"prefect.tag.{prefect_names.script_tag(script.id)}",
            },
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=actions,
    )


def wanted(db: Session, settings: Settings, script: Script) -> dict[str, AutomationCore]:
    """The automations the script should have, by kind."""
    if script.deleted_at is not None:
        return {}
    prefs = effective_prefs(db, script)
    recipients = recipients_of(db, script, prefs)
    out = {}
    for kind in ("failure", "success"):
        if not prefs[f"on_{kind}"]:
            continue
        actions, told = [], []
        for name in prefs["channels"]:
            channel = CHANNELS.get(name)
            if channel is None or not channel.is_configured(db):
                continue
            action = channel.action(db, settings, script, kind, recipients)
            if action is not None:
                actions.append(action)
                told += [r["email"] for r in recipients] if name == "email" else [name]
        if actions:
            out[kind] = automation_for(script, kind, actions, told)
    return out


def _signature(a) -> str:
    return json.dumps(
        {
            "name": a.name,
            "description": a.description,
            "enabled": a.enabled,
            "tags": sorted(a.tags or []),
            "expect": sorted(a.trigger.expect),
            "related": a.trigger.model_dump(mode="json")["match_related"],
            "actions": [
                {
                    "block": str(getattr(x, "block_document_id", "")),
                    "subject": getattr(x, "subject", ""),
                    "body": getattr(x, "body", ""),
                }
                for x in a.actions
            ],
        },
        sort_keys=True,
    )


def _kind_of(a) -> str | None:
    return next((t[3:] for t in a.tags or [] if t in ("on-failure", "on-success")), None)


def script_of(a) -> int | None:
    for t in a.tags or []:
        if t.startswith("script-") and t[7:].isdigit():
            return int(t[7:])
    return None


async def sync_script(
    db: Session, settings: Settings, script: Script, existing: list | None = None
) -> list[str]:
    """Create, update or delete the script's automations to match its preferences."""
    want = wanted(db, settings, script)
    if existing is None:
        existing = await notifications_prefect.read_email_automations(script.id)
    ids: list[str] = []
    kept: set[str] = set()
    for a in existing:
        kind = _kind_of(a)
        if kind in want and kind not in kept:  # keep one per kind, up to date
            kept.add(kind)
            if _signature(a) != _signature(want[kind]):
                await notifications_prefect.update_automation(a.id, want[kind])
            ids.append(str(a.id))
        else:
            await notifications_prefect.delete_automation(a.id)
    for kind, core in want.items():
        if kind not in kept:
            ids.append(str(await notifications_prefect.create_automation(core)))
    row = db.get(NotificationPref, script.id)
    if row is not None and row.automation_ids != ids:
        row.automation_ids = ids
    return ids


async def sync_all(db: Session, settings: Settings) -> None:
    """Every script's automations and the digest deployments. Raises PrefectUnavailable."""
    existing = await notifications_prefect.read_email_automations()
    by_script: dict[int | None, list] = {}
    for a in existing:
        by_script.setdefault(script_of(a), []).append(a)
    for a in by_script.pop(None, []):
        await notifications_prefect.delete_automation(a.id)
    scripts = db.scalars(
        select(Script).where(
            or_(Script.deleted_at.is_(None), Script.id.in_([i for i in by_script if i]))
        )
    )
    for script in scripts:
        await sync_script(db, settings, script, by_script.pop(script.id, []))
    for leftovers in by_script.values():  # scripts this database does not know
        for a in leftovers:
            await notifications_prefect.delete_automation(a.id)
    await digests.sync_digests(db, settings)
