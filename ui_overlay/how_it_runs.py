"""The "How it runs" section of a script's Edit page: its fieldsets <-> the script's run settings
(scripts/run_config.py, scripts/secrets.py), and the live preview of an arguments line.

Each fieldset is a `Part`: a template `scripts/_run_<name>.html` and a function that reads
the posted form into PATCH changes, raising `FieldError` for what a person must fix there.
Adding a fieldset (the working folder) is one template and one entry in PARTS.
Secret values are never put back into a page, not even after an error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

from fastapi import APIRouter, Request
from scriptflow_prefect.ui_overlay.deps import Csrf, PageUser, no_database_write
from starlette.datastructures import FormData

from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.scripts import run_config, secrets
from scriptflow_prefect.scripts.command_line import join_arguments, split_arguments
from scriptflow_prefect.scripts.models import Script

pages = APIRouter()


class FieldError(Exception):
    """A problem with what was typed in one fieldset."""


@dataclass(frozen=True)
class Part:
    name: str  # the fieldset's id and template: scripts/_run_<name>.html
    read: Callable[[FormData, run_config.RunConfig], dict[str, Any]]  # form -> PATCH changes
    shown: Callable[[run_config.RunConfig], Any]  # the saved value, as the form shows it


def _checked(check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except ServiceError as exc:
        raise FieldError(str(exc)) from None


def read_arguments(form: FormData, config: run_config.RunConfig) -> dict[str, Any]:
    if "arguments" not in form:  # a form without the section changes nothing
        return {}
    line = str(form.get("arguments") or "")
    return {"arguments": _checked(run_config.check_arguments, split_arguments(line))}


def read_environment(form: FormData, config: run_config.RunConfig) -> dict[str, Any]:
    if "environment" not in form:
        return {}
    variables: dict[str, str] = {}
    for number, line in enumerate(str(form.get("environment") or "").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep:
            raise FieldError(_("Line %(n)s: write NAME=value.", n=number))
        _checked(run_config.check_variable_name, name)
        if name in variables:
            raise FieldError(_("Line %(n)s: %(name)s is set twice.", n=number, name=name))
        variables[name] = value
    return {"environment": _checked(run_config.check_environment, variables)}


def read_secrets(form: FormData, config: run_config.RunConfig) -> dict[str, Any]:
    """Existing secrets: `secret_value_<NAME>` replaces, `secret_remove` (repeated) removes;
    new ones: `new_secret_name` / `new_secret_value` pairs (the page may add rows)."""
    changes: dict[str, str | None] = {}
    removed = set(form.getlist("secret_remove"))
    for name in config.secrets:
        value = str(form.get(f"secret_value_{name}") or "")
        if name in removed:
            changes[name] = None
        elif value:
            changes[name] = value
    rows = zip_longest(form.getlist("new_secret_name"), form.getlist("new_secret_value"))
    for raw_name, raw_value in rows:
        name, value = str(raw_name or "").strip(), str(raw_value or "")
        if not name and not value:
            continue
        if not name:
            raise FieldError(_("Give the new secret variable a name."))
        if not value:
            raise FieldError(_("Give the secret variable %(name)s a value.", name=name))
        if name in config.secrets or name in changes:
            raise FieldError(_("%(name)s is already a secret variable.", name=name))
        changes[name] = value
    # the environment as this same form sets it: a name cannot be both
    return {"secrets": _checked(lambda c: secrets.check_changes(c, config), changes)}


def read_requirements(form: FormData, config: run_config.RunConfig) -> dict[str, Any]:
    """Only a change is a change: saving requirements resolves them again (newer releases),
    which an unrelated edit of the script should not do."""
    if "requirements" not in form:
        return {}
    text = str(form.get("requirements") or "")
    requirements = _checked(run_config.check_requirements, text)
    return {} if requirements == config.requirements else {"requirements": requirements}


def read_working_folder(form: FormData, config: run_config.RunConfig) -> dict[str, Any]:
    if "wf_mode" not in form:
        return {}
    chosen = {"mode": str(form.get("wf_mode")), "path": str(form.get("wf_path") or "").strip()}
    folder = _checked(run_config.check_working_folder, {**chosen, "path": chosen["path"] or None})
    return {"working_folder": folder.model_dump()}


PARTS = [
    Part("arguments", read_arguments, lambda c: join_arguments(c.arguments)),
    Part(
        "environment",
        read_environment,
        lambda c: "".join(f"{k}={v}\n" for k, v in c.environment.items()),
    ),
    Part("secrets", read_secrets, lambda c: list(c.secrets)),
    Part("requirements", read_requirements, lambda c: "".join(f"{r}\n" for r in c.requirements)),
    Part("working_folder", read_working_folder, lambda c: c.working_folder.model_dump()),
]


def changes_from_form(form: FormData, script: Script) -> tuple[dict[str, Any], dict[str, str]]:
    """The PATCH changes the section asks for, and the errors by fieldset name."""
    config = run_config.run_config(script.settings)
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for part in PARTS:
        try:
            found = part.read(form, config)
        except FieldError as exc:
            errors[part.name] = str(exc)
            continue
        changes.update(found)
        if part.name == "environment":  # later parts check against the new environment
            config = config.model_copy(update=found)
    return changes, errors


def section_context(
    script: Script, form: FormData | None = None, errors: dict[str, str] | None = None
) -> dict[str, Any]:
    """What the section's templates show: the saved settings, or what was typed (never a
    secret value) when the form comes back with errors."""
    config = run_config.run_config(script.settings)
    values = {part.name: part.shown(config) for part in PARTS}
    if form is not None:
        values["arguments"] = str(form.get("arguments") or "")
        values["environment"] = str(form.get("environment") or "")
        values["requirements"] = str(form.get("requirements") or "")
        if "wf_mode" in form:
            values["working_folder"] = {"mode": form.get("wf_mode"), "path": form.get("wf_path")}
    return {
        "run_parts": [part.name for part in PARTS],
        "run_values": values,
        "run_errors": errors or {},
        "removed_secrets": set(form.getlist("secret_remove")) if form is not None else set(),
        "new_secret_names": [
            str(n) for n in (form.getlist("new_secret_name") if form is not None else [])
        ]
        or [""],
        "parsed_arguments": split_arguments(values["arguments"]),
        "arguments_example": '--days 7 "D:\\Backups\\Daily files"',
    }


@pages.post("/arguments/preview.json", dependencies=[Csrf])
@no_database_write
async def preview(request: Request, user: PageUser):
    """The list an arguments line gives, as the run will get it (Windows' rules)."""
    line = str((await request.form()).get("arguments") or "")
    arguments = split_arguments(line)
    try:
        run_config.check_arguments(arguments)
    except ServiceError as exc:
        return {"arguments": arguments[: run_config.MAX_ARGUMENTS], "error": str(exc)}
    return {"arguments": arguments, "error": None}
