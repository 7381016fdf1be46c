"""Drift between ScriptFlow and Prefect: what a power user (or a restore, or a failure half
way) changed in Prefect about the scripts' deployments, found in one read of Prefect.

Each script has one deployment of `run_script` (scripts/deployment.py). Found here:
- `missing`: the script has no deployment, or its id is gone in Prefect (deleted there);
- `renamed`: the id is there under another name (Prefect's API cannot rename a deployment:
  a restored database or an edit of Prefect's own does; ScriptFlow's upsert then makes a
  second one under the script's name);
- `orphan`: a deployment of `run_script` or tagged `scriptflow` that no script claims (its
  script deleted, a second one for the same `script-<id>`, or none at all);
- `parameters`, `tags`, `work_pool`: the deployment's fields differ from what ScriptFlow
  writes (runs run something else, drop out of history, or wait in a pool no runner reads);
- `concurrency`: a limit set in Prefect, legitimate, shown as information only.

Repairs are in scripts/drift_repair.py; nothing here writes."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.platform import prefect_names
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.scripts import prefect as scripts_prefect
from scriptflow_prefect.scripts.deployment import deployment_parameters, deployment_tags
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.prefect import DeploymentFacts

log = logging.getLogger("scriptflow.drift")


@dataclass
class DriftItem:
    kind: str
    message: str  # what is wrong, translated
    repair: str | None  # what the repair does, translated; None: nothing to repair
    script: Script | None = None
    deployment: DeploymentFacts | None = None  # when Prefect has one
    candidate: DeploymentFacts | None = (
        None  # `missing`: a deployment tagged for the script, to adopt
    )
    tag_script_id: int | None = None  # `orphan`: the script its `script-<id>` tag names
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Stable while the drift lasts: the kind, the script and the deployment."""
        sid = self.script.id if self.script is not None else 0
        dep = str(self.deployment.id) if self.deployment is not None else "-"
        return f"{self.kind}:{sid}:{dep}"

    @property
    def repairable(self) -> bool:
        return self.repair is not None

    def to_dict(self) -> dict[str, Any]:
        s, d = self.script, self.deployment
        return {
            "id": self.id,
            "kind": self.kind,
            "script": {"id": s.id, "name": s.name} if s is not None else None,
            "deployment": {"id": str(d.id), "name": d.name} if d is not None else None,
            "message": self.message,
            "repair": self.repair,
            "repairable": self.repairable,
            **self.extra,
        }

    def log_line(self) -> str:
        return f"drift {self.id}: {self.message}" + (
            f" Repair: {self.repair}" if self.repair else ""
        )


def script_id_of_tags(tags: list[str]) -> int | None:
    for tag in tags:
        prefix = prefect_names.script_tag(0)[:-1]  # "script-"
        if tag.startswith(prefix) and tag[len(prefix) :].isdigit():
            return int(tag[len(prefix) :])
    return None


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _changed_parameters(script: Script, deployment) -> list[str]:
    wanted = deployment_parameters(script)
    have = dict(deployment.parameters or {})
    return sorted(k for k in {*wanted, *have} if k not in have or not _same(have[k], wanted.get(k)))


async def detect(db: Session) -> list[DriftItem]:
    """Every drift item, for every script (PrefectUnavailable when Prefect does not answer)."""
    scripts = list(db.scalars(select(Script).options(selectinload(Script.versions))))
    live = [s for s in scripts if s.deleted_at is None]
    by_id = {s.id: s for s in scripts}
    deployments = await scripts_prefect.read_script_deployments(
        [s.deployment_id for s in live if s.deployment_id]
    )
    found = {str(d.id): d for d in deployments}
    claimed = {s.deployment_id for s in live if s.deployment_id in found}
    unclaimed = [d for d in deployments if str(d.id) not in claimed]
    items: list[DriftItem] = []
    adopted: set[str] = set()
    for script in sorted(live, key=lambda s: s.id):
        deployment = found.get(script.deployment_id or "")
        if deployment is None:
            item = _missing(script, unclaimed, adopted)
            items.append(item)
            continue
        items += _differences(script, deployment)
    for deployment in unclaimed:
        if str(deployment.id) not in adopted:
            items.append(_orphan(deployment, by_id))
    return items


def _missing(script: Script, unclaimed: list, adopted: set[str]) -> DriftItem:
    mine = [
        d for d in unclaimed if script_id_of_tags(d.tags) == script.id and str(d.id) not in adopted
    ]
    mine.sort(key=lambda d: (d.name != script.name, d.created))
    if mine:
        candidate = mine[0]
        adopted.add(str(candidate.id))
        return DriftItem(
            "missing",
            _(
                "The script's deployment is missing in Prefect, but the deployment %(deployment)s "
                "there carries this script's tag.",
                deployment=candidate.name,
            ),
            _(
                "Repair adopts %(deployment)s as the script's deployment (its schedules and runs "
                "are kept) and gives it the script's name and settings.",
                deployment=candidate.name,
            ),
            script=script,
            candidate=candidate,
        )
    return DriftItem(
        "missing",
        _(
            "The script has no deployment in Prefect (deleted there?): it does not run on a "
            "schedule and cannot be started."
        ),
        _("Repair makes its deployment again, with the schedule ScriptFlow has for the script."),
        script=script,
    )


def _differences(script: Script, deployment) -> list[DriftItem]:
    items: list[DriftItem] = []

    def add(kind: str, message: str, repair: str | None, **extra) -> None:
        items.append(DriftItem(kind, message, repair, script, deployment, extra=extra))

    if deployment.name != script.name:
        add(
            "renamed",
            _(
                "The script's deployment is named %(deployment)s in Prefect, not %(script)s as "
                "the script.",
                deployment=deployment.name,
                script=script.name,
            ),
            _(
                "Prefect cannot rename a deployment: repair makes one named after the script, "
                "with the same schedules and concurrency limit, and deletes %(deployment)s; its "
                "runs stay in the script's history.",
                deployment=deployment.name,
            ),
        )
        return items  # the new deployment gets ScriptFlow's parameters, tags and pool too
    changed = _changed_parameters(script, deployment)
    if changed:
        add(
            "parameters",
            _(
                "The parameters %(names)s were changed in Prefect: its runs do not run what "
                "the script's page shows.",
                names=", ".join(changed),
            ),
            _("Repair sets them back to ScriptFlow's (its schedules are not touched)."),
            parameters=changed,
        )
    wanted, have = set(deployment_tags(script)), set(deployment.tags or [])
    if wanted - have:
        add(
            "tags",
            _(
                "The tags %(tags)s were removed in Prefect: the script's runs drop out of its "
                "history and notifications.",
                tags=", ".join(sorted(wanted - have)),
            ),
            _("Repair sets the deployment's tags back to ScriptFlow's."),
        )
    elif have - wanted:
        add(
            "tags",
            _(
                "The tags %(tags)s were added in Prefect; ScriptFlow removes them the next "
                "time the script is saved.",
                tags=", ".join(sorted(have - wanted)),
            ),
            _("Repair sets the deployment's tags back to ScriptFlow's."),
        )
    if deployment.work_pool_name != prefect_names.WORK_POOL:
        add(
            "work_pool",
            _(
                "The deployment was moved to the work pool %(pool)s in Prefect: no ScriptFlow "
                "runner takes its runs, they stay late.",
                pool=deployment.work_pool_name or "-",
            ),
            _("Repair moves it back to the work pool %(pool)s.", pool=prefect_names.WORK_POOL),
        )
    if deployment.concurrency_limit:
        add(
            "concurrency",
            _(
                "At most %(n)s runs of this script at once (set in Prefect).",
                n=deployment.concurrency_limit,
            ),
            None,
            concurrency_limit=deployment.concurrency_limit,
        )
    return items


def _orphan(deployment, scripts: dict[int, Script]) -> DriftItem:
    sid = script_id_of_tags(deployment.tags or [])
    owner = scripts.get(sid) if sid is not None else None
    repair = _("Repair deletes this deployment in Prefect; its past runs stay in the history.")
    if owner is None:
        message = _(
            "The deployment %(deployment)s of ScriptFlow's flow belongs to no script: it may "
            "still run on its schedule.",
            deployment=deployment.name,
        )
    elif owner.deleted_at is not None:
        message = _(
            "The deployment %(deployment)s belongs to the deleted script %(script)s: it may "
            "still run on its schedule.",
            deployment=deployment.name,
            script=owner.name,
        )
    else:
        message = _(
            "The deployment %(deployment)s is a second deployment of the script %(script)s: "
            "the script may run twice.",
            deployment=deployment.name,
            script=owner.name,
        )
    return DriftItem(
        "orphan", message, repair, script=owner, deployment=deployment, tag_script_id=sid
    )


def visible(items: list[DriftItem], user: User) -> list[DriftItem]:
    """An admin sees every item; anyone else the items of their own scripts, no orphans (a
    deployment no script claims is nobody's but the admin's)."""
    if user.is_admin:
        return items
    return [
        i
        for i in items
        if i.kind != "orphan" and i.script is not None and i.script.owner_id == user.id
    ]


async def log_drift(db: Session) -> int:
    """The start-up check: one log line per item, nothing repaired (a deletion in Prefect may
    be deliberate: an admin decides on the scheduler page)."""
    items = await detect(db)
    for item in items:
        log.warning("%s", item.log_line())
    if not items:
        log.info("drift: ScriptFlow's scripts and Prefect's deployments agree")
    return len(items)
