"""Ordered output for Python scripts: the hook every script virtualenv gets.

stdout and stderr are two pipes, and which one the runner reads first is up to the scheduler:
a `print` just before a `raise` could land after the traceback. `install()` puts a module and a
.pth line into a virtualenv's site-packages; a Python started from it with SF_ORDERED_OUTPUT_FD
set (the runner does, on POSIX) sends what sys.stdout and sys.stderr get as records down that
one inherited pipe, in order (output_hook_module.py); streams.py reads them back. Tracebacks
look as before: the hook is not on any call stack. Bytes written to fd 1/2 directly (child
processes, os.write) still arrive on the plain pipes, in their own order.

Every virtualenv scripts run in calls it once, when it is built (environment.py's base one,
and the per-dependency ones). Example::

    install(Path(".../venv/lib/python3.11/site-packages"))
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

ORDERED_FD_VARIABLE = "SF_ORDERED_OUTPUT_FD"
MODULE_NAME = "scriptflow_ordered_output"
STDOUT_RECORD = 1
STDERR_RECORD = 2
RECORD_HEADER = 5  # stream (1 byte) + length (4 bytes, big-endian)
_SOURCE = Path(__file__).with_name("output_hook_module.py")  # copied, never imported here


def install(site_packages: Path) -> None:
    """Add the ordered-output hook to the virtualenv whose site-packages this is (idempotent:
    files already holding the same text are left alone)."""
    site_packages = Path(site_packages)
    site_packages.mkdir(parents=True, exist_ok=True)
    _write_if_changed(site_packages / f"{MODULE_NAME}.py", _SOURCE.read_text(encoding="utf-8"))
    # A .pth line starting with "import" is executed by site.py at start-up.
    _write_if_changed(site_packages / f"{MODULE_NAME}.pth", f"import {MODULE_NAME}\n")


@cache
def version() -> str:
    """A short name for the hook as this ScriptFlow writes it: dependency environments are
    made once and read-only, so the version is part of their name (a new hook, new ones)."""
    return hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:12]


def installed(site_packages: Path) -> bool:
    """Whether this virtualenv has the hook, as this version of ScriptFlow writes it."""
    try:
        module = (Path(site_packages) / f"{MODULE_NAME}.py").read_text(encoding="utf-8")
    except OSError:
        return False
    return (
        module == _SOURCE.read_text(encoding="utf-8")
        and (Path(site_packages) / f"{MODULE_NAME}.pth").is_file()
    )


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
