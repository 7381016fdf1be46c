"""Secrets out of the process environment, where other processes of the account can read them.

`os.environ.pop` is not enough on Linux: /proc/<pid>/environ shows the block the process
was started with, and unsetenv only forgets the pointer. So the entry is also overwritten in
that block (its address is in /proc/self/stat), the way setproctitle rewrites argv. A value
the process still needs (Prefect reads its auth string from the environment) is first set
again, which copies it out of the block.

Example::

    forget_secret_variables()       # SCRIPTFLOW_ADMIN_PASSWORD, *_FILE, ... gone
    hide_from_proc(["PREFECT_API_AUTH_STRING"])   # still in os.environ, not in /proc
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterable

from scriptflow_prefect.platform.settings import secret_variable_names


def forget_secret_variables() -> list[str]:
    """Remove the secret `SCRIPTFLOW_*` variables (settings already read them) from this
    process's environment, so that no child inherits them; return their names."""
    names = secret_variable_names(os.environ)
    for name in names:
        os.environ.pop(name, None)
    _wipe_initial_entries(names)
    return names


def hide_from_proc(names: Iterable[str]) -> None:
    """Keep these variables in os.environ but out of /proc/<pid>/environ."""
    present = [name for name in names if name in os.environ]
    for name in present:
        os.environ[name] = os.environ[name]  # setenv copies it out of the initial block
    _wipe_initial_entries(present)


def _wipe_initial_entries(names: list[str]) -> None:
    if not names or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, ValueError, IndexError):
        start, end = _environment_block()
        block = ctypes.string_at(start, end - start)
        prefixes = tuple(name.encode() + b"=" for name in names)
        offset = 0
        for entry in block.split(b"\0"):
            if entry.startswith(prefixes):
                ctypes.memset(start + offset, 0, len(entry))
            offset += len(entry) + 1


def _environment_block() -> tuple[int, int]:
    """(env_start, env_end) of this process: fields 50 and 51 of /proc/self/stat."""
    with open("/proc/self/stat", "rb") as handle:
        stat = handle.read()
    fields = stat[stat.rindex(b")") + 2 :].split()  # fields from the 3rd on; comm may hold spaces
    return int(fields[47]), int(fields[48])
