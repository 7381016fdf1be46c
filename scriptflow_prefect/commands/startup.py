"""What every ScriptFlow process does first: a private umask, secrets out of its environment,
the home's folders made (0700) and fixed if an older version left them readable; and what a
process that runs scripts says about their sandbox."""

from __future__ import annotations

import logging

from scriptflow_prefect.execution.sandbox import sandbox_state
from scriptflow_prefect.platform.home_modes import fix_home_modes, private_umask
from scriptflow_prefect.platform.secret_env import forget_secret_variables
from scriptflow_prefect.platform.settings import Settings

log = logging.getLogger("scriptflow")
_SHOWN = 3


def private_process() -> None:
    """Before anything is created: files and folders readable by this account only."""
    private_umask()


def prepare_home(settings: Settings) -> None:
    forget_secret_variables()  # read into `settings`; no child process may inherit them
    settings.ensure_dirs()
    work = settings.work_dir
    keep = [settings.script_venv_dir, settings.envs_dir]
    keep += list(work.iterdir()) if work.is_dir() else []
    changed = fix_home_modes(settings.home, keep)
    if changed:
        shown = ", ".join(str(p.relative_to(settings.home)) or "." for p in changed[:_SHOWN])
        more = f" and {len(changed) - _SHOWN} more" if len(changed) > _SHOWN else ""
        log.warning(
            "made %d files and folders of %s private to this account (they were readable "
            "by other accounts): %s%s",
            len(changed),
            settings.home,
            shown,
            more,
        )


def announce_sandbox(settings: Settings) -> None:
    """The script runner's first words: are runs sandboxed? Loud when not."""
    state = sandbox_state(settings.sandbox, settings.home)
    if state.enforced:
        log.info("runs are sandboxed (%s)", state.detail)
    else:
        log.error(
            "RUNS ARE NOT SANDBOXED: %s. Scripts can read and change ScriptFlow's files "
            "(its keys, databases and other users' output).",
            state.detail,
        )
    for warning in state.warnings:
        log.warning("sandbox: %s", warning)
