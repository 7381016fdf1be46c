"""A .bat's whole exit code under wine, which a Linux exit status cuts to 8 bits.

Measured with wine 8.0: `exit 9009` and an unknown command end `wine cmd` with 49 (9009 mod
256), `exit 300` with 44, and `exit 256` with 1. So the script runs in a child cmd of a small
wrapper, which writes the child's %ERRORLEVEL% (32 bits) to a file of the run:

    @cmd /d /s /c ""Z:\\...\\job.bat" arg1 "arg 2""
    @>"Z:\\...\\exit-code" echo %ERRORLEVEL%
    @exit %ERRORLEVEL%

The child's command line is the one `wine cmd /c job.bat ARGS` would have parsed, escaped for
the wrapper's own parse (%% for %, ^ before & | < > ( ) ^ outside quotes), so %0, %~dp0, %1...
and `exit N` (which ends only the child) behave as without the wrapper. Its cost: one more
cmd process per run (bench/bench_text.py measures it).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

from scriptflow_prefect.execution.models import ScriptStartError
from scriptflow_prefect.execution.wine import windows_path

WRAPPER_NAME = "scriptflow-run.cmd"
EXIT_CODE_NAME = "scriptflow-exit-code"
_SPECIAL = set("&|<>()^")


def wrapped_command(
    launcher: Sequence[str], script: Path, arguments: Sequence[str], folder: Path
) -> tuple[list[str], Path]:
    """The argv that runs `script` through a wrapper written in `folder`, and the file where
    the wrapper leaves the exit code."""
    if any("\n" in a or "\r" in a for a in arguments):
        raise ScriptStartError("An argument of a .bat script cannot hold a line break")
    exit_file = folder / EXIT_CODE_NAME
    exit_file.unlink(missing_ok=True)
    child = subprocess.list2cmdline([windows_path(script), *arguments])
    wrapper = folder / WRAPPER_NAME
    wrapper.write_bytes(
        (
            f'@cmd /d /s /c "{_escaped(child)}"\r\n'
            f'@>"{windows_path(exit_file)}" echo %ERRORLEVEL%\r\n'
            "@exit %ERRORLEVEL%\r\n"
        ).encode()
    )
    return [*launcher, windows_path(wrapper)], exit_file


def _escaped(line: str) -> str:
    """`line` as a wrapper line must hold it so that cmd's parse of the wrapper gives it back.

    The wrapper's line starts with `cmd /d /s /c "`: that quote is open when `line` begins."""
    out, quoted = [], True
    for char in line:
        if char == "%":
            out.append("%%")
            continue
        if char == '"':
            quoted = not quoted
        elif char in _SPECIAL and not quoted:
            out.append("^")
        out.append(char)
    return "".join(out)


def full_exit_code(exit_file: Path, status: int | None) -> int | None:
    """The child's exit code from the wrapper's file; `status` (8 bits) when there is none
    (the run was stopped before the wrapper could write it)."""
    with contextlib.suppress(OSError, ValueError):
        return int(exit_file.read_text(encoding="utf-8", errors="replace").strip())
    return status
