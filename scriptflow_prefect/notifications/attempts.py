"""One try of an outbox entry (outbox.py), and the event that records what happened.

`attempt` is the same wherever it runs: the first try by the entry's writer (the email block
in Prefect's server, the digest flow), every later one by a sender loop (sender.py).
Outcomes become the usual `scriptflow.email.*` events."""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage

from sqlalchemy.exc import SQLAlchemyError

from scriptflow_prefect.notifications import events, outbox
from scriptflow_prefect.notifications.channels.email import mailer
from scriptflow_prefect.notifications.models import OutboxEntry
from scriptflow_prefect.platform.db import Database
from scriptflow_prefect.platform.settings import get_settings

log = logging.getLogger("scriptflow.email")

Send = Callable[[OutboxEntry], None]


def message_of(entry: OutboxEntry) -> EmailMessage:
    msg = email.message_from_bytes(entry.message, policy=email.policy.SMTP)
    assert isinstance(msg, EmailMessage)
    return msg


def smtp_sender(config: mailer.SmtpConfig) -> Send:
    """Send an email entry through this SMTP server (SendError says temporary or not)."""

    def send(entry: OutboxEntry) -> None:
        mailer.send(config, message_of(entry))

    return send


def attempt(
    db: Database,
    entry_id: int,
    token: str,
    send: Send,
    backoff: outbox.Backoff,
    now: Callable[[], datetime] = outbox.now_utc,
) -> str | None:
    """One try of a claimed entry: "sent", "retrying", "failed" (permanent) or "gave_up";
    None when the claim was lost (another sender has the entry now: it records)."""
    entry = outbox.get(db, entry_id)
    if entry is None or entry.claimed_by != token:
        return None
    try:
        send(entry)
    except Exception as exc:  # noqa: BLE001 - whatever it was, the entry must not be lost
        temporary = exc.temporary if isinstance(exc, mailer.SendError) else True
        error = str(exc) or type(exc).__name__
        at = now()
        next_at = (
            backoff.next_attempt(entry.first_attempt_at or at, entry.attempts + 1, at)
            if temporary
            else None
        )
        if next_at is not None:
            done = outbox.finish(
                db, entry_id, token, status=outbox.PENDING, error=error, next_at=next_at, now=at
            )
            outcome = "retrying"
        else:
            done = outbox.finish(db, entry_id, token, status=outbox.FAILED, error=error, now=at)
            outcome = "gave_up" if temporary else "failed"
    else:
        done = outbox.finish(db, entry_id, token, status=outbox.SENT, now=now())
        outcome = "sent"
    if done is None:
        return None
    record_outcome(done, outcome, backoff.late_after)
    return outcome


def record_outcome(entry: OutboxEntry, outcome: str, late_after: float = 0.0) -> None:
    """The event for an entry's new state (a failed try, or its end)."""
    payload = {**entry.payload, "attempts": entry.attempts, "errors": list(entry.errors)}
    args = (entry.resource_id, entry.resource_name)
    kw = {"recipient": entry.recipient, "run_id": entry.run_id}
    reason = entry.errors[-1] if entry.errors else ""
    if outcome == "sent":
        at = entry.done_at or outbox.now_utc()
        late = outbox.lateness(entry, at, late_after)
        extra = {"late_seconds": late, "caused_at": entry.caused_at.isoformat()} if late else {}
        events.record(events.SENT, *args, **kw, payload={**payload, **extra})
    elif outcome == "retrying":
        retry_at = entry.next_attempt_at
        events.record(
            events.RETRYING,
            *args,
            **kw,
            payload={
                **payload,
                "attempt": entry.attempts,
                "error": reason,
                "retry_at": retry_at.isoformat(),
            },
        )
    else:  # failed, gave_up, dropped
        events.record(
            events.FAILED,
            *args,
            **kw,
            payload={
                **payload,
                "reason": reason,
                "gave_up": outcome == "gave_up",
                "dropped": outcome == "dropped",
            },
        )
        log.warning("%s to %s: %s (%s)", entry.resource_name, entry.recipient, outcome, reason)


def record_dropped(entries: list[OutboxEntry]) -> None:
    for e in entries:
        record_outcome(e, "dropped")


class OutboxUnavailable(RuntimeError):
    """The message could not be written to the outbox (nothing was written, nothing sent)."""


def write_and_try(db: Database, send: Send, backoff: outbox.Backoff | None = None, **entry) -> str:
    """Write one message to the outbox (outbox.enqueue's fields) and make its first try here:
    "sent", "retrying" (a sender loop takes it from there), "failed", "gave_up", or
    "duplicate" (its `dedupe_key` was written before). `backoff`: the settings' by default."""
    try:
        queued = outbox.enqueue(db, **entry)
    except SQLAlchemyError as exc:  # held past the wait by a backup, a full disk
        raise OutboxUnavailable(str(exc)) from exc
    if queued is None:
        return "duplicate"
    record_dropped(queued.dropped)
    backoff = backoff or outbox.Backoff.from_settings(get_settings())
    return attempt(db, queued.id, queued.claim, send, backoff) or "retrying"
