"""The `run_script` flow: runs one version of an uploaded script and keeps what it printed.

Every ScriptFlow script is a deployment of this flow. Run by hand, for example::

    prefect deployment run 'run_script/nightly-backup'
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_client
from prefect.context import get_run_context
from prefect.logging.loggers import PrefectLogAdapter
from prefect.states import Cancelled, Completed, Failed, State
from pydantic import ValidationError

from scriptflow_prefect.environments import service as environments
from scriptflow_prefect.environments.models import EnvironmentFailed, WaitCancelled
from scriptflow_prefect.execution import workspace
from scriptflow_prefect.execution.environment import script_env, scrubbed_env
from scriptflow_prefect.execution.launchers import bat_setup, run_bat_variables, run_wine_env
from scriptflow_prefect.execution.leftovers import RUN_ID_VARIABLE
from scriptflow_prefect.execution.masking import Masker
from scriptflow_prefect.execution.models import (
    CommandsUnavailable,
    LauncherMissing,
    ScriptStartError,
    UnknownAccount,
)
from scriptflow_prefect.execution.process import run_script_process
from scriptflow_prefect.execution.sandbox import Sandbox, interpreter_folders, sandbox_state
from scriptflow_prefect.execution.workdir import fresh_workdir, remove_workdir
from scriptflow_prefect.history import index as history_index
from scriptflow_prefect.history import run_files
from scriptflow_prefect.history.capture import PrefectLogSink
from scriptflow_prefect.history.current_line import CurrentLineFile, current_path
from scriptflow_prefect.history.output_log import OutputLogWriter
from scriptflow_prefect.platform.disk_space import DiskFull, human_size
from scriptflow_prefect.platform.prefect_names import (
    EXIT_CODE_LABEL,
    SKIPPED_STATE_NAME,
    TIMED_OUT_STATE_NAME,
)
from scriptflow_prefect.platform.settings import get_settings
from scriptflow_prefect.runs import active_runs, policies
from scriptflow_prefect.runs.cancel_watch import watcher
from scriptflow_prefect.runs.input_wait import InputWait
from scriptflow_prefect.runs.messages import RunMessage
from scriptflow_prefect.runs.models import Status
from scriptflow_prefect.scripts import run_contents
from scriptflow_prefect.scripts import secrets as script_secrets

# Prefect's log table is for browsing; the complete output goes to the run's output file.
# Past this many lines a run's output reaches Prefect only as a notice.
PREFECT_LOG_LINE_LIMIT = 20_000


def _stream_loggers(flow_run) -> dict[str, PrefectLogAdapter]:
    extra = {
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "flow_name": "run_script",
    }
    parent = logging.getLogger("prefect.flow_runs")
    loggers = {}
    for stream in ("stdout", "stderr"):
        logger = logging.getLogger(f"prefect.flow_runs.{stream}")
        if logger.propagate:
            # Script output goes to Prefect's API only: echoing it through the root logger's
            # rich console handler cost ~0.3 ms a line (20 000 lines: +6 s to a run).
            logger.handlers = list(parent.handlers)
            logger.propagate = False
        loggers[stream] = PrefectLogAdapter(logger, extra)
    return loggers


def _keep_changed_files(settings, run_id: str, cwd: Path, before, system) -> None:
    """Copy what the run created or changed in its folder beside its output (bounded)."""
    try:
        changed, complete = workspace.changed_since(before, cwd)
        run_files.keep(settings, run_id, cwd, changed, complete)
    except OSError as exc:  # the run's own result stands; say what was not kept
        system.warning(f"The files this run changed could not be kept: {exc}")


@flow(name="run_script", persist_result=False, log_prints=False, validate_parameters=True)
def run_script(
    script_id: int,
    version: int,
    sha256: str,
    kind: Literal["python", "batch"] = "python",
    filename: str = "script.py",
    script_name: str = "",
    timeout_seconds: int = 300,
    policy: dict[str, Any] | None = None,
    arguments: list[str] | None = None,
    environment: dict[str, str] | None = None,
    secrets: list[str] | None = None,
    requirements: list[str] | None = None,
    working_folder: dict[str, Any] | None = None,
    run_as: str | None = None,
    files: list[dict[str, Any]] | None = None,
) -> State:
    """Fetch the script version's files by hash, run it in its working folder, stream its
    output, keep the files it created or changed there.

    Example: `run_script(script_id=1, version=2, sha256="…", kind="python")`.
    `arguments`, `environment`, `secrets` (names of Prefect Secret blocks' variables),
    `requirements`, `working_folder` and `run_as` are the script's "How it runs" settings
    (scripts/run_config.py); a run started with other `arguments` runs with those. Secret
    values are read from Prefect at start, given to the script as environment variables and
    printed as `***` (execution/masking.py); so is an error's text in the run's message.
    `files`: every file of the version, `[{"name", "sha256", "size"}]` (None: the entry point
    alone), written in its working folder (execution/workspace.py) under their own names.
    """
    settings = get_settings()
    flow_run = get_run_context().flow_run
    run_id = flow_run.id
    loggers = _stream_loggers(flow_run)
    system = loggers["stdout"]
    counter = {"lines": 0}

    try:
        rules = policies.policy_from(policy)
    except ValidationError as exc:  # edited in Prefect into something that is no policy
        err = exc.errors()[0]
        where = ".".join(str(p) for p in ("policy", *err["loc"]))
        msg = RunMessage("parameters_invalid", {"reason": f"{where}: {err['msg']}"[:300]})
        system.error(msg.text)
        with get_client(sync_client=True) as client:
            client.update_flow_run_labels(run_id, msg.label())
        return Failed(message=msg.text)
    with get_client(sync_client=True) as client:
        decision = policies.before_start(client, flow_run, rules)
        if not decision.run and decision.message:
            system.warning(decision.message.text)
            client.update_flow_run_labels(run_id, decision.message.label())
    if not decision.run:
        text = decision.message.text if decision.message else None
        return Cancelled(name=SKIPPED_STATE_NAME, message=text)

    try:  # by name, from Prefect's Secret blocks: the parameters never hold a value
        secret_values = script_secrets.load_values(script_id, secrets or [])
    except script_secrets.SecretsMissing as exc:
        msg = RunMessage("secrets_missing", {"names": ", ".join(exc.names)})
        system.error(msg.text)
        with get_client(sync_client=True) as client:
            client.update_flow_run_labels(run_id, msg.label())
        return Failed(message=msg.text)
    account = run_as or settings.run_as
    password = None
    if account and sys.platform == "win32":  # a Windows logon needs the account's password
        try:
            password = script_secrets.load_run_as_password(account)
        except script_secrets.SecretsMissing as exc:
            msg = RunMessage("secrets_missing", {"names": ", ".join(exc.names)})
            system.error(msg.text)
            with get_client(sync_client=True) as client:
                client.update_flow_run_labels(run_id, msg.label())
            return Failed(message=msg.text)
    # The password is masked too: a script that prints it does not put it in a log.
    mask = Masker([*secret_values.values(), *([password] if password else [])])

    try:  # parameters can be edited in Prefect: names checked again, hashes verified
        contents = run_contents.contents_for_run(filename, sha256, files)
    except run_contents.Unusable as exc:
        msg = RunMessage("files_unavailable", {"reason": str(exc)})
        system.error(msg.text)
        with get_client(sync_client=True) as client:
            client.update_flow_run_labels(run_id, msg.label())
        return Failed(message=msg.text)
    entry, data = contents[0]
    run_root = fresh_workdir(settings.work_dir, str(run_id))  # the run's own: wine prefix...
    folder = working_folder or {}
    try:
        place = workspace.prepare(
            str(folder.get("mode") or "script"),
            folder.get("path"),
            run_root=run_root,
            workspaces=settings.workspaces_dir,
            home=settings.home,
            script_id=script_id,
        )
        workspace.write_files(place.script_dir, contents)
        before = workspace.snapshot(place.cwd)
    except (workspace.WorkingFolderError, OSError) as exc:
        remove_workdir(run_root)
        msg = RunMessage("working_folder", {"reason": str(exc)[:300]})
        system.error(msg.text)
        with get_client(sync_client=True) as client:
            client.update_flow_run_labels(run_id, msg.label())
        return Failed(message=msg.text)
    if place.created:
        system.info(f"Made the working folder {place.cwd}: it did not exist.")
    script_path = place.script_dir / entry

    launcher = bat_setup(settings.bat_launcher, settings.language) if kind == "batch" else None
    env = script_env(scrubbed_env(), {**(environment or {}), **secret_values})
    env[RUN_ID_VARIABLE] = str(run_id)  # finds its processes after a crash (leftovers.py)
    if launcher:
        # the run's own wine prefix, made from the base prefix of the account it runs as
        owner_home = os.path.expanduser(f"~{account}") if account else env.get("HOME", "")
        env.update(run_wine_env(launcher, run_root, {**env, "HOME": owner_home}))
        env.update(run_bat_variables(launcher, run_root, settings.language))  # locale, DATE

    settings.outputs_dir.mkdir(parents=True, exist_ok=True)
    out_path = settings.outputs_dir / f"{run_id}.log"
    waited = InputWait(kind, data.decode("utf-8", "replace") if kind == "batch" else "")
    cancel = watcher.register(run_id)
    prefect_log = PrefectLogSink(run_id)  # the same records as `loggers`, ~50x cheaper
    ended: tuple[Callable[..., State], RunMessage] | None = None  # not started (or no room): why
    try:
        with (
            OutputLogWriter(out_path) as out,
            CurrentLineFile(current_path(settings.outputs_dir, run_id)) as current,
        ):

            def on_lines(ts, stream, texts):
                # The file gets every line in one write per chunk (the fast path); Prefect's
                # log table gets the first PREFECT_LOG_LINE_LIMIT lines of the run. Secret
                # values are masked first, for both and for all that reads them.
                texts = mask.lines(texts)
                out.write_lines(ts, stream, texts)
                waited.lines(stream, texts)
                room = PREFECT_LOG_LINE_LIMIT - counter["lines"]
                counter["lines"] += len(texts)
                prefect_log.send(ts, stream, texts[: max(room, 0)])
                if 0 <= room < len(texts):
                    system.info("… more output is kept in ScriptFlow's output file for this run")

            def on_current(stream, text):
                # The line being written (a progress bar), masked as finished lines are.
                current.update(stream, None if text is None else mask.text(text))

            try:
                # Waits for the script's dependency environment (built once, then reused).
                with environments.python_for_run(
                    settings,
                    kind=kind,
                    requirements=requirements or [],
                    source=data,
                    script_id=script_id,
                    cancel=cancel,
                ) as python:
                    result = run_script_process(
                        script_path,
                        kind,
                        place.cwd,
                        timeout=timeout_seconds or None,
                        on_line=None,
                        on_lines=on_lines,
                        cancel=cancel,
                        python=python,
                        launcher=launcher,
                        env=env,
                        arguments=arguments or [],
                        sandbox=_sandbox(settings, run_root, python, place.beyond(run_root)),
                        run_as=account,
                        run_as_password=password,
                        on_current=on_current,
                        private_dir=run_root,
                        on_started=lambda proc: _record_script(settings, run_id, proc.pid),
                    )
            except CommandsUnavailable as exc:
                ended = (
                    Failed,
                    RunMessage("commands_unavailable", {"commands": ", ".join(exc.commands)}),
                )
                system.error(ended[1].text)
            except (LauncherMissing, ScriptStartError) as exc:
                reason = mask.text(str(exc))
                system.error(reason)
                if isinstance(exc, LauncherMissing):
                    msg = RunMessage("launcher_missing")
                elif isinstance(exc, UnknownAccount):
                    msg = RunMessage(
                        "unknown_account", {"account": exc.account, "worker": platform.node()}
                    )
                else:
                    msg = RunMessage("start_failed", {"reason": reason[:300]})
                ended = Failed, msg
            except EnvironmentFailed as exc:
                ended = Failed, RunMessage(exc.code, exc.params)
                system.error(ended[1].text)
                # The run's output says why, in the installer's own words.
                out.write_lines(datetime.now(UTC), "stderr", [ended[1].text, *exc.log.splitlines()])
            except WaitCancelled:
                ended = Cancelled, RunMessage("cancelled_before_start")
            except DiskFull:  # the script was stopped: its output could not be kept
                pass  # out.failure, below
            except Exception as exc:
                if not mask:
                    raise
                # Prefect shows an exception's text as the run's message and logs it
                raise RuntimeError(mask.text(f"{type(exc).__name__}: {exc}")) from None
        if isinstance(out.failure, DiskFull):  # while it ran, or its last lines at the end
            free, folder = human_size(out.failure.free), str(out.failure.folder)
            ended = Failed, RunMessage("disk_full", {"free": free, "folder": folder})
            system.error(ended[1].text)
        if ended is None:
            _keep_changed_files(settings, str(run_id), place.cwd, before, system)
    finally:
        watcher.unregister(run_id)
        remove_workdir(run_root)
    # The output file is closed: make it searchable (big ones: in the background).
    history_index.index_after_run(
        settings, run_id, script_id=script_id, expected=flow_run.expected_start_time
    )
    if ended is not None:  # the script did not start
        state, message = ended
        with get_client(sync_client=True) as client:
            client.update_flow_run_labels(run_id, message.label())
        return state(message=message.text)

    outcome = Status(result.outcome)
    if outcome == Status.TIMED_OUT:
        message = RunMessage("timed_out", {"seconds": timeout_seconds})
    elif outcome == Status.CANCELLED:
        message = RunMessage("cancelled")
    elif outcome == Status.FAILED and waited.seen:
        message = RunMessage("waits_for_input", {"code": result.exit_code})
    else:
        message = RunMessage("exit_code", {"code": result.exit_code})
    labels = message.label()
    if result.exit_code is not None:
        labels[EXIT_CODE_LABEL] = str(result.exit_code)
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(run_id, labels)  # before the state: read together
        if outcome in (Status.FAILED, Status.TIMED_OUT):
            policies.after_failure(client, flow_run, rules, system)
    if outcome == Status.SUCCEEDED:
        return Completed(message=message.text)
    if outcome == Status.TIMED_OUT:
        return Failed(name=TIMED_OUT_STATE_NAME, message=message.text)
    if outcome == Status.CANCELLED:
        return Cancelled(message=message.text)
    return Failed(message=message.text)


def _record_script(settings, run_id, pid: int) -> None:
    """The worker's record of the run gets the script's process identity (active_runs.py)."""
    try:
        active_runs.script_started(settings.home, run_id, pid)
    except OSError as exc:  # the run goes on; recovery then finds it by its run id
        logging.getLogger("scriptflow.recovery").warning("could not record the script: %s", exc)


def _sandbox(
    settings, run_root: Path, python: Path | None, folders: tuple[Path, ...] = ()
) -> Sandbox:
    """What the run reaches: its run folder and working `folders`; its interpreter and
    environment, read-only."""
    return Sandbox(
        hidden=(settings.home, *settings.secret_files()),
        writable=(run_root, *folders),
        read_only=(
            *((environments.environment_dir_for_python(python),) if python else ()),
            *interpreter_folders(python),
        ),
        enforced=sandbox_state(settings.sandbox, settings.home).enforced,
    )


__all__ = ["run_script"]
