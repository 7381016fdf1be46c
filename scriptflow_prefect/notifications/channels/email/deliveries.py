"""Delivering ScriptFlow's emails, and recording every outcome as a Prefect event.

Run emails are sent inside Prefect's server: the ScriptFlow email block is the action of the
automations ScriptFlow keeps for each script (ARCHITECTURE.md "Automations"). The automation
hands the block a small JSON request (which run, which recipients); the block fetches the run
and its last output lines from Prefect's API, renders the translated templates and sends.

Each message is written to the outbox (notifications/outbox.py) before its first try, made
here; a temporary failure leaves it to the sender loops of the overlay (notifications/
sender.py), which retry for up to a day. Each outcome becomes an event (notifications/
events.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from scriptflow_prefect.notifications import attempts, events, outbox
from scriptflow_prefect.notifications.channels.email import mailer
from scriptflow_prefect.notifications.channels.email.throttle import THROTTLE
from scriptflow_prefect.runs.models import run_to_dict

log = logging.getLogger("scriptflow.email")

REQUEST_MARK = "scriptflow-run-email"
OUTPUT_LINES = 50
# The run's last log batch reaches the API a moment after its final state (0.5 s batches).
LOG_SETTLE_SECONDS = 2.0
STREAM_LOGGERS = {"prefect.flow_runs.stdout": "stdout", "prefect.flow_runs.stderr": "stderr"}


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
            "event_id": str(data.get("event_id", "")),
            "state": str(data.get("state", "")),
            "recipients": recipients,
        }
    except (KeyError, TypeError, ValueError):
        return None


_tasks: set[asyncio.Task] = set()


def start_run_email(block, request: dict[str, Any]) -> None:
    """Deliver in the background: the first try waits for the run's last output lines, and
    Prefect runs only a couple of automation actions at a time."""
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


async def send_email(
    block,
    config: mailer.SmtpConfig,
    msg,
    *,
    resource_id: str,
    name: str,
    payload: dict[str, Any],
    recipient: str,
    script_id: int | None = None,
    run_id: UUID | None = None,
    caused_at: datetime | None = None,
    dedupe_key: str | None = None,
) -> str:
    """Write the message to the outbox and make its first try here: "sent", "retrying" (the
    overlay's sender loops take it from there), "failed", "gave_up" or "duplicate".

    Without an outbox (a Prefect server that ScriptFlow did not start: no overlay database
    here), it is sent as before, with the block's short in-memory retries."""
    db = await asyncio.to_thread(outbox.local_db)
    if db is None:
        return await _send_without_outbox(
            block, config, msg, resource_id, name, payload, recipient, run_id
        )
    try:
        return await asyncio.to_thread(
            attempts.write_and_try,
            db,
            attempts.smtp_sender(config),
            channel="email",
            message=bytes(msg),
            resource_id=resource_id,
            resource_name=name,
            payload=payload,
            caused_at=caused_at,
            recipient=recipient,
            script_id=script_id,
            run_id=str(run_id) if run_id else None,
            dedupe_key=dedupe_key,
        )
    except attempts.OutboxUnavailable as exc:
        # The outbox cannot be written (its database held past the wait, a full disk): the
        # email is not dropped unrecorded; it goes the old way, short retries in memory.
        log.warning("the outbox could not be written (%s): sending %s directly", exc, name)
        return await _send_without_outbox(
            block, config, msg, resource_id, name, payload, recipient, run_id
        )


async def _send_without_outbox(block, config, msg, resource_id, name, payload, recipient, run_id):
    result = await mailer.deliver(config, msg, block.retry_delays)
    payload = {**payload, "attempts": result.attempts, "errors": result.errors}
    if result.sent:
        events.record(
            events.SENT, resource_id, name, recipient=recipient, run_id=run_id, payload=payload
        )
        return "sent"
    events.record(
        events.FAILED,
        resource_id,
        name,
        recipient=recipient,
        run_id=run_id,
        payload={**payload, "reason": result.reason},
    )
    return "failed"


async def deliver_run_email(block, request: dict[str, Any]) -> None:
    script_id, run_id = request["script_id"], request["run_id"]
    resource = events.script_resource(script_id)
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
            events.record(
                events.FAILED,
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
    # Lateness counts from the run's end (what the email is about).
    ended = context["run"].get("ended_at")
    caused_at = ended if isinstance(ended, datetime) else None

    async def one(recipient: dict[str, Any]) -> None:
        email = recipient["email"]
        send, held = await THROTTLE.admit(script_id, email, window)
        if not send:
            events.record(
                events.HELD,
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
        outcome = await send_email(
            block,
            config,
            msg,
            resource_id=resource,
            name=name,
            payload={**base, "subject": rendered.subject, "held_back": held},
            recipient=email,
            script_id=script_id,
            run_id=run_id,
            caused_at=caused_at,
            dedupe_key=f"run:{request['event_id']}:{email.lower()}"
            if request["event_id"]
            else None,
        )
        if outcome == "failed":  # a message that never arrives does not start a quiet period
            THROTTLE.failed(script_id, email)

    await asyncio.gather(*(one(r) for r in request["recipients"]))


async def send_plain(block, body: str, subject: str | None) -> list[str]:
    """A hand-made automation's notification: its text as it is, to the block's `to`.
    Returns the errors (empty when every recipient got it or will get it)."""
    config = mailer.SmtpConfig.from_credentials(block.credentials)
    rendered = mailer.Rendered(subject or "ScriptFlow", body, "")
    errors = []
    for email in block.to:
        msg = mailer.build_message(sender=block.from_address, to=email, rendered=rendered)
        outcome = await send_email(
            block,
            config,
            msg,
            resource_id=events.OTHER_RESOURCE,
            name="",
            payload={"kind": "other", "subject": rendered.subject},
            recipient=email,
        )
        if outcome in ("failed", "gave_up"):
            errors.append(f"{email}: {outcome}")
    return errors
