"""How a script becomes a command line: the interpreter for Python, cmd.exe or wine for .bat.

A .bat under wine (wine.py) runs with a UTF-8 locale, rewritten as UTF-8 when it is in a legacy
code page (bat_text.py), through a wrapper that keeps its whole exit code (bat_exit_code.py),
and is not started at all when it uses commands wine lacks (bat_commands.py). On Windows,
cmd.exe runs it as it is, and its output is read in the code page the console really has: the
one its last `chcp` names, else the OEM one."""

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

from scriptflow_prefect.execution import bat_text, wine
from scriptflow_prefect.execution.bat_commands import unavailable_commands
from scriptflow_prefect.execution.bat_exit_code import wrapped_command
from scriptflow_prefect.execution.environment import scrubbed_env
from scriptflow_prefect.execution.models import (
    CommandsUnavailable,
    LauncherMissing,
    ScriptKind,
    ScriptStartError,
)

WINDOWS_BAT_LAUNCHER = ["cmd.exe", "/d", "/c"]
WINE_BAT_LAUNCHER = ["wine", "cmd", "/c"]

if sys.platform == "win32":
    from scriptflow_prefect.execution.windows import console_codepage
else:

    def console_codepage(named: int | None) -> str:
        """A launcher other than wine on Linux: its output is taken to be cp1252."""
        return bat_text.DEFAULT_LEGACY


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
    return wine.is_wine(launcher)


def _wine_here(launcher: Sequence[str] | None) -> bool:
    return sys.platform != "win32" and wine.is_wine(launcher)


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


def launcher_ready(launcher: list[str] | None, language: str = "en") -> list[str] | None:
    """Warm the launcher up once per process (wine builds its prefix, printing set-up noise
    that must not become a script's output); under wine, also give the base prefix the
    locale and regional formats of `language` and the chcp stand-in (wine.py). Returns it."""
    if launcher:
        key = (*launcher, language)
        with _warm_lock:
            if key not in _warmed:
                if _wine_here(launcher):
                    env = scrubbed_env() | wine.locale_variables()
                    warm_up_launcher(launcher, env)
                    wine.prepare_base_prefix(launcher[0], env, language)
                else:
                    warm_up_launcher(launcher)
                _warmed.add(key)
    return launcher


def bat_setup(configured: str | None, language: str) -> list[str] | None:
    """The launcher that runs .bat files here (None: none), warmed up once per process."""
    return launcher_ready(bat_launcher(configured), language)


def run_bat_variables(
    launcher: Sequence[str] | None, run_folder: Path, language: str
) -> dict[str, str]:
    """What a .bat run under wine adds to its environment (wine.run_variables); nothing for
    cmd.exe."""
    if not _wine_here(launcher):
        return {}
    return wine.run_variables(run_folder, language)


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
    if _wine_here(launcher):
        # wine maps / to Z:, and a Windows-style path gives the batch a usual %0 and %~dp0.
        return wine.windows_path(script)
    return str(script)


def start_batch(
    script_path: Path, launcher: list[str] | None, arguments: Sequence[str], folder: Path
) -> tuple[list[str], str, Path | None]:
    """How a .bat starts here: its argv, the encoding of output lines that are not UTF-8,
    and the file where wine's wrapper leaves the whole exit code (None: the process's own).

    Under wine, raises CommandsUnavailable before anything runs, and rewrites a legacy code
    page file as UTF-8 in place (what wine's cmd reads). `folder`: the run's own files."""
    if not launcher:
        raise LauncherMissing()
    script = Path(script_path).absolute()
    data = script.read_bytes()
    encoding = bat_text.bat_encoding(data)
    legacy = bat_text.DEFAULT_LEGACY if encoding == bat_text.UTF8 else encoding
    if not _wine_here(launcher):
        argv = command(script, "batch", None, launcher, arguments)
        return argv, console_codepage(bat_text.chcp_codepage(data)), None
    missing = unavailable_commands(data.decode(encoding, "replace"))
    if missing:
        raise CommandsUnavailable(missing)
    converted = bat_text.utf8_text(data)
    if converted is not None:
        script.write_bytes(converted)
    argv, exit_file = wrapped_command(launcher, script, arguments, folder)
    return argv, legacy, exit_file
