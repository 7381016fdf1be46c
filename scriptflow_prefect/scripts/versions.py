"""A script's next version: new bytes for its file, or a new set of files (scripts/files.py),
kept in the script store and followed by its deployment, undone if Prefect refuses."""

from __future__ import annotations

from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.platform.db import audit
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.models import utcnow
from scriptflow_prefect.scripts import content_checks, dependencies, files
from scriptflow_prefect.scripts.deployment import sync_deployment
from scriptflow_prefect.scripts.models import Script, ScriptVersion
from scriptflow_prefect.scripts.service import (
    ScriptError,
    check_content,
    clean_filename,
    kind_of,
)


async def replace_content(
    db: Session,
    user: User,
    script: Script,
    data: bytes,
    filename: str | None = None,
    companions: tuple[files.ScriptFile, ...] | None = None,
) -> Script:
    """A new version. With `companions` (a whole upload) the version is those files and the
    entry point is named `filename`; without, the entry's bytes change and its name and
    companion files stay as they were."""
    if filename:
        new_kind = kind_of(clean_filename(filename))
        if new_kind != script.kind:
            raise ScriptError(400, _("A new version must be of the same type as the script."))
    check_content(script.kind, data)
    entry = clean_filename(filename) if filename and companions is not None else script.filename
    old = files.files_of(script)
    listed = await files.next_version_files(old, files.ScriptFile(entry, data), companions)
    number = script.current_version + 1
    version = ScriptVersion(version=number, sha256=listed[0]["sha256"], size=len(data))
    version.author_id, version.files = user.id, listed
    script.versions.append(version)
    previous = (script.current_version, script.updated_at, script.filename, script.settings)
    script.current_version, script.filename = number, entry
    script.updated_at = utcnow()
    script.settings = content_checks.with_compatibility(script.settings, script.kind, data, number)
    db.commit()  # no write transaction open while Prefect is called; undone below on failure
    try:
        await sync_deployment(script)
    except Exception:
        script.versions.remove(next(v for v in script.versions if v.version == number))
        script.current_version, script.updated_at, script.filename, script.settings = previous
        db.commit()
        raise
    audit(db, user.id, "script.version", script.name, script_id=script.id, version=number)
    dependencies.environment_follows(script, data)
    return script
