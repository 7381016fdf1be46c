"""A script's Prefect deployment, kept in step with what the overlay shows: its parameters
(the version to run and how it runs), its tags and its schedules."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prefect.client.schemas.actions import DeploymentScheduleCreate

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


def _kept(schedules) -> list[DeploymentScheduleCreate]:
    return [
        DeploymentScheduleCreate(
            schedule=s.schedule, active=s.active, parameters=s.parameters or {}, slug=s.slug
        )
        for s in schedules
    ]


def _limit(deployment) -> SimpleNamespace:
    """A deployment's concurrency limit as copy_concurrency_limit takes it (a power user may
    have set one in Prefect; a rename must not lose it)."""
    limit = deployment.global_concurrency_limit
    return SimpleNamespace(
        concurrency_limit=limit.limit if limit is not None else deployment.concurrency_limit,
        concurrency_options=deployment.concurrency_options,
    )


async def sync_deployment(script: Script) -> None:
    """Create or update the script's deployment so that Prefect runs what the overlay shows:
    its parameters, tags, work pool and entrypoint.

    Its schedules and paused flag are Prefect's truth (schedules.truth): an edit here (a new
    version, a setting) updates the deployment in place and leaves them as they are, so a
    schedule switched off after failures or set by a power user in Prefect survives it. Only
    a new deployment gets the saved form's schedules; Prefect names deployments by flow and
    name, so a rename is a new deployment, which takes over the old one's schedules, pause and
    concurrency limit (the caller deletes the old one)."""
    try:
        current = (
            await scripts_prefect.read_deployment(script.deployment_id)
            if script.deployment_id
            else None
        )
        if current is not None and current.name == script.name:
            await scripts_prefect.update_deployment(
                current.id,
                description=script.description or "",
                tags=deployment_tags(script),
                parameters=deployment_parameters(script),
            )
            deployment_id = current.id
        else:
            deployment_id = await scripts_prefect.upsert_deployment(
                name=script.name,
                description=script.description or "",
                tags=deployment_tags(script),
                parameters=deployment_parameters(script),
                schedules=_kept(current.schedules)
                if current is not None
                else prefect_schedules_for(script.schedule),
                paused=bool(current is not None and current.paused),
            )
            if current is not None and deployment_id != current.id:
                await scripts_prefect.copy_concurrency_limit(str(deployment_id), _limit(current))
    except platform_prefect.PrefectUnavailable as exc:
        raise ServiceError(
            503, _("Prefect is not reachable, nothing was changed: %(err)s", err=str(exc)[:200])
        ) from exc
    script.deployment_id = str(deployment_id)
    history_service.remember_deployment(script)
