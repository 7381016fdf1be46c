"""The state messages ScriptFlow writes on runs, as a code and parameters.

A run's state message lives in Prefect, where power users read it in English, and one run is
read by people in different languages. So the flow (and the cancel) write the English text
as the state message and, beside it, the code and parameters in a flow-run label
(`scriptflow.message`: labels survive Prefect's API; extra state details do not). Pages and
emails translate by the code. A message with no code, or whose label was written for another
state (a power user set the run's state again in Prefect's UI), is shown as Prefect has it.

Example::

    msg = RunMessage("exit_code", {"code": 3})
    msg.text            # "Exit code 3", for Prefect
    msg.translated()    # "Código de saída 3" in pt-BR
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scriptflow_prefect.platform import i18n
from scriptflow_prefect.platform.i18n import N_, _
from scriptflow_prefect.platform.prefect_names import MESSAGE_LABEL

TEMPLATES: dict[str, str] = {
    "exit_code": N_("Exit code %(code)s"),
    "timed_out": N_("Timed out after %(seconds)s s; the process tree was stopped"),
    "cancelled": N_("Cancelled; the process tree was stopped"),
    "cancelled_before_start": N_("Cancelled before it started"),
    "cancel_requested": N_("Cancel requested"),
    "missed_skipped": N_(
        "Missed the time %(when)s (ScriptFlow was not running); skipped as the script's "
        "policy says."
    ),
    "missed_caught_up": N_(
        "Missed the time %(when)s; one catch-up run covers every missed time, so this one "
        "is skipped."
    ),
    "overlap_skipped": N_(
        "The previous run of this script was still running; skipped as the script's policy says."
    ),
    "launcher_missing": N_("Running .bat scripts needs a Windows worker or wine on this machine"),
    "unknown_account": N_(
        "The account %(account)s that this script runs as does not exist on the worker %(worker)s"
    ),
    "start_failed": N_("The script could not be started: %(reason)s"),
    "secrets_missing": N_(
        "Not started: the value of the secret variable(s) %(names)s could not be read from "
        "Prefect; set them again on the script's page."
    ),
    "commands_unavailable": N_(
        "Not started: %(commands)s not available on this Linux worker (wine); run this script "
        "on a Windows worker"
    ),
    "waits_for_input": N_(
        "Exit code %(code)s: this script waits for keyboard input, and a run has none; "
        "remove input()/pause"
    ),
    # The script's Python dependencies (environments/): `reason` is the installer's own words.
    "install_failed": N_("Could not install %(requirements)s: %(reason)s"),
    "inline_metadata_invalid": N_(
        "The '# /// script' block on line %(line)s cannot be read: %(reason)s"
    ),
    "python_unsupported": N_(
        "This script needs Python %(needed)s; scripts run with Python %(version)s here"
    ),
    # The deployment's parameters were edited in Prefect (scripts/drift.py shows and repairs
    # that): the worker (runs/worker.py) or the flow refuses them in words.
    "parameters_invalid": N_(
        "Not started: this script's deployment was given parameters in Prefect that cannot be "
        "used (%(reason)s); an administrator can repair it on the scheduler status page."
    ),
    "files_unavailable": N_(
        "Not started: the script's files cannot be read (%(reason)s); if its deployment was "
        "changed in Prefect, an administrator can repair it on the scheduler status page."
    ),
    "working_folder": N_("The working folder cannot be used: %(reason)s"),
    # platform/disk_space.py: output capture stopped while the disk still had its reserve.
    "disk_full": N_(
        "The disk is full: the output could not be kept (%(free)s free in %(folder)s); "
        "the script was stopped"
    ),
    # Crash recovery (runs/recovery.py): `at` is when the worker was last known alive.
    "crashed_restart": N_(
        "ScriptFlow stopped unexpectedly during this run at %(at)s; the script was stopped at "
        "restart"
    ),
    "crashed_restart_ended": N_(
        "ScriptFlow stopped unexpectedly during this run at %(at)s; its script had already ended"
    ),
    "runner_failed": N_("ScriptFlow's runner failed during this run: %(reason)s"),
    # Written by Prefect's server (the automation of runs/dead_man.py): no label, so
    # it is known by its text (no parameters).
    "worker_lost": N_(
        "The worker running this run stopped answering (no heartbeat); the run was marked crashed"
    ),
}
WHEN_PARAMS = {"when", "at"}  # ISO-8601 times, shown in the reader's time zone
# Messages Prefect's server writes by itself (an automation), without ScriptFlow's label.
SERVER_WRITTEN = ("worker_lost",)


@dataclass(frozen=True)
class RunMessage:
    code: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The English message, for Prefect's UI."""
        return TEMPLATES[self.code] % self.params

    def translated(self) -> str:
        shown = {k: _when(v) if k in WHEN_PARAMS else v for k, v in self.params.items()}
        return _(TEMPLATES[self.code], **shown)

    def label(self) -> dict[str, str]:
        """The flow-run label that keeps the code with the run."""
        value = {"code": self.code, "params": self.params, "text": self.text}
        return {MESSAGE_LABEL: json.dumps(value, separators=(",", ":"))}

    @classmethod
    def from_labels(cls, labels: dict[str, Any], state_message: str | None) -> RunMessage | None:
        """The coded message of a run whose state message is `state_message`, if any."""
        raw = labels.get(MESSAGE_LABEL)
        if not state_message:
            return None
        for code in SERVER_WRITTEN:
            if state_message == TEMPLATES[code]:
                return cls(code)
        if not isinstance(raw, str):
            return None
        try:
            data = json.loads(raw)
            msg = cls(str(data["code"]), dict(data.get("params") or {}))
            text = msg.text
        except (ValueError, KeyError, TypeError):
            return None
        return msg if text == data.get("text") == state_message else None


def _when(value: Any) -> str:
    try:
        return i18n.format_datetime(datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value)
