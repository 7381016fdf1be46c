"""Repairs of drift (scripts/drift.py): Prefect is made to match ScriptFlow again, through
the same `sync_deployment` every edit uses (parameters, tags, pool; it leaves the schedules
set in Prefect alone), without losing a deployment's schedules or its runs' history.

Each repair reads Prefect again first: an item that has gone meanwhile is a 404, not a
second deletion. Audited as `drift.repair`."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.history.service import ScriptDeployment
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.db import audit
from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.scripts import prefect as scripts_prefect
from scriptflow_prefect.scripts.deployment import sync_deployment
from scriptflow_prefect.scripts.drift import DriftItem, detect, visible
from scriptflow_prefect.scripts.models import Script

log = logging.getLogger("scriptflow.drift")


def _unreachable(exc: Exception) -> ServiceError:
    return ServiceError(
        503, _("Prefect is not reachable, nothing was changed: %(err)s", err=str(exc)[:200])
    )


async def repair_one(db: Session, user: User, item_id: str) -> DriftItem:
    """Repair the item `item_id` as it is now. 404: no such item (repaired meanwhile, or not
    this user's); 409: one that is information only (a concurrency limit)."""
    if not user.is_admin:
        raise ServiceError(403, _("Only an administrator can repair drift."))
    try:
        items = visible(await detect(db), user)
    except platform_prefect.PrefectUnavailable as exc:
        raise _unreachable(exc) from exc
    item = next((i for i in items if i.id == item_id), None)
    if item is None:
        raise ServiceError(
            404, _("There is no such drift item (repaired already?): %(id)s.", id=item_id)
        )
    if not item.repairable:
        raise ServiceError(409, _("This is shown for information only: %(msg)s", msg=item.message))
    await _repair(db, item)
    audit(db, user.id, "drift.repair", _target(item), kind=item.kind, **_detail(item))
    db.commit()
    return item


async def repair_all(
    db: Session, user: User
) -> tuple[list[DriftItem], list[tuple[DriftItem, str]]]:
    """Repair every repairable item, one at a time, each read afresh (one repair may settle
    others: a deployment made again has ScriptFlow's parameters too). Returns what was
    repaired and what failed with its reason."""
    if not user.is_admin:
        raise ServiceError(403, _("Only an administrator can repair drift."))
    repaired: list[DriftItem] = []
    failed: list[tuple[DriftItem, str]] = []
    tried: set[str] = set()
    while True:
        try:
            items = await detect(db)
        except platform_prefect.PrefectUnavailable as exc:
            if repaired or failed:
                break
            raise _unreachable(exc) from exc
        todo = [i for i in items if i.repairable and i.id not in tried]
        if not todo:
            break
        # Deployments made or adopted first: orphans may be what a missing script adopts.
        item = sorted(todo, key=lambda i: i.kind != "missing")[0]
        tried.add(item.id)
        try:
            await _repair(db, item)
        except (ServiceError, platform_prefect.PrefectUnavailable) as exc:
            db.rollback()
            failed.append((item, str(exc)))
            continue
        audit(db, user.id, "drift.repair", _target(item), kind=item.kind, **_detail(item))
        db.commit()
        repaired.append(item)
    return repaired, failed


def _target(item: DriftItem) -> str:
    if item.script is not None:
        return item.script.name
    return item.deployment.name if item.deployment is not None else ""


def _detail(item: DriftItem) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if item.deployment is not None:
        detail["deployment"] = f"{item.deployment.name} ({item.deployment.id})"
    if item.script is not None:
        detail["script_id"] = item.script.id
    return detail


async def _repair(db: Session, item: DriftItem) -> None:
    try:
        if item.kind == "missing":
            await _make_again_or_adopt(db, item.script, item.candidate)
        elif item.kind == "renamed":
            await _rename(db, item.script, item.deployment)
        elif item.kind == "orphan":
            await _delete_orphan(db, item)
        else:  # parameters, tags, work pool: what every save writes
            await sync_deployment(item.script)
    except platform_prefect.PrefectUnavailable as exc:
        raise _unreachable(exc) from exc


async def _make_again_or_adopt(db: Session, script: Script | None, candidate) -> None:
    assert script is not None
    if candidate is None:
        script.deployment_id = None  # gone: sync_deployment makes it under the script's name
        await sync_deployment(script)
        return
    if candidate.name != script.name:
        await _rename(db, script, candidate)
    else:
        script.deployment_id = str(candidate.id)
        await sync_deployment(script)  # remembers it as the script's


async def _rename(db: Session, script: Script | None, old) -> None:
    """Prefect has no rename (its DeploymentUpdate has no name): make the deployment under the
    script's name (sync_deployment gives it the old one's schedules, pause and concurrency
    limit), then delete the old one. The old one's runs keep its id,
    which stays the script's (history finds them by it)."""
    assert script is not None
    script.deployment_id = str(old.id)  # what sync_deployment takes the schedules from
    _remember(db, script.id, str(old.id))
    await sync_deployment(script)  # upserts by (flow, name): the new one, or one there
    if script.deployment_id != str(old.id):
        await scripts_prefect.delete_deployment(old.id)


async def _delete_orphan(db: Session, item: DriftItem) -> None:
    """Its runs stay the script's history when its tag names a script ScriptFlow has."""
    sid = item.tag_script_id
    if sid is not None and db.get(Script, sid) is not None:
        _remember(db, sid, str(item.deployment.id))
    await scripts_prefect.delete_deployment(item.deployment.id)


def _remember(db: Session, script_id: int, deployment_id: str) -> None:
    if db.get(ScriptDeployment, (script_id, deployment_id)) is None:
        db.add(ScriptDeployment(script_id=script_id, deployment_id=deployment_id))
        db.flush()  # found by the next get (remember_deployment's too)
