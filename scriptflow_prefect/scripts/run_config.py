"""How a script runs: its arguments, environment, requirements, working folder and account.

Kept in `Script.settings["run"]` (the simple form), handed to every run as the deployment's
parameters (so a power user sees them in Prefect). Secret values never live here: only their
names (the values sit in Prefect Secret blocks, see `scripts/secrets.py`)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scriptflow_prefect.execution.workspace import overlaps
from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.settings import get_settings

MAX_ARGUMENTS = 100
MAX_ARGUMENT_CHARS = 4096
MAX_VARIABLES = 100
MAX_VALUE_CHARS = 32_768
MAX_REQUIREMENTS = 200
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# ScriptFlow's and Prefect's own settings are scrubbed from a script's environment; letting a
# script set them would look like it works and then not.
RESERVED_PREFIXES = ("SCRIPTFLOW_", "PREFECT_")
RUN_KEY = "run"


class WorkingFolder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["script", "path", "fresh"] = "script"
    path: str | None = None


class RunConfig(BaseModel):
    """What the script page's "How it runs" section edits."""

    model_config = ConfigDict(extra="forbid")
    arguments: list[str] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)  # names only
    requirements: list[str] = Field(default_factory=list)
    working_folder: WorkingFolder = Field(default_factory=WorkingFolder)
    run_as: str | None = None


def run_config(settings: dict[str, Any] | None) -> RunConfig:
    """The script's configuration; scripts saved before it existed get the defaults."""
    return RunConfig(**((settings or {}).get(RUN_KEY) or {}))


def check_arguments(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ServiceError(422, _("Arguments are a list of texts, one per argument."))
    if len(value) > MAX_ARGUMENTS:
        raise ServiceError(422, _("A script takes at most %(n)s arguments.", n=MAX_ARGUMENTS))
    for arg in value:
        if len(arg) > MAX_ARGUMENT_CHARS or "\x00" in arg:
            raise ServiceError(
                422,
                _(
                    "An argument has at most %(n)s characters and no NUL character.",
                    n=MAX_ARGUMENT_CHARS,
                ),
            )
    return list(value)


def check_variable_name(name: Any) -> str:
    if not isinstance(name, str) or not ENV_NAME.match(name):
        raise ServiceError(
            422,
            _(
                "%(name)s is not a usable variable name: use letters, digits and _, "
                "not starting with a digit.",
                name=repr(name)[:140],
            ),
        )
    if name.upper().startswith(RESERVED_PREFIXES):
        raise ServiceError(
            422, _("Names starting with SCRIPTFLOW_ or PREFECT_ are reserved for ScriptFlow.")
        )
    return name


def check_environment(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ServiceError(422, _("The environment is a set of NAME: value pairs."))
    if len(value) > MAX_VARIABLES:
        raise ServiceError(
            422, _("A script has at most %(n)s environment variables.", n=MAX_VARIABLES)
        )
    for name, text in value.items():
        check_variable_name(name)
        if not isinstance(text, str) or len(text) > MAX_VALUE_CHARS or "\x00" in text:
            raise ServiceError(
                422,
                _(
                    "The value of %(name)s must be text of at most %(n)s characters.",
                    name=name,
                    n=MAX_VALUE_CHARS,
                ),
            )
    return dict(value)


def check_requirements(value: Any) -> list[str]:
    if isinstance(value, str):  # the page's text box: one per line, comments allowed
        value = [line.split("#", 1)[0].strip() for line in value.splitlines()]
        value = [line for line in value if line]
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise ServiceError(422, _('Requirements are a list like ["requests>=2"].'))
    if len(value) > MAX_REQUIREMENTS:
        raise ServiceError(422, _("At most %(n)s requirements.", n=MAX_REQUIREMENTS))
    clean = []
    for text in value:
        try:
            if Requirement(text).url:
                # Installs come from the package index only: a URL would have the server
                # fetch (or read a local file) for whoever saved it.
                raise InvalidRequirement("a name and versions from the package index, not a URL")
        except InvalidRequirement as exc:
            raise ServiceError(
                422,
                _(
                    "%(req)s is not a valid requirement: %(err)s",
                    req=text[:100],
                    err=str(exc)[:200],
                ),
            ) from None
        clean.append(text.strip())
    return clean


def is_absolute_folder(path: str) -> bool:
    """Absolute on the worker, whichever OS it runs: `/srv/reports` or `D:\\backups`."""
    if PurePosixPath(path).is_absolute():
        return True
    windows = PureWindowsPath(path)
    return bool(windows.drive) and windows.is_absolute()


def check_working_folder(value: Any) -> WorkingFolder:
    try:
        folder = WorkingFolder.model_validate(value)
    except ValidationError:
        raise ServiceError(
            422,
            _('The working folder is {"mode": "script"|"path"|"fresh", "path": "/absolute/path"}.'),
        ) from None
    if folder.mode == "path":
        path = (folder.path or "").strip()
        if not path or not is_absolute_folder(path) or "\x00" in path or len(path) > 1024:
            raise ServiceError(
                422, _("A working folder path must be absolute, like /srv/reports or D:\\backups.")
            )
        if overlaps(path, get_settings().home):
            # A run lists and keeps the files it changed there: ScriptFlow's own would show.
            raise ServiceError(
                422,
                _("%(path)s is ScriptFlow's own folder or holds it: choose another.", path=path),
            )
        folder.path = path
    else:
        folder.path = None
    return folder


def check_run_as(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.\\@$-]{1,104}", value):
        raise ServiceError(422, _("%(name)s is not a usable account name.", name=repr(value)[:110]))
    return value


def apply_changes(config: RunConfig, changes: dict[str, Any]) -> RunConfig:
    """Validate the run-configuration fields present in `changes`; return the new config.

    Secrets are not handled here (their values go to Prefect, see `scripts/secrets.py`)."""
    updated = config.model_copy(deep=True)
    if changes.get("arguments") is not None:
        updated.arguments = check_arguments(changes["arguments"])
    if changes.get("environment") is not None:
        updated.environment = check_environment(changes["environment"])
    if changes.get("requirements") is not None:
        updated.requirements = check_requirements(changes["requirements"])
    if changes.get("working_folder") is not None:
        updated.working_folder = check_working_folder(changes["working_folder"])
    if "run_as" in changes:
        updated.run_as = check_run_as(changes["run_as"])
    return updated


def store_config(settings: dict[str, Any] | None, config: RunConfig) -> dict[str, Any]:
    return {**(settings or {}), RUN_KEY: config.model_dump()}


def flow_parameters(config: RunConfig) -> dict[str, Any]:
    """The run_script flow's parameters for this configuration (see flows/run_script.py):
    the same six fields the script object shows, secret names only."""
    return config.model_dump()


def public_fields(config: RunConfig) -> dict[str, Any]:
    """The script object's fields (API.md "How a script runs"): secret values never (the
    model holds only their names)."""
    return config.model_dump()
