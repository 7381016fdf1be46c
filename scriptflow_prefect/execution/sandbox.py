"""What a run may reach, and the command prefix that holds it to that (Landlock on Linux).

The flow says which folders a run uses (`writable`: its run folder and working folder;
`read_only`: the interpreter and dependency environments it runs with) and what is ScriptFlow's
own (`hidden`: SCRIPTFLOW_HOME, files named by `SCRIPTFLOW_*_FILE`). The script and every
process it starts can then use the rest of the file system as its account allows, and the
listed folders, but nothing else under `hidden`; writes to `read_only` are refused too.

Measured on Linux 6.18 (Landlock ABI 7), a run starts ~45 ms later sandboxed (21 -> 68 ms
(bench/sandbox_bench.py): the prefix is this interpreter running `landlock.py`'s source, which
restricts itself and execs the command. Without Landlock (kernel < 5.13, disabled, another OS)
or with SCRIPTFLOW_SANDBOX=off, runs are not sandboxed: the worker logs it at start and /health
names it (`sandbox` component), loudly.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from scriptflow_prefect.execution import landlock
from scriptflow_prefect.platform.i18n import _


@dataclass(frozen=True)
class Sandbox:
    """A run's reach. `enforced` is False when the sandbox is off or unavailable: the folders
    are still known (a run-as account is given them)."""

    hidden: tuple[Path, ...]
    writable: tuple[Path, ...] = ()
    read_only: tuple[Path, ...] = ()
    enforced: bool = True

    def spec(self) -> str:
        return json.dumps(
            {
                "hidden": [str(p) for p in self.hidden],
                "writable": [str(p) for p in self.writable],
                "read_only": [str(p) for p in self.read_only],
            }
        )

    def managed(self) -> list[Path]:
        """The writable folders that ScriptFlow made (inside a hidden path): the ones a run-as
        account is given. Others (an admin's "Start in" folder) keep their owners."""
        return [p for p in self.writable if any(_inside(p, h) for h in self.hidden)]


@dataclass(frozen=True)
class SandboxState:
    """Whether runs are sandboxed here, and if not, why (for /health and the worker log)."""

    enforced: bool
    mechanism: str  # "landlock" or "none"
    detail: str
    abi: int = 0
    warnings: list[str] = field(default_factory=list)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@cache
def landlock_abi() -> int:
    return landlock.abi_version()


def sandbox_state(setting: str, home: Path) -> SandboxState:
    """`setting` is SCRIPTFLOW_SANDBOX ("on" or "off")."""
    if setting == "off":
        return SandboxState(False, "none", _("switched off (SCRIPTFLOW_SANDBOX=off)"))
    abi = landlock_abi()
    if abi < 1:
        if sys.platform.startswith("linux"):
            why = _("this Linux kernel has no Landlock (5.13 or later, enabled, is needed)")
        else:
            why = _("this operating system has no Landlock")
        return SandboxState(False, "none", why)
    warnings = []
    if any(str(a) == "/tmp" for a in Path(home).parents):
        # Landlock is an allow-list: see README "The sandbox" for why this matters.
        warnings.append(
            _(
                "SCRIPTFLOW_HOME (%(home)s) is under /tmp: scripts cannot create new files "
                "directly in /tmp or in the folders between it and the home. Move the home "
                "to a folder of its own, such as /var/lib/scriptflow.",
                home=str(home),
            )
        )
    return SandboxState(True, "landlock", _("Landlock ABI %(abi)s", abi=abi), abi, warnings)


def interpreter_folders(python: Path | None) -> list[Path]:
    """What a run reads but must never write: the script's interpreter installation and
    ScriptFlow's own (its virtualenv, its code): a `sitecustomize.py` planted there would run
    in later runs, or in ScriptFlow itself."""
    folders = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    folders.add(Path(landlock.__file__).resolve().parents[2])  # the code, also when editable
    if python is not None:
        folders.add(Path(os.path.realpath(python)).parent.parent)
    return sorted(folders)


@cache
def _helper_source() -> str:
    return Path(landlock.__file__).read_text(encoding="utf-8")


def helper_python() -> str:
    """The interpreter that runs the sandbox prefix: this one, resolved out of any virtualenv
    (`-I -S` keeps it from reading anything but the standard library)."""
    return os.path.realpath(sys.executable)


def sandboxed(argv: list[str], sandbox: Sandbox | None) -> list[str]:
    """`argv` behind the sandbox prefix when the sandbox is enforced, else unchanged."""
    if sandbox is None or not sandbox.enforced:
        return argv
    return [helper_python(), "-I", "-S", "-c", _helper_source(), sandbox.spec(), "--", *argv]
