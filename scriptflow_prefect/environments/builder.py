"""Resolve a spec to a pinned set (cached), and build the pinned set's environment (once).

Both steps run under a file lock of their own, so concurrent runs, the background build
started by a save and other processes on the same home wait for one another instead of
doing the work twice."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from scriptflow_prefect.environments import installer
from scriptflow_prefect.environments.layout import (
    Layout,
    read_json,
    waiting_lock,
    write_json,
)
from scriptflow_prefect.environments.models import (
    EnvironmentFailed,
    Resolution,
    Spec,
    env_key,
)
from scriptflow_prefect.execution import output_hook
from scriptflow_prefect.execution.environment import site_packages, venv_python
from scriptflow_prefect.execution.workdir import remove_workdir
from scriptflow_prefect.platform.home_modes import share_read_only

PINNED_FILE = "scriptflow-requirements.txt"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def cached_resolution(layout: Layout, spec: Spec) -> Resolution | None:
    """The spec's pinned set from an earlier resolution, without calling uv."""
    path = layout.resolution(spec.digest)
    data = read_json(path)
    if not data or data.get("status") != "ready":
        return None
    pinned = tuple(data.get("pinned") or ())
    key = _key(pinned, spec)
    if data.get("key") != key:  # another hook since: what the garbage collection keeps
        write_json(path, {**data, "key": key})
    return Resolution(pinned=pinned, key=key, log=str(data.get("log") or ""))


def _key(pinned: tuple[str, ...], spec: Spec) -> str:
    return env_key(pinned, spec, output_hook.version())


def resolve(layout: Layout, spec: Spec, python: Path, *, refresh: bool = False) -> Resolution:
    """The pinned set for `spec`: from the cache, or from uv (`refresh`: from uv always,
    which picks up new releases of requirements that are not pinned)."""
    if not refresh and (found := cached_resolution(layout, spec)):
        return found
    layout.ensure()
    path = layout.resolution(spec.digest)
    with waiting_lock(layout.lock("resolve", spec.digest)):
        if not refresh and (found := cached_resolution(layout, spec)):
            return found  # resolved by another run while this one waited
        log = io.StringIO()
        record = {"requirements": list(spec.requirements), "resolved_at": _now()}
        try:
            pinned = installer.compile_requirements(
                spec.requirements, python, spec.index, layout.cache_dir, log
            )
        except installer.InstallerError as exc:
            write_json(
                path, {**record, "status": "failed", "reason": str(exc), "log": log.getvalue()}
            )
            raise install_failed(spec, str(exc), log.getvalue()) from None
        key = _key(pinned, spec)
        write_json(
            path,
            {
                **record,
                "status": "ready",
                "pinned": list(pinned),
                "key": key,
                "log": log.getvalue(),
            },
        )
        return Resolution(pinned, key, log.getvalue())


def install_failed(spec: Spec, reason: str, log: str) -> EnvironmentFailed:
    shown = ", ".join(spec.requirements)
    if len(shown) > 200:
        shown = shown[:199] + "…"
    return EnvironmentFailed("install_failed", {"requirements": shown, "reason": reason}, log)


def is_ready(env_dir: Path) -> bool:
    return (env_dir / "pyvenv.cfg").is_file() and venv_python(env_dir).exists()


def ensure_built(
    layout: Layout,
    spec: Spec,
    resolution: Resolution,
    python: Path,
    cancel: threading.Event | None = None,
) -> Path:
    """The python of the resolution's environment, built first if it is not there yet.

    Call it holding a lease on the key (layout.lease): the readiness check happens under
    the build lock, which the garbage collection holds while it removes an environment."""
    key = resolution.key
    env_dir = layout.env_dir(key)
    with waiting_lock(layout.lock("build", key), cancel):
        if is_ready(env_dir):
            return venv_python(env_dir)
        _build(layout, spec, resolution, python)
    return venv_python(env_dir)


def _build(layout: Layout, spec: Spec, resolution: Resolution, python: Path) -> None:
    key = resolution.key
    env_dir, tmp = layout.env_dir(key), layout.build_dir(key)
    failed, log_path = layout.beside(key, "failed"), layout.beside(key, "log")
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"Environment {key}, built {_now()}\n")
        log.write(f"Requirements: {', '.join(spec.requirements)}\n")
        log.write(f"Resolved to: {', '.join(resolution.pinned) or '(nothing)'}\n")
        log.write(resolution.log)
        try:
            installer.make_venv(tmp, python, layout.cache_dir, log)
            pinned_file = tmp / PINNED_FILE
            pinned_file.write_text("\n".join(resolution.pinned) + "\n", encoding="utf-8")
            installer.install_pinned(
                pinned_file, venv_python(tmp), spec.index, layout.cache_dir, log
            )
            _finish_environment(tmp)
            share_read_only(tmp)  # made under umask 077: the accounts scripts run as read it
            installer.remove_write_bits(tmp)
        except installer.InstallerError as exc:
            log.write(f"FAILED: {exc}\n")
            log.flush()
            failed.write_text(str(exc), encoding="utf-8")
            with contextlib.suppress(OSError):
                remove_workdir(tmp)
            text = log_path.read_text(encoding="utf-8", errors="replace")
            raise install_failed(spec, str(exc), text) from None
        write_json(
            layout.beside(key, "json"),
            {
                "key": key,
                "pinned": list(resolution.pinned),
                "requirements": list(spec.requirements),
                "index": spec.index,
                "python": spec.python,
                "built_at": _now(),
            },
        )
        if env_dir.exists():  # left half-made by something else: not usable
            remove_workdir(env_dir)
        os.rename(tmp, env_dir)  # the environment appears whole, or not at all
        failed.unlink(missing_ok=True)
        log.write(f"Ready: {env_dir}\n")


def _finish_environment(env_dir: Path) -> None:
    """The last change to an environment before it is made read-only: what the shared
    script-venv gets too (stdout and stderr in the order the script wrote them)."""
    output_hook.install(site_packages(env_dir))
