"""What a run of a script process is and how it ended: kinds, outcomes, callbacks, errors."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Outcome = Literal["succeeded", "failed", "timed_out", "cancelled"]
ScriptKind = Literal["python", "batch"]
LineCallback = Callable[[datetime, str, str], None]
LinesCallback = Callable[[datetime, str, Sequence[str]], None]
CurrentCallback = Callable[[str, "str | None"], None]


class LauncherMissing(RuntimeError):
    """A .bat script was to run on a machine with neither cmd.exe nor wine."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message or "Running .bat scripts needs a Windows worker or wine on this machine"
        )


class CommandsUnavailable(RuntimeError):
    """A .bat uses commands this worker's cmd lacks or only stubs (wine): it is not started,
    so that it cannot end "succeeded" because a stub did nothing."""

    def __init__(self, commands: Sequence[str]) -> None:
        self.commands = list(commands)
        super().__init__(
            f"{', '.join(self.commands)}: not available on this Linux worker (wine); "
            "run this script on a Windows worker"
        )


class ScriptStartError(RuntimeError):
    """The interpreter or launcher could not be started (missing, not executable)."""


class UnknownAccount(ScriptStartError):
    """The account a script is to run as does not exist on this machine."""

    def __init__(self, name: str) -> None:
        super().__init__(f"There is no account named {name!r} on this machine")
        self.account = name


def run_as_secret_block(account: str) -> str:
    """The Prefect Secret block holding the Windows password of `account` (a Windows worker
    needs it to log the account on; POSIX workers never do). Block names are lowercase letters,
    digits and dashes: ``CORP\\svc_Reports`` -> ``scriptflow-run-as-corp-svc-reports``."""
    return "scriptflow-run-as-" + (re.sub(r"[^a-z0-9]+", "-", account.lower()).strip("-") or "-")


class RunAsPasswordMissing(ScriptStartError):
    """A Windows worker was to run a script as another account whose password is not kept."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Running as {name!r} on Windows needs its password in the Prefect Secret block "
            f"{run_as_secret_block(name)!r}"
        )
        self.account = name


@dataclass
class ExecutionResult:
    outcome: Outcome
    exit_code: int | None
    started_at: datetime
    ended_at: datetime

    @property
    def duration(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()
