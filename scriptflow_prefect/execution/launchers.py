"""How a script becomes a command line: the interpreter for Python, cmd.exe or wine for .bat."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from scriptflow_prefect.execution.environment import scrubbed_env
from scriptflow_prefect.execution.models import LauncherMissing, ScriptKind, ScriptStartError

WINDOWS_BAT_LAUNCHER = ["cmd.exe", "/d", "/c"]
WINE_BAT_LAUNCHER = ["wine", "cmd", "/c"]
# wine's cmd reads a .bat in the OEM code page and writes to a pipe in the ANSI one; in the
# English/C locale of a Linux server that ANSI code page is 1252 (measured with wine 8).
WINE_OUTPUT_CODEPAGE = "cp1252"

if sys.platform == "win32":
    from scriptflow_prefect.execution.windows import oem_codepage
else:

    def oem_codepage() -> str:
        return WINE_OUTPUT_CODEPAGE


_warmed: set[tuple[str, ...]] = set()
_warm_lock = threading.Lock()


def bat_launcher(configured: str | None) -> list[str] | None:
    """The command prefix that runs a .bat file here, or None when this machine cannot.

    `configured` is the value of SCRIPTFLOW_BAT_LAUNCHER (shell-split); blank means unset.
    """
    if configured and configured.strip():
        return _split_command(configured)
    if sys.platform == "win32":
        return list(WINDOWS_BAT_LAUNCHER)
    if shutil.which("wine"):
        return list(WINE_BAT_LAUNCHER)
    return None


def warm_up_launcher(
    launcher: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> float:
    """Run ``exit 0`` through the launcher once; return the seconds it took.

    The first wine call in a new WINEPREFIX builds the prefix (~7 s) and prints set-up notes on
    stderr: doing it here keeps both out of the first script's run and output.
    """
    started = time.monotonic()
    try:
        subprocess.run(
            [*launcher, "exit", "0"],
            env=dict(scrubbed_env() if env is None else env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except OSError as exc:
        raise ScriptStartError(f"Could not start {launcher[0]!r}: {exc}") from exc
    return time.monotonic() - started


def launcher_ready(launcher: list[str] | None) -> list[str] | None:
    """Warm the launcher up once per process (wine builds its prefix, printing set-up noise
    that must not become a script's output); return it unchanged."""
    if launcher:
        with _warm_lock:
            if tuple(launcher) not in _warmed:
                warm_up_launcher(launcher)
                _warmed.add(tuple(launcher))
    return launcher


def _split_command(command: str) -> list[str]:
    if sys.platform != "win32":
        return shlex.split(command)
    # POSIX rules would eat the backslashes of a Windows path; strip quotes ourselves instead.
    return [
        part[1:-1] if part[:1] == part[-1:] == '"' and len(part) > 1 else part
        for part in shlex.split(command, posix=False)
    ]


def command(
    script_path: Path,
    kind: ScriptKind,
    python: Path | None,
    launcher: list[str] | None,
    arguments: Sequence[str] = (),
) -> list[str]:
    """The argv that runs the script: ``python -u script.py ARGS`` or ``<launcher> script.bat
    ARGS``."""
    script = script_path.absolute()
    if kind == "python":
        return [str(python or sys.executable), "-u", str(script), *arguments]
    if kind == "batch":
        if not launcher:
            raise LauncherMissing()
        return [*launcher, _bat_argument(script, launcher), *arguments]
    raise ValueError(f"Unknown script kind: {kind!r}")


def _bat_argument(script: Path, launcher: Sequence[str]) -> str:
    is_wine = os.path.basename(launcher[0]).lower().startswith("wine")
    if is_wine and sys.platform != "win32":
        # wine maps / to Z:, and a Windows-style path gives the batch a usual %0 and %~dp0.
        return "Z:" + str(script).replace("/", "\\")
    return str(script)


def default_fallback_encoding(kind: ScriptKind) -> str | None:
    """How to read a .bat's output line that is not UTF-8 (Python's is always UTF-8)."""
    if kind == "python":
        return None  # PYTHONIOENCODING=utf-8; undecodable bytes become U+FFFD
    return oem_codepage()
