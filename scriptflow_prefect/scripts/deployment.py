"""A script's Prefect deployment, kept in step with what the overlay shows: its parameters
(the version to run and how it runs), its tags and its schedules."""

from __future__ import annotations

from typing import Any

from scriptflow_prefect.history import service as history_service
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform import prefect_names as prefect_names
from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.runs.policies import RunPolicy
from scriptflow_prefect.schedules.service import prefect_schedules_for
from scriptflow_prefect.scripts import files, run_config
from scriptflow_prefect.scripts import prefect as scripts_prefect
from scriptflow_prefect.scripts.models import Script, ScriptVersion


def current_version(script: Script) -> ScriptVersion:
    return next(v for v in script.versions if v.version == script.current_version)


def deployment_parameters(script: Script) -> dict[str, Any]:
    v = current_version(script)
    return {
        "script_id": script.id,
        "version": v.version,
        "sha256": v.sha256,
        "kind": script.kind,
        "filename": script.filename,
        "script_name": script.name,
        "timeout_seconds": script.timeout_seconds,
        "policy": RunPolicy(**(script.settings or {}).get("policy", {})).model_dump(),
        **run_config.flow_parameters(run_config.run_config(script.settings)),
        "files": files.files_of(script),
    }


def deployment_tags(script: Script) -> list[str]:
    return [prefect_names.TAG, script.kind, prefect_names.script_tag(script.id)]


async def sync_deployment(script: Script, *, reenable: bool = False) -> None:
    """Create or update the script's deployment so that Prefect runs what the overlay shows.

    A schedule that the flow switched off after consecutive failures stays off through other
    edits (a rename, a new version); only saving the schedule (`reenable`) turns it on."""
    try:
        schedules = prefect_schedules_for(script.schedule)
        if schedules and not reenable and script.deployment_id:
            current = await scripts_prefect.read_deployment(script.deployment_id)
            if (
                current is not None
                and current.schedules
                and not any(s.active for s in current.schedules)
            ):
                for schedule in schedules:
                    schedule.active = False
        deployment_id = await scripts_prefect.upsert_deployment(
            name=script.name,
            description=script.description or "",
            tags=deployment_tags(script),
            parameters=deployment_parameters(script),
            schedules=schedules,
        )
    except platform_prefect.PrefectUnavailable as exc:
        raise ServiceError(
            503, _("Prefect is not reachable, nothing was changed: %(err)s", err=str(exc)[:200])
        ) from exc
    script.deployment_id = str(deployment_id)
    history_service.remember_deployment(script)
