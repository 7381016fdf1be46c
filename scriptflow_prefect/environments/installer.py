"""The uv commands: resolve requirements to a pinned set, make a virtualenv, install a set.

uv comes from its PyPI package (`uv.find_uv_bin()`), so nothing is downloaded at run time.
Every call says where packages come from (SCRIPTFLOW_PACKAGE_INDEX_URL, or the default
index), ignores uv's own config files and `UV_*` index settings (the environment key names
the index: a setting elsewhere would be invisible to it), never downloads a Python, and
installs wheels only: building a source distribution runs the package's own code as
ScriptFlow's account, outside the sandbox scripts run in."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from uv import find_uv_bin

from scriptflow_prefect.execution.environment import scrubbed_env

UV_TIMEOUT_SECONDS = 900
# uv settings from the service's environment that would change what gets installed.
_IGNORED_UV_VARIABLES = (
    "UV_INDEX",
    "UV_DEFAULT_INDEX",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_CACHE_DIR",
    "UV_PYTHON",
    "UV_CONFIG_FILE",
    "UV_LINK_MODE",
    "UV_NO_BUILD",
)
_COMMON = ["--no-config", "--color", "never", "--no-progress"]


class InstallerError(RuntimeError):
    """uv said no; the message is its reason, in one line."""


def index_arguments(index: str | None) -> list[str]:
    """Where packages come from: an index URL, or only a folder of wheels (offline)."""
    if not index:
        return []
    if index.startswith(("http://", "https://", "file://")):
        return ["--default-index", index]
    return ["--no-index", "--find-links", index]


def uv_environment(cache_dir: Path) -> dict[str, str]:
    """A script's scrubbed environment (no ScriptFlow secrets) with uv's cache under the home.

    The cache sits on the environments' file system, so installs are hard links into it."""
    env = {
        name: value
        for name, value in scrubbed_env().items()
        if not name.upper().startswith(_IGNORED_UV_VARIABLES)
    }
    env["UV_CACHE_DIR"] = str(cache_dir)
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


def compile_requirements(
    requirements: Sequence[str],
    python: Path,
    index: str | None,
    cache_dir: Path,
    log: IO[str],
) -> tuple[str, ...]:
    """The pinned set (`name==version`, sorted) for `requirements` on `python`."""
    args = ["pip", "compile", "-", "--python", str(python), "--no-header", "--no-annotate"]
    args += ["--no-build", *index_arguments(index)]
    out = _run(args, cache_dir, log, stdin_text="\n".join(requirements) + "\n")
    pinned = [line.strip() for line in out.splitlines()]
    return tuple(sorted(line for line in pinned if line and not line.startswith(("#", "-"))))


def make_venv(target: Path, python: Path, cache_dir: Path, log: IO[str]) -> None:
    # Relocatable: it is built under a temporary name and renamed into place when complete.
    _run(["venv", str(target), "--python", str(python), "--relocatable"], cache_dir, log)


def install_pinned(
    pinned_file: Path, python: Path, index: str | None, cache_dir: Path, log: IO[str]
) -> None:
    """Exactly the pinned set; bytecode compiled now, because the environment is read-only
    to the scripts that use it (they could not write their __pycache__)."""
    args = ["pip", "sync", str(pinned_file), "--python", str(python), "--compile-bytecode"]
    _run([*args, "--no-build", *index_arguments(index)], cache_dir, log)


def _run(args: list[str], cache_dir: Path, log: IO[str], stdin_text: str | None = None) -> str:
    """Run uv; its messages go to `log`, its output is returned; InstallerError if it fails."""
    command = [find_uv_bin(), *args, *_COMMON]
    log.write(f"$ uv {' '.join(args)}\n")
    log.flush()
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            input=stdin_text,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=uv_environment(cache_dir),
            timeout=UV_TIMEOUT_SECONDS,
            check=False,
            stdin=None if stdin_text is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        log.write(f"uv did not finish within {UV_TIMEOUT_SECONDS} s\n")
        raise InstallerError(f"uv did not finish within {UV_TIMEOUT_SECONDS} s") from None
    except OSError as exc:
        log.write(f"uv could not start: {exc}\n")
        raise InstallerError(f"uv could not start: {exc}") from None
    log.write(done.stderr)
    log.write(f"(exit code {done.returncode}, {time.monotonic() - started:.2f} s)\n")
    log.flush()
    if done.returncode != 0:
        raise InstallerError(reason_of(done.stderr) or f"uv exited with {done.returncode}")
    return done.stdout


def reason_of(stderr: str) -> str:
    """uv's error in one line: 'error: X' and its 'cause:' / 'Caused by:' lines, joined.

    'No solution found when resolving dependencies' is left out when a cause follows: the
    cause says which requirement could not be met, and why."""
    lines = stderr.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("error:")), None)
    if start is None:
        return " ".join(ln.strip() for ln in lines if ln.strip())[-600:]
    parts = []
    for line in lines[start:]:
        text = line.strip()
        for prefix in ("error:", "cause:", "Caused by:", "×", "╰─▶", "help:"):
            text = text.removeprefix(prefix).strip()
        if text:
            parts.append(text.rstrip(":"))
    if len(parts) > 1 and parts[0].startswith("No solution found"):
        parts = parts[1:]
    return ": ".join(parts)[:600]


def remove_write_bits(root: Path) -> None:
    """Make a finished environment read-only: every file and folder loses its write bits.

    The files are hard links into uv's cache, which is then read-only too: a process that
    could write one would change every environment that links it. (Root ignores modes:
    the sandbox mounts environments read-only for that, see service.environment_dir_for_python.)
    """
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            _drop_write(Path(folder, name))
        for name in dirs:
            _drop_write(Path(folder, name))
    _drop_write(root)


def _drop_write(path: Path) -> None:
    if path.is_symlink():
        return
    mode = path.stat().st_mode
    path.chmod(mode & ~0o222)
