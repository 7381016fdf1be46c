"""A run's status, trigger and state message in the reader's language (pages and emails).

Example::

    run_message(run)  # "Código de saída 3" in pt-BR for a run that ended with exit code 3
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.runs.messages import TEMPLATES, RunMessage
from scriptflow_prefect.runs.models import Run, Status, Trigger


def status_label(status: str | None) -> str:
    return {
        Status.QUEUED: _("Queued"),
        Status.RUNNING: _("Running"),
        Status.SUCCEEDED: _("Succeeded"),
        Status.FAILED: _("Failed"),
        Status.TIMED_OUT: _("Timed out"),
        Status.CANCELLED: _("Cancelled"),
        Status.CRASHED: _("Crashed"),
        None: _("Never run"),
    }.get(status, status or "")


def trigger_label(trigger: str | None) -> str:
    labels = {
        Trigger.MANUAL: _("Manual"),
        Trigger.SCHEDULED: _("Scheduled"),
        Trigger.RETRY: _("Retry"),
    }
    return labels.get(trigger or "", trigger or "")


def run_message(run: Run | Mapping[str, Any] | None) -> str:
    """The run's state message: translated by its code when ScriptFlow wrote it, else
    Prefect's message as it is (runs of older versions, Prefect's own crash messages)."""
    if run is None:
        return ""
    fields = run if isinstance(run, Mapping) else run.model_dump()
    code = fields.get("message_code")
    if code in TEMPLATES:
        try:
            return RunMessage(code, dict(fields.get("message_params") or {})).translated()
        except (KeyError, TypeError, ValueError):
            pass
    return fields.get("message") or ""
