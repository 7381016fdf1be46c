"""Scripts and their versions: the rules; their Prefect deployment is kept in step
(scripts/deployment.py) and their dependency environment follows (scripts/dependencies.py).

The overlay database and Prefect never disagree after a failure between the two steps: the
database change is only committed after Prefect accepted the deployment."""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform import prefect_names as prefect_names
from scriptflow_prefect.platform.db import audit
from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.models import utcnow
from scriptflow_prefect.runs.policies import RunPolicy
from scriptflow_prefect.schedules.service import schedule_to_dict
from scriptflow_prefect.schedules.truth import Truth, saved_truth
from scriptflow_prefect.scripts import (
    content_checks,
    dependencies,
    files,
    run_config,
    secrets,
    store,
)
from scriptflow_prefect.scripts import prefect as scripts_prefect
from scriptflow_prefect.scripts.deployment import current_version, sync_deployment
from scriptflow_prefect.scripts.models import Script, ScriptVersion

log = logging.getLogger("scriptflow.scripts")
MAX_BYTES = 10 * 1024 * 1024
DEFAULT_TIMEOUT = 300
MAX_TIMEOUT = 7 * 24 * 3600
KINDS = {".py": "python", ".bat": "batch", ".cmd": "batch"}
# Prefect refuses these in deployment names; a script's name is its deployment's name.
_BANNED_IN_NAME = set("/%&><")
# Controls, format characters (bidi overrides, zero-width) and lone surrogates: a name is
# shown everywhere and must look like what it is (the OpenAPI document lists them too).
NAME_CONTROLS = ("Cc", "Cf", "Cs")


ScriptError = ServiceError  # its name in scripts and the overlay


def clean_filename(filename: str | None) -> str:
    """Just the last path component: an uploaded name is a label, never a path."""
    name = PureWindowsPath(PurePosixPath(filename or "").name).name
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip(" .")
    return name[:255]


def kind_of(filename: str) -> str:
    suffix = PurePosixPath(filename.lower()).suffix
    if suffix not in KINDS:
        raise ScriptError(
            400, _("Only .py and .bat files can be uploaded (got %(name)s).", name=filename or "?")
        )
    return KINDS[suffix]


def check_content(kind: str, data: bytes) -> None:
    if len(data) > MAX_BYTES:
        raise ScriptError(413, _("The file is larger than the 10 MB limit."))
    if not data.strip():
        raise ScriptError(400, _("The file is empty."))
    if b"\x00" in data:
        raise ScriptError(400, _("The file looks binary, not like a script."))
    if kind == "python":
        problem = content_checks.python_text_problem(data)
        if problem:
            raise ScriptError(400, problem)
    dependencies.check_inline_metadata(kind, data)


def check_name(name: str) -> str:
    name = re.sub(r"\s+", " ", name or "").strip()
    if not name:
        raise ScriptError(422, _("Give the script a name."))
    if len(name) > 100:
        raise ScriptError(422, _("A script name has at most 100 characters."))
    if any(c in _BANNED_IN_NAME or unicodedata.category(c) in NAME_CONTROLS for c in name):
        raise ScriptError(422, _("A script name cannot contain / %% & < > or control characters."))
    return name


def check_timeout(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TIMEOUT:
        raise ScriptError(
            422, _("The timeout is a whole number of seconds from 1 to %(max)s.", max=MAX_TIMEOUT)
        )
    return value


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)


def _name_taken(db: Session, name: str, except_id: int | None = None) -> bool:
    q = select(Script.id).where(
        func.lower(Script.name) == name.lower(), Script.deleted_at.is_(None)
    )
    if except_id is not None:
        q = q.where(Script.id != except_id)
    return db.scalar(q) is not None


def name_taken_message(name: str) -> str:
    # Unique server-wide (a name is its deployment's): the same answer whoever has it.
    return _(
        "Script names are unique on this server and %(name)s is taken; choose another.", name=name
    )


async def create_script(
    db: Session,
    owner: User,
    *,
    filename: str,
    data: bytes,
    name: str | None = None,
    description: str = "",
    schedule: dict | None = None,
    companions: tuple[files.ScriptFile, ...] = (),
) -> Script:
    """Store version 1 (with `companions`: files.bundle_of) and create the deployment."""
    filename = clean_filename(filename)
    kind = kind_of(filename)
    check_content(kind, data)
    name = check_name(name if name else PurePosixPath(filename).stem)
    if _name_taken(db, name):
        raise ScriptError(409, name_taken_message(name))
    listed = await files.next_version_files([], files.ScriptFile(filename, data), companions)
    script = Script(
        name=name,
        description=(description or "").strip()[:5000],
        kind=kind,
        filename=filename,
        owner_id=owner.id,
        current_version=1,
        timeout_seconds=DEFAULT_TIMEOUT,
        schedule=schedule,
        settings=content_checks.with_compatibility(None, kind, data, 1),
    )
    version = ScriptVersion(version=1, sha256=listed[0]["sha256"], size=len(data))
    version.author_id, version.files = owner.id, listed
    script.versions.append(version)
    db.add(script)
    # The id goes into the deployment's tags and parameters. Commit it before calling
    # Prefect, so that no write transaction stays open during the call; undo on failure.
    db.commit()
    try:
        await sync_deployment(script)
    except Exception:
        db.delete(script)
        db.commit()
        raise
    db.flush()  # storing the deployment id bumps updated_at: answer with the stored value
    audit(db, owner.id, "script.create", script.name, script_id=script.id)
    dependencies.environment_follows(script, data)
    return script


async def update_details(db: Session, user: User, script: Script, changes: dict) -> Script:
    """Apply `changes`. A rename is a new deployment in Prefect (it names deployments by flow
    and name): the old one is deleted, and if that fails the rename is undone, so that the
    script never has two deployments (two schedules, run twice)."""
    if "run_as" in changes and not user.is_admin:
        raise ScriptError(403, _("Only an admin chooses the account a script runs as."))
    old_name, old_deployment = script.name, script.deployment_id
    before = {
        "name": script.name,
        "description": script.description,
        "timeout_seconds": script.timeout_seconds,
        "settings": script.settings,
        "updated_at": script.updated_at,
        "deployment_id": script.deployment_id,
    }
    if "name" in changes and changes["name"] is not None:
        name = check_name(changes["name"])
        if _name_taken(db, name, except_id=script.id):
            raise ScriptError(409, name_taken_message(name))
        script.name = name
    if "description" in changes and changes["description"] is not None:
        script.description = str(changes["description"]).strip()[:5000]
    if "timeout_seconds" in changes and changes["timeout_seconds"] is not None:
        script.timeout_seconds = check_timeout(changes["timeout_seconds"])
    if changes.get("policy") is not None:
        current = (script.settings or {}).get("policy", {})
        try:
            policy = RunPolicy(**{**current, **dict(changes["policy"])})
        except (ValidationError, TypeError) as exc:
            raise ScriptError(
                422, _("The run policy is not valid: %(err)s", err=_first_error(exc))
            ) from None
        script.settings = {**(script.settings or {}), "policy": policy.model_dump()}
    config = run_config.apply_changes(run_config.run_config(script.settings), changes)
    secret_changes = secrets.check_changes(changes.get("secrets"), config)
    config.secrets = secrets.names_after(config.secrets, secret_changes)
    script.settings = run_config.store_config(script.settings, config)
    script.updated_at = utcnow()
    written = await secrets.write_values(script.id, secret_changes)  # 503: nothing changed
    try:
        await sync_deployment(script)
    except Exception:
        await written.undo()
        raise
    if script.name != old_name and old_deployment and old_deployment != script.deployment_id:
        # Past runs keep the script's tag, so history follows the script.
        try:
            await scripts_prefect.delete_deployment(old_deployment)
        except Exception as exc:
            await _undo_rename(script, before)
            await written.undo()
            raise ScriptError(
                503,
                _(
                    "The script was not renamed: its old deployment could not be deleted in "
                    "Prefect (%(err)s).",
                    err=str(exc)[:200],
                ),
            ) from exc
    if secret_changes:
        await secrets.sweep(script.id, config.secrets)
    detail = secrets.audit_detail(secret_changes)
    audit(db, user.id, "script.update", script.name, script_id=script.id, **detail)
    if changes.get("requirements") is not None:  # saved: resolved again, built at once
        data = await store.get(current_version(script).sha256)
        dependencies.environment_follows(script, data, refresh=True)
    return script


async def _undo_rename(script: Script, before: dict[str, Any]) -> None:
    """Delete the new deployment and put the script back as it was."""
    new_deployment = script.deployment_id
    for key, value in before.items():
        setattr(script, key, value)
    try:
        await scripts_prefect.delete_deployment(new_deployment)
    except Exception:  # noqa: BLE001 - both exist now; say so in the log for the admin
        log.exception(
            "script %s: could not delete deployment %s after a failed rename; delete it in Prefect",
            script.id,
            new_deployment,
        )


async def delete_script(db: Session, user: User, script: Script) -> None:
    # First: if Prefect fails here the script stays (a retried delete finishes the job).
    await secrets.delete_all(script.id)
    if script.deployment_id:
        try:
            await scripts_prefect.delete_deployment(script.deployment_id)
        except platform_prefect.PrefectUnavailable as exc:
            raise ScriptError(
                503, _("Prefect is not reachable, nothing was changed: %(err)s", err=str(exc)[:200])
            ) from exc
    # Its notifications go with it: the caller calls notifications.service.script_changed
    # (notifications depends on scripts, not the other way round).
    script.deleted_at = utcnow()
    script.deployment_id = None
    dependencies.environment_gone(script)
    audit(db, user.id, "script.delete", script.name, script_id=script.id)


def visible_scripts_query(user: User, *, q: str | None = None, kind: str | None = None):
    query = select(Script).where(Script.deleted_at.is_(None))
    if not user.is_admin:
        query = query.where(Script.owner_id == user.id)
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(Script.name.ilike(like, escape="\\"))
    if kind:
        query = query.where(Script.kind == kind)
    return query


def visible_script_ids(
    db: Session, user: User, *, include_deleted: bool = True
) -> list[int] | None:
    """Ids whose runs this user may see; None means all (an admin)."""
    if user.is_admin:
        return None
    q = select(Script.id).where(Script.owner_id == user.id)
    if not include_deleted:
        q = q.where(Script.deleted_at.is_(None))
    return list(db.scalars(q))


def script_to_dict(
    script: Script, last_run: dict | None = None, truth: Truth | None = None
) -> dict[str, Any]:
    """The API's script object. `truth` is its schedule as Prefect runs it
    (schedules.truth.read_truths); without it, the last saved form, next run unknown."""
    v = current_version(script)
    truth = truth or saved_truth(script)
    return {
        "id": script.id,
        "name": script.name,
        "description": script.description,
        "type": script.kind,
        "filename": script.filename,
        "size": v.size,
        "sha256": v.sha256,
        "version": script.current_version,
        "created_at": script.created_at,
        "updated_at": script.updated_at,
        "owner": script.owner.username,
        "timeout_seconds": script.timeout_seconds,
        "policy": RunPolicy(**(script.settings or {}).get("policy", {})).model_dump(),
        **run_config.public_fields(run_config.run_config(script.settings)),
        "warnings": content_checks.warnings(script.settings, script.current_version),
        "files": files.files_of(script),
        "schedule": schedule_to_dict(truth),
        "schedule_source": truth.source,
        "last_run": last_run,
        "next_run_at": truth.next_run_at,
    }
