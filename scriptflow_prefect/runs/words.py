"""A run's status, trigger and state message in the reader's language (pages and emails).

The run_script flow stores its state messages in English ("Exit code 3"): they live in Prefect,
where power users read them, and one run is read by people in different languages. The messages
ScriptFlow itself writes are matched here and translated when shown; anything else (Prefect's
own crash messages) is shown as it is.

Example::

    run_message("Exit code 3")  # "Código de saída 3" in pt-BR
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from scriptflow_prefect.platform import i18n
from scriptflow_prefect.platform.i18n import _


def status_label(status: str | None) -> str:
    return {
        "queued": _("Queued"),
        "running": _("Running"),
        "succeeded": _("Succeeded"),
        "failed": _("Failed"),
        "timed_out": _("Timed out"),
        "cancelled": _("Cancelled"),
        "crashed": _("Crashed"),
        None: _("Never run"),
    }.get(status, status or "")


def trigger_label(trigger: str | None) -> str:
    return {"manual": _("Manual"), "scheduled": _("Scheduled"), "retry": _("Retry")}.get(
        trigger or "", trigger or ""
    )


def _when(iso: str) -> str:
    try:
        return i18n.format_datetime(datetime.fromisoformat(iso))
    except ValueError:
        return iso


# (pattern of the English message the flow writes, its translation from the match)
_MESSAGES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"Exit code (-?\d+)"), lambda m: _("Exit code %(code)s", code=m[1])),
    (
        re.compile(r"Timed out after (\d+) s; the process tree was stopped"),
        lambda m: _("Timed out after %(seconds)s s; the process tree was stopped", seconds=m[1]),
    ),
    (
        re.compile(r"Cancelled; the process tree was stopped"),
        lambda m: _("Cancelled; the process tree was stopped"),
    ),
    (
        re.compile(r"Cancelled before it started"),  # gateway.cancel_run
        lambda m: _("Cancelled before it started"),
    ),
    (
        re.compile(
            r"Missed the time (\S+) \(ScriptFlow was not running\); skipped as the "
            r"script's policy says\."
        ),
        lambda m: _(
            "Missed the time %(when)s (ScriptFlow was not running); skipped as the "
            "script's policy says.",
            when=_when(m[1]),
        ),
    ),
    (
        re.compile(
            r"Missed the time (\S+); one catch-up run covers every missed time, so this "
            r"one is skipped\."
        ),
        lambda m: _(
            "Missed the time %(when)s; one catch-up run covers every missed time, so "
            "this one is skipped.",
            when=_when(m[1]),
        ),
    ),
    (
        re.compile(
            r"The previous run of this script was still running; skipped as the "
            r"script's policy says\."
        ),
        lambda m: _(
            "The previous run of this script was still running; skipped as the "
            "script's policy says."
        ),
    ),
    (
        re.compile(r"Running \.bat scripts needs a Windows worker or wine on this machine"),
        lambda m: _("Running .bat scripts needs a Windows worker or wine on this machine"),
    ),
]


def run_message(message: str | None) -> str:
    if not message:
        return ""
    for pattern, translate in _MESSAGES:
        m = pattern.fullmatch(message.strip())
        if m:
            return translate(m)
    return message
