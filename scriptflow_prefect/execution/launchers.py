"""How a script becomes a command line: the interpreter for Python, cmd.exe or wine for .bat."""

from __future__ import annotations

import contextlib
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
    run_env = dict(scrubbed_env() if env is None else env)
    _quiet_run([*launcher, "exit", "0"], run_env, timeout)
    wineserver = shutil.which("wineserver") if _is_wine(launcher) else None
    if wineserver:
        # Until this server has gone (3 s after its last client) the prefix's registry is not
        # written out, and runs need it for prefixes of their own (run_wine_env). Bounded: a
        # server that other users of the prefix keep alive has written it already.
        with contextlib.suppress(subprocess.TimeoutExpired):
            _quiet_run([wineserver, "-w"], run_env, 15)
    return time.monotonic() - started


def run_wine_env(
    launcher: Sequence[str], run_folder: Path, env: Mapping[str, str]
) -> dict[str, str]:
    """Environment for a .bat run under wine: a wine prefix of the run's own (`run_folder/wine`:
    the base prefix's drive_c and devices linked, its registry copied) and TMPDIR, where
    wine's server keeps its socket.

    Why: wineserver opens files for its clients. One shared server, started outside the run's
    sandbox, read SCRIPTFLOW_HOME/secret_key for a sandboxed .bat (measured); a prefix of the
    run's own gets a server of its own, started by the run and so inside its sandbox (~0.8 s
    more per .bat run: a server and wine's services start each time)."""
    if sys.platform == "win32" or not launcher or not _is_wine(launcher):
        return {}
    base = Path(env.get("WINEPREFIX") or Path(env.get("HOME") or Path.home()) / ".wine")
    tmp = run_folder / "tmp"
    tmp.mkdir(exist_ok=True)
    result = {"TMPDIR": str(tmp)}
    if not (base / "system.reg").is_file() or not (base / "drive_c").is_dir():
        return result  # no base prefix yet: wine builds it (first .bat of a run-as account)
    prefix = run_folder / "wine"
    (prefix / "dosdevices").mkdir(parents=True)
    (prefix / "drive_c").symlink_to(base / "drive_c")
    for device in (base / "dosdevices").iterdir():
        (prefix / "dosdevices" / device.name).symlink_to(os.readlink(device))
    for name in ("system.reg", "user.reg", "userdef.reg", ".update-timestamp"):
        if (base / name).is_file():
            shutil.copyfile(base / name, prefix / name)
    result["WINEPREFIX"] = str(prefix)
    return result


def _is_wine(launcher: Sequence[str]) -> bool:
    return os.path.basename(launcher[0]).lower().startswith("wine")


def _quiet_run(argv: list[str], env: dict[str, str], timeout: float) -> None:
    try:
        subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except OSError as exc:
        raise ScriptStartError(f"Could not start {argv[0]!r}: {exc}") from exc


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
    if _is_wine(launcher) and sys.platform != "win32":
        # wine maps / to Z:, and a Windows-style path gives the batch a usual %0 and %~dp0.
        return "Z:" + str(script).replace("/", "\\")
    return str(script)


def default_fallback_encoding(kind: ScriptKind) -> str | None:
    """How to read a .bat's output line that is not UTF-8 (Python's is always UTF-8)."""
    if kind == "python":
        return None  # PYTHONIOENCODING=utf-8; undecodable bytes become U+FFFD
    return oem_codepage()
