"""Delivering ScriptFlow's emails, and recording every outcome as a Prefect event.

Run emails are sent inside Prefect's server: the ScriptFlow email block is the action of the
automations ScriptFlow keeps for each script (ARCHITECTURE.md "Automations"). The automation
hands the block a small JSON request (which run, which recipients); the block fetches the run
and its last output lines from Prefect's API, renders the translated templates and sends.

Each outcome becomes an event (`scriptflow.email.sent|failed|held`, resource
`scriptflow.script.<id>`, related `scriptflow.recipient.<address>`), so the history and the
flapping throttle live in Prefect beside the runs they are about; the overlay reads them back
through its gateway."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from scriptflow_prefect.notifications.channels.email import mailer
from scriptflow_prefect.runs.models import run_to_dict

log = logging.getLogger("scriptflow.email")

SENT = "scriptflow.email.sent"
FAILED = "scriptflow.email.failed"
HELD = "scriptflow.email.held"
RETRYING = "scriptflow.email.retrying"
ACTION_FAILED = "prefect.automation.action.failed"
REQUEST_MARK = "scriptflow-run-email"
TEST_RESOURCE = "scriptflow.email.test"
OTHER_RESOURCE = "scriptflow.email.other"
OUTPUT_LINES = 50
# The run's last log batch reaches the API a moment after its final state (0.5 s batches).
LOG_SETTLE_SECONDS = 2.0
STREAM_LOGGERS = {"prefect.flow_runs.stdout": "stdout", "prefect.flow_runs.stderr": "stderr"}
THROTTLE_MEMORY = timedelta(days=7)


def script_resource(script_id: int | str) -> str:
    return f"scriptflow.script.{script_id}"


def digest_resource(period: str) -> str:
    return f"scriptflow.digest.{period}"


def recipient_resource(email: str) -> str:
    return f"scriptflow.recipient.{email.lower()}"


# -- the request a ScriptFlow automation sends to the block ---------------------------------
def run_request_template(script_id: int, outcome: str, recipients: list[dict]) -> str:
    """The body of a ScriptFlow automation's send-notification action: JSON with Jinja
    placeholders that Prefect fills from the triggering event."""
    data = {
        REQUEST_MARK: 1,
        "script_id": script_id,
        "outcome": outcome,
        "flow_run": "{{ event.resource.id }}",
        "event": "{{ event.event }}",
        "event_id": "{{ event.id }}",
        "state": "{{ flow_run.state.name }}",
        "recipients": [
            {k: r.get(k) for k in ("email", "language", "timezone")} for r in recipients
        ],
    }
    return json.dumps(data, ensure_ascii=False)


def parse_run_request(body: str) -> dict[str, Any] | None:
    """The request if `body` is one of ScriptFlow's, else None (a hand-made automation)."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get(REQUEST_MARK) != 1:
        return None
    try:
        run_id = UUID(str(data["flow_run"]).removeprefix("prefect.flow-run."))
        recipients = [
            r
            for r in data.get("recipients", [])
            if isinstance(r, dict) and mailer.is_email(r.get("email"))
        ]
        return {
            "script_id": int(data["script_id"]),
            "outcome": str(data["outcome"]),
            "run_id": run_id,
            "event": str(data.get("event", "")),
            "state": str(data.get("state", "")),
            "recipients": recipients,
        }
    except (KeyError, TypeError, ValueError):
        return None


# -- events ----------------------------------------------------------------------------------
def record(
    event: str,
    resource_id: str,
    name: str,
    *,
    recipient: str | None = None,
    run_id: UUID | str | None = None,
    payload: dict[str, Any],
) -> None:
    """Emit one outcome event; losing it must never lose the email itself."""
    from prefect.events import emit_event

    related = []
    if recipient:
        related.append(
            {
                "prefect.resource.id": recipient_resource(recipient),
                "prefect.resource.role": "recipient",
                "prefect.resource.name": recipient,
            }
        )
    if run_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.flow-run.{run_id}",
                "prefect.resource.role": "flow-run",
            }
        )
    try:
        emit_event(
            event=event,
            resource={
                "prefect.resource.id": resource_id,
                "prefect.resource.name": name or resource_id,
            },
            related=related,
            payload={"recipient": recipient, **payload},
        )
    except Exception:  # noqa: BLE001 - the history is best effort, the email is not
        log.exception("could not record %s for %s", event, resource_id)


async def _read_events(
    names: list[str], resource_id: str, recipient: str, since: datetime, limit: int = 1
):
    from prefect import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventRelatedFilter,
        EventResourceFilter,
    )

    async with get_client() as client:
        return await client.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=since, until=datetime.now(UTC)),
                event=EventNameFilter(name=names),
                resource=EventResourceFilter(id=[resource_id]),
                related=EventRelatedFilter(id=[recipient_resource(recipient)]),
            ),
            limit=limit,
        )


class Throttle:
    """At most one email per script and recipient in a quiet period; the rest are held back
    and counted, and the next email says how many. Kept in memory, seeded from the recorded
    events when the server (re)starts."""

    def __init__(self) -> None:
        self._last: dict[tuple[int, str], datetime | None] = {}
        self._held: dict[tuple[int, str], int] = {}
        # What admit() changed, so that failed() can put it back.
        self._undo: dict[tuple[int, str], tuple[datetime | None, int]] = {}
        self._lock = asyncio.Lock()

    async def _seed(self, script_id: int, email: str) -> tuple[datetime | None, int]:
        since = datetime.now(UTC) - THROTTLE_MEMORY
        try:
            sent = await _read_events([SENT], script_resource(script_id), email, since)
            last = sent.events[0].occurred if sent.events else None
            held = await _read_events([HELD], script_resource(script_id), email, last or since)
            return last, held.total
        except Exception:  # noqa: BLE001 - no history: start afresh rather than hold mail
            log.warning("could not read the email history of script %s", script_id)
            return None, 0

    async def admit(
        self, script_id: int, email: str, window: timedelta, now: datetime | None = None
    ) -> tuple[bool, int]:
        """(send it?, how many were held back before it / so far)."""
        key = (script_id, email.lower())
        async with self._lock:
            if key not in self._last:
                self._last[key], self._held[key] = await self._seed(script_id, email)
            now = now or datetime.now(UTC)
            last = self._last[key]
            if window > timedelta(0) and last is not None and now - last < window:
                self._held[key] += 1
                return False, self._held[key]
            held, self._held[key] = self._held[key], 0
            self._last[key] = now
            self._undo[key] = (last, held)
            return True, held

    def failed(self, script_id: int, email: str) -> None:
        """A message that never arrived does not start a quiet period."""
        key = (script_id, email.lower())
        last, held = self._undo.pop(key, (None, 0))
        self._last[key] = last
        self._held[key] = self._held.get(key, 0) + held


THROTTLE = Throttle()
_tasks: set[asyncio.Task] = set()


def start_run_email(block, request: dict[str, Any]) -> None:
    """Deliver in the background: retries take up to a minute, and Prefect runs only a couple
    of automation actions at a time."""
    task = asyncio.get_running_loop().create_task(deliver_run_email(block, request))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _run_and_output(run_id: UUID) -> tuple[Any, list[dict[str, str]], bool]:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    async with get_client() as client:
        flow_run = await client.read_flow_run(run_id)
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
            limit=200,
            sort=LogSort.TIMESTAMP_DESC,
        )
    lines = [
        {"stream": STREAM_LOGGERS[r.name], "text": r.message}
        for r in logs
        if r.name in STREAM_LOGGERS
    ]
    more = len(lines) > OUTPUT_LINES
    return flow_run, list(reversed(lines[:OUTPUT_LINES])), more


def run_context(flow_run, lines, more: bool, script_id: int, public_url: str) -> dict[str, Any]:
    run = run_to_dict(flow_run)
    base = public_url.rstrip("/")
    return {
        "script_id": script_id,
        "script_name": (flow_run.parameters or {}).get("script_name") or f"#{script_id}",
        "run": run,
        "lines": lines,
        "more_lines": more,
        "line_count": len(lines),
        "run_url": f"{base}/runs/{flow_run.id}",
        "script_url": f"{base}/scripts/{script_id}",
        "settings_url": f"{base}/scripts/{script_id}#notifications",
        "failed": run["status"] in ("failed", "timed_out", "crashed"),
    }


async def deliver_run_email(block, request: dict[str, Any]) -> None:
    script_id, run_id = request["script_id"], request["run_id"]
    resource = script_resource(script_id)
    # `event` and `state` are what Prefect rendered into the automation's template.
    base = {
        "kind": "run",
        "outcome": request["outcome"],
        "run_id": str(run_id),
        "script_id": script_id,
        "event": request["event"],
        "state": request["state"],
    }
    try:
        await asyncio.sleep(LOG_SETTLE_SECONDS)
        flow_run, lines, more = await _run_and_output(run_id)
        context = run_context(flow_run, lines, more, script_id, block.public_url)
        config = mailer.SmtpConfig.from_credentials(block.credentials)
    except Exception as exc:  # noqa: BLE001 - say why in the history, for every recipient
        log.exception("could not prepare the email about run %s", run_id)
        for r in request["recipients"]:
            record(
                FAILED,
                resource,
                f"#{script_id}",
                recipient=r["email"],
                run_id=run_id,
                payload={
                    **base,
                    "attempts": 0,
                    "reason": f"{type(exc).__name__}: {exc}",
                    "errors": [str(exc)],
                },
            )
        return
    name = context["script_name"]
    base.update(status=context["run"]["status"], script_name=name)
    window = timedelta(minutes=block.throttle_minutes)

    async def one(recipient: dict[str, Any]) -> None:
        email = recipient["email"]
        send, held = await THROTTLE.admit(script_id, email, window)
        if not send:
            record(
                HELD,
                resource,
                name,
                recipient=email,
                run_id=run_id,
                payload={
                    **base,
                    "reason": "throttled",
                    "held_so_far": held,
                    "quiet_minutes": block.throttle_minutes,
                },
            )
            return
        rendered = mailer.render(
            "run",
            {**context, "held_back": held, "quiet_minutes": block.throttle_minutes},
            language=recipient.get("language") or block.language,
            zone=recipient.get("timezone") or block.timezone,
        )
        msg = mailer.build_message(sender=block.from_address, to=email, rendered=rendered)

        async def on_retry(attempt: int, error: str, delay: float) -> None:
            record(
                RETRYING,
                resource,
                name,
                recipient=email,
                run_id=run_id,
                payload={**base, "attempt": attempt, "error": error, "retry_in": delay},
            )

        result = await mailer.deliver(config, msg, block.retry_delays, on_retry)
        payload = {
            **base,
            "subject": rendered.subject,
            "attempts": result.attempts,
            "errors": result.errors,
            "held_back": held,
        }
        if result.sent:
            record(SENT, resource, name, recipient=email, run_id=run_id, payload=payload)
        else:
            THROTTLE.failed(script_id, email)
            record(
                FAILED,
                resource,
                name,
                recipient=email,
                run_id=run_id,
                payload={**payload, "reason": result.reason},
            )
            log.warning("email about %s to %s failed: %s", name, email, result.reason)

    await asyncio.gather(*(one(r) for r in request["recipients"]))


async def send_plain(block, body: str, subject: str | None) -> list[str]:
    """A hand-made automation's notification: its text as it is, to the block's `to`.
    Returns the errors (empty when every recipient got it)."""
    config = mailer.SmtpConfig.from_credentials(block.credentials)
    rendered = mailer.Rendered(subject or "ScriptFlow", body, "")
    errors = []
    for email in block.to:
        msg = mailer.build_message(sender=block.from_address, to=email, rendered=rendered)
        result = await mailer.deliver(config, msg, block.retry_delays)
        payload = {
            "kind": "other",
            "subject": rendered.subject,
            "attempts": result.attempts,
            "errors": result.errors,
        }
        if result.sent:
            record(SENT, OTHER_RESOURCE, "", recipient=email, payload=payload)
        else:
            record(
                FAILED,
                OTHER_RESOURCE,
                "",
                recipient=email,
                payload={**payload, "reason": result.reason},
            )
            errors.append(f"{email}: {result.reason}")
    return errors
