"""What the run_script flow, the overlay, the scripts feature and the worker call.

    with python_for_run(settings, kind="python", requirements=[...], source=data,
                        script_id=7, cancel=event) as python:
        ...run the script with `python`...    # the environment is leased meanwhile

    script_saved(settings, 7, "python", ["requests"], data, refresh=True)  # build at once
    state_of(settings, 7, "python", ["requests"], data)   # ready | building | failed + log
    collect_garbage(settings)                              # at start and daily

Resolutions are cached by spec (requirements + index + interpreter) and refreshed when a
script's requirements are saved (a PATCH with `requirements`, or a new version whose
`# /// script` block differs): a requirement that is not pinned moves to the newest release
then, and stays there between saves, so runs are repeatable."""

from __future__ import annotations

import contextlib
import logging
import platform
import queue
import sys
import sysconfig
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet

from scriptflow_prefect.environments import builder, cleanup
from scriptflow_prefect.environments.inline import InlineMetadataError, read_inline_metadata
from scriptflow_prefect.environments.layout import (
    Layout,
    is_locked,
    lease,
    read_json,
    touch,
    write_json,
)
from scriptflow_prefect.environments.models import (
    EnvironmentFailed,
    EnvironmentState,
    Spec,
    packages_of,
)
from scriptflow_prefect.execution.environment import ensure_script_python
from scriptflow_prefect.platform.settings import Settings

log = logging.getLogger("scriptflow.environments")


def interpreter_identity() -> str:
    """The interpreter scripts run with: environments are made for it alone."""
    base = getattr(sys, "_base_executable", sys.executable)
    return "|".join(
        [sys.implementation.name, platform.python_version(), sysconfig.get_platform(), base]
    )


def spec_for(settings: Settings, requirements: Sequence[str], source: bytes | None) -> Spec:
    """The script's spec: its requirements and its file's `# /// script` block together.

    EnvironmentFailed when the block cannot be read or asks for another Python."""
    try:
        inline = read_inline_metadata(source or b"")
    except InlineMetadataError as exc:
        raise EnvironmentFailed(
            "inline_metadata_invalid", {"line": exc.line, "reason": str(exc)}
        ) from None
    version = platform.python_version()
    if inline.requires_python and not SpecifierSet(inline.requires_python).contains(
        version, prereleases=True
    ):
        raise EnvironmentFailed(
            "python_unsupported", {"needed": inline.requires_python, "version": version}
        )
    combined = {_requirement(text) for text in [*requirements, *inline.dependencies]}
    return Spec(
        requirements=tuple(sorted(combined, key=str.lower)),
        requires_python=inline.requires_python,
        index=settings.package_index_url,
        python=interpreter_identity(),
    )


def _requirement(text: str) -> str:
    """The canonical form (one line, no options); the requirements field checks the same on
    save, but a power user can change the deployment's parameters in Prefect directly."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        reason = str(exc)
    else:
        if not requirement.url:
            return str(requirement)
        reason = "a name and versions from the package index, not a URL"
    raise EnvironmentFailed("install_failed", {"requirements": text[:200], "reason": reason})


def layout_of(settings: Settings) -> Layout:
    return Layout(settings.envs_dir)


@contextlib.contextmanager
def python_for_run(
    settings: Settings,
    *,
    kind: str,
    requirements: Sequence[str],
    source: bytes,
    script_id: int | None,
    cancel: threading.Event | None = None,
) -> Iterator[Path | None]:
    """The python a run uses (None for a .bat), its environment resolved and built first if
    need be and leased until the block ends. EnvironmentFailed if it cannot be made,
    models.WaitCancelled if `cancel` is set while the run waits for someone else's build."""
    if kind != "python":
        yield None
        return
    spec = spec_for(settings, requirements, source)
    base = ensure_script_python(settings.script_venv_dir)
    if spec.empty:
        yield base  # the fast path: the shared script-venv, as before
        return
    layout = layout_of(settings)
    if script_id is not None:
        _remember(layout, script_id, spec)
    resolution = builder.resolve(layout, spec, base)
    with lease(layout, resolution.key):
        python = builder.ensure_built(layout, spec, resolution, base, cancel)
        touch(layout.beside(resolution.key, "used"))
        yield python


def environment_dir_for_python(python: Path) -> Path:
    """The environment folder a run's python belongs to (for the sandbox: read-only there).

    `python` is what `python_for_run` gave: `<env>/bin/python` (`<env>\\Scripts\\python.exe`)
    of a dependency environment or of the shared script-venv. Not resolved: the venv's python
    is a link to the base interpreter, whose own folder is elsewhere."""
    return Path(python).parent.parent


def script_saved(
    settings: Settings,
    script_id: int,
    kind: str,
    requirements: Sequence[str],
    source: bytes | None,
    *,
    refresh: bool = False,
) -> None:
    """A script's requirements or file changed: start building its environment now, in the
    background, so that its first run rarely waits. `refresh` resolves again even when the
    spec was resolved before (the requirements were saved)."""
    layout = layout_of(settings)
    try:
        spec = spec_for(settings, requirements, source) if kind == "python" else None
    except EnvironmentFailed:
        spec = None  # the page and the run say why
    if spec is None or spec.empty:
        forget_script(settings, script_id)
        return
    before = (read_json(layout.pointer(script_id)) or {}).get("spec")
    _remember(layout, script_id, spec)
    # Unchanged requirements (a new version with the same block): nothing to do until a run.
    if refresh or before != spec.digest:
        _start_building(settings, layout, spec, refresh=refresh)


def forget_script(settings: Settings, script_id: int) -> None:
    """The script is gone or needs no environment: its environment may be collected."""
    layout_of(settings).pointer(script_id).unlink(missing_ok=True)


def _remember(layout: Layout, script_id: int, spec: Spec) -> None:
    path = layout.pointer(script_id)
    if (read_json(path) or {}).get("spec") != spec.digest:
        write_json(path, {"spec": spec.digest, "requirements": list(spec.requirements)})


def state_of(
    settings: Settings,
    script_id: int,
    kind: str,
    requirements: Sequence[str],
    source: bytes | None,
) -> EnvironmentState:
    """What the script's environment is now. One that is neither there nor being built is
    started (after a collection, or for a script saved before environments existed)."""
    version = platform.python_version()
    try:
        spec = spec_for(settings, requirements, source) if kind == "python" else None
    except EnvironmentFailed as exc:
        return EnvironmentState("failed", python=version, failure=(exc.code, exc.params))
    if spec is None or spec.empty:
        return EnvironmentState("ready", python=version)
    layout = layout_of(settings)
    state = EnvironmentState("building", requirements=list(spec.requirements), python=version)
    resolved = read_json(layout.resolution(spec.digest))
    busy = spec.digest in _pending or is_locked(layout.lock("resolve", spec.digest))
    if resolved is None or resolved.get("status") != "ready":
        state.log = str((resolved or {}).get("log") or "")
        if resolved is not None and not busy:
            state.status = "failed"
            state.failure = _install_failure(spec, str(resolved.get("reason")))
        elif not busy:
            _start_building(settings, layout, spec, refresh=False)
        return state
    key = str(resolved["key"])
    state.packages = packages_of(list(resolved.get("pinned") or []))
    state.log = _text(layout.beside(key, "log"))
    busy = busy or is_locked(layout.lock("build", key))
    if builder.is_ready(layout.env_dir(key)):
        state.status = "ready"
        state.built_at = (read_json(layout.beside(key, "json")) or {}).get("built_at")
    elif layout.beside(key, "failed").exists() and not busy:
        state.status = "failed"
        reason = _text(layout.beside(key, "failed")).strip() or "see the install log"
        state.failure = _install_failure(spec, reason)
    elif not busy:
        _start_building(settings, layout, spec, refresh=False)
    return state


def _install_failure(spec: Spec, reason: str) -> tuple[str, dict[str, object]]:
    failed = builder.install_failed(spec, reason, "")
    return failed.code, failed.params


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def collect_garbage(settings: Settings, now: float | None = None) -> dict[str, object]:
    """Remove environments no script wants and no run used for cleanup.KEEP_DAYS days
    (before `now`, a POSIX time; default: the current time)."""
    report = cleanup.collect_garbage(layout_of(settings), now=now)
    if report["removed"]:
        log.info("removed unused script environments: %s", report["removed"])
    return report


# -- building in the background (one thread per process, one spec at a time) ----------------
_queue: queue.Queue[tuple[Settings, Layout, Spec, bool]] = queue.Queue()
_pending: set[str] = set()
_pending_lock = threading.Lock()
_thread: threading.Thread | None = None


def _start_building(settings: Settings, layout: Layout, spec: Spec, *, refresh: bool) -> None:
    global _thread
    with _pending_lock:
        if spec.digest in _pending:
            return
        _pending.add(spec.digest)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(
                target=_build_queued, name="scriptflow-environments", daemon=True
            )
            _thread.start()
    _queue.put((settings, layout, spec, refresh))


def _build_queued() -> None:
    while True:
        settings, layout, spec, refresh = _queue.get()
        try:
            base = ensure_script_python(settings.script_venv_dir)
            resolution = builder.resolve(layout, spec, base, refresh=refresh)
            with lease(layout, resolution.key):
                builder.ensure_built(layout, spec, resolution, base)
        except EnvironmentFailed:
            pass  # kept on disk with its log: the page and the next run show it
        except Exception:  # noqa: BLE001 - a background thread must go on with the next
            log.exception("building the environment for %s failed", ", ".join(spec.requirements))
        finally:
            with _pending_lock:
                _pending.discard(spec.digest)
