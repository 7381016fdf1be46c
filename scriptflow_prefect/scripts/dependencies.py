"""A script's Python dependencies, as its saves see them: a PEP 723 block that cannot be read
is refused at upload, and every save starts building the environment in the background."""

from __future__ import annotations

import logging

from scriptflow_prefect.environments import service as environments
from scriptflow_prefect.environments.inline import InlineMetadataError, read_inline_metadata
from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.settings import get_settings
from scriptflow_prefect.scripts import run_config
from scriptflow_prefect.scripts.models import Script

log = logging.getLogger("scriptflow.scripts")


def check_inline_metadata(kind: str, data: bytes) -> None:
    """A `# /// script` block (PEP 723) that cannot be read is refused, naming its line."""
    if kind != "python":
        return
    try:
        read_inline_metadata(data)
    except InlineMetadataError as exc:
        raise ServiceError(
            400,
            _(
                "The '# /// script' block on line %(line)s cannot be read: %(reason)s",
                line=exc.line,
                reason=str(exc),
            ),
        ) from None


def environment_follows(script: Script, data: bytes, *, refresh: bool = False) -> None:
    """Start building the script's dependency environment now, in the background, so that
    its first run rarely waits (a script with no requirements needs none)."""
    requirements = run_config.run_config(script.settings).requirements
    try:
        environments.script_saved(
            get_settings(), script.id, script.kind, requirements, data, refresh=refresh
        )
    except OSError as exc:  # the save stands; the first run builds it instead
        log.warning("script %s: could not start building its environment: %s", script.id, exc)


def environment_gone(script: Script) -> None:
    """The script was deleted: no longer keep its environment from the garbage collection."""
    environments.forget_script(get_settings(), script.id)
