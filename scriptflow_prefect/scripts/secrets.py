"""A script's secret variables: names kept with the script, values in Prefect Secret blocks.

One block per script and name (`scriptflow-script-7-db-password` for DB_PASSWORD of script 7).
Values are write-only: they go from a PATCH to Prefect and from Prefect to the script's
environment at run start (`load_values`), never into a response, a page, a log, the audit
trail or the deployment's parameters (those carry the names only).

A change is validated whole before anything is written. Then new values are written, the
deployment is updated with the new names, and blocks no longer named are deleted:

- a write that fails puts back what was written before it (old values are read first), and
  the PATCH answers 503 with nothing changed;
- a deployment update that fails after the writes is undone the same way (`Written.undo`);
- a removed secret's block that Prefect fails to delete is only logged: the script no longer
  gets the variable, and the next secret change or the script's deletion deletes it
  (`sweep` deletes every block of the script that is not one of its names).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
from prefect.exceptions import PrefectHTTPStatusError

from scriptflow_prefect.execution.masking import Masker
from scriptflow_prefect.execution.models import run_as_secret_block
from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.prefect import PrefectUnavailable
from scriptflow_prefect.scripts import prefect as scripts_prefect
from scriptflow_prefect.scripts.run_config import (
    MAX_VALUE_CHARS,
    MAX_VARIABLES,
    RunConfig,
    check_variable_name,
)

log = logging.getLogger("scriptflow.scripts")


def block_prefix(script_id: int) -> str:
    return f"scriptflow-script-{script_id}-"


def block_name(script_id: int, name: str) -> str:
    """Prefect's block names are lowercase letters, digits and dashes; names that differ
    only in case are refused (`check_changes`), so this stays one block per variable."""
    return block_prefix(script_id) + name.lower().replace("_", "-")


def check_changes(value: Any, config: RunConfig) -> dict[str, str | None]:
    """Validate `{"NAME": "value" | None}` against the script's configuration as it will be
    (its environment after the same PATCH); return the changes. Removing a name the script
    does not have is no error (the result is the same)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ServiceError(422, _('Secrets are a set of "NAME": "value" pairs (null removes one).'))
    names = list(config.secrets)
    changes: dict[str, str | None] = {}
    for name, secret in value.items():
        check_variable_name(name)
        if secret is None:
            names = [n for n in names if n != name]
        elif not isinstance(secret, str) or len(secret) > MAX_VALUE_CHARS or "\x00" in secret:
            raise ServiceError(
                422,
                _(
                    "The value of %(name)s must be text of at most %(n)s characters.",
                    name=name,
                    n=MAX_VALUE_CHARS,
                ),
            )
        else:
            twin = next((n for n in names if n.lower() == name.lower() and n != name), None)
            if twin is not None:
                raise ServiceError(
                    422,
                    _(
                        "This script already has a secret variable %(other)s: names that "
                        "differ only in case are the same variable on Windows.",
                        other=twin,
                    ),
                )
            names = names if name in names else [*names, name]
        changes[name] = secret
    if len(names) > MAX_VARIABLES:
        raise ServiceError(422, _("A script has at most %(n)s secret variables.", n=MAX_VARIABLES))
    plain = {n.lower(): n for n in config.environment}
    for name in names:
        if name.lower() in plain:
            raise ServiceError(
                422,
                _(
                    "%(name)s is both an environment variable and a secret variable; "
                    "keep one of them.",
                    name=plain[name.lower()],
                ),
            )
    return changes


def names_after(names: list[str], changes: dict[str, str | None]) -> list[str]:
    """The script's secret names once `changes` are applied, sorted."""
    kept = set(names)
    for name, value in changes.items():
        if value is None:
            kept.discard(name)
        else:
            kept.add(name)
    return sorted(kept)


def audit_detail(changes: dict[str, str | None]) -> dict[str, list[str]]:
    """What the audit trail says about a change: names only."""
    detail = {
        "secrets_set": sorted(n for n, v in changes.items() if v is not None),
        "secrets_removed": sorted(n for n, v in changes.items() if v is None),
    }
    return {k: v for k, v in detail.items() if v}


@dataclass
class Written:
    """The values one change wrote, and how to put back what was there before."""

    script_id: int
    before: dict[str, str | None] = field(default_factory=dict)  # None: there was no block

    async def undo(self) -> None:
        for name, old in self.before.items():
            block = block_name(self.script_id, name)
            try:
                if old is None:
                    await scripts_prefect.delete_secret(block)
                else:
                    await scripts_prefect.save_secret(block, old)
            except PrefectUnavailable as exc:
                # no exception text: an HTTP error may quote the value that was sent
                log.error(
                    "script %s: could not put back secret %s after a failed change (%s); "
                    "set it again",
                    self.script_id,
                    name,
                    type(exc.__cause__ or exc).__name__,
                )


async def write_values(script_id: int, changes: dict[str, str | None]) -> Written:
    """Write the new values; on a failure, put back those already written and answer 503."""
    written = Written(script_id)
    try:
        for name, value in changes.items():
            if value is None:
                continue
            block = block_name(script_id, name)
            old = await scripts_prefect.read_secret(block)
            written.before[name] = old
            await scripts_prefect.save_secret(block, value)
    except PrefectUnavailable as exc:
        await written.undo()
        # masked before it is cut: an HTTP error's text may quote what was sent
        reason = Masker(v for v in changes.values() if v).text(str(exc))[:200]
        raise ServiceError(
            503, _("Prefect is not reachable, nothing was changed: %(err)s", err=reason)
        ) from None
    return written


async def sweep(script_id: int, names: list[str]) -> None:
    """Delete the script's blocks that are not one of `names` (removed secrets)."""
    keep = {block_name(script_id, n) for n in names}
    try:
        for block in await scripts_prefect.secret_names(block_prefix(script_id)):
            if block not in keep:
                await scripts_prefect.delete_secret(block)
    except PrefectUnavailable:
        log.exception(
            "script %s: a removed secret's value is still in Prefect; the next change of the "
            "script's secrets or its deletion deletes it",
            script_id,
        )


async def delete_all(script_id: int) -> None:
    """Delete every secret of a script being deleted; 503 (and the script stays) if Prefect
    does not answer."""
    try:
        for block in await scripts_prefect.secret_names(block_prefix(script_id)):
            await scripts_prefect.delete_secret(block)
    except PrefectUnavailable as exc:
        raise ServiceError(
            503,
            _(
                "The script was not deleted: Prefect did not delete its secret values (%(err)s).",
                err=str(exc)[:200],
            ),
        ) from exc


class SecretsMissing(RuntimeError):
    """Secret values a run needs could not be read (their names are in `names`)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


def load_values(script_id: int, names: list[str]) -> dict[str, str]:
    """The values of a script's secret variables, at run start (in the flow's thread)."""
    if not names:
        return {}
    blocks = {name: block_name(script_id, name) for name in names}
    try:
        found = scripts_prefect.read_secrets_sync(list(blocks.values()))
    except (httpx.TransportError, PrefectHTTPStatusError):
        raise SecretsMissing(list(names)) from None
    missing = [name for name, block in blocks.items() if found.get(block) is None]
    if missing:
        raise SecretsMissing(missing)
    return {name: found[block] or "" for name, block in blocks.items()}


def load_run_as_password(account: str) -> str | None:
    """The Windows password of the account a run is to run as, from its Prefect Secret block
    (`run_as_secret_block`, set by an administrator; README "Production recipe"); None when
    that block does not exist. Only Windows workers need it: POSIX ones switch accounts
    without a password."""
    block = run_as_secret_block(account)
    try:
        return scripts_prefect.read_secrets_sync([block]).get(block)
    except (httpx.TransportError, PrefectHTTPStatusError):
        raise SecretsMissing([block]) from None
