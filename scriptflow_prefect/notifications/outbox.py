"""The outbox: every notification is written to the overlay database before its first try,
and stays there until it is delivered, given up or dropped.

Who writes: whoever has a message to send (the ScriptFlow email block inside Prefect's server,
the `send_digest` flow in the worker); it claims its new entry at once and makes the first
try itself. Who retries: the sender loop of every overlay process (sender.py). Only one of
them delivers an entry: a claim is one conditional UPDATE (pending and due, or sending with
an expired lease) that only one process can win; an entry claimed by a process that died is
claimed again once its lease expires. The one window left is a sender dying after the SMTP
server took the message and before it wrote "sent": that entry is sent again (at least once).

Bounded: at most MAX_WAITING entries wait; a flood drops the oldest waiting ones, each with
a recorded "dropped" outcome. Finished entries are pruned after the history's retention."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
from sqlalchemy import delete, func, inspect, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scriptflow_prefect.notifications.models import OutboxEntry
from scriptflow_prefect.platform.db import Database
from scriptflow_prefect.platform.settings import get_settings, parse_durations

PENDING, SENDING, SENT, FAILED, DROPPED = "pending", "sending", "sent", "failed", "dropped"
WAITING = (PENDING, SENDING)
# Longer than one try can take (connect timeout 20 s, a slow DATA), so a live sender never
# loses its claim; the time a dead sender's entry waits before another one takes it over.
LEASE = timedelta(minutes=5)
MAX_WAITING = 10_000


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Backoff:
    """When to try again: `delays` after each failed try (the last repeats), never later than
    `give_up_after` seconds after the first try; past that, give up. A message delivered more
    than `late_after` seconds after what caused it is reported late."""

    delays: tuple[float, ...]
    give_up_after: float
    late_after: float = 120.0

    @classmethod
    def from_settings(cls, settings) -> Backoff:
        return cls(
            settings.notification_retry_seconds,
            settings.notification_give_up_seconds,
            parse_durations(settings.notification_late_after)[-1],
        )

    def next_attempt(self, first: datetime, attempts: int, now: datetime) -> datetime | None:
        deadline = first + timedelta(seconds=self.give_up_after)
        if now >= deadline:
            return None
        delay = self.delays[min(max(attempts, 1), len(self.delays)) - 1]
        return min(now + timedelta(seconds=delay), deadline)  # one last try at the deadline


_local: dict[str, Database] = {}


def local_db() -> Database | None:
    """The overlay database of this process's home, for the writers that do not have one at
    hand (Prefect's server, the worker's flows); None when it has no outbox (a Prefect server
    that ScriptFlow did not start, or a database not migrated yet)."""
    url = get_settings().sqlalchemy_url
    db = _local.get(url)
    if db is None:
        db = Database(url)
        try:
            if not inspect(db.engine).has_table(OutboxEntry.__tablename__):
                db.engine.dispose()
                return None
        except Exception:  # noqa: BLE001 - no database reachable: no outbox
            db.engine.dispose()
            return None
        _local[url] = db
    return db


def new_claim() -> str:
    """A claim token of its own per claim: a restarted process that got the same pid does
    not mistake an old claim for its own."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass
class Queued:
    """A new entry, claimed by its writer for the first try (`claim`); `dropped`: entries
    pushed out by it (their outcome is the caller's to record)."""

    id: int
    claim: str
    dropped: list[OutboxEntry]


def enqueue(
    db: Database,
    *,
    channel: str,
    message: bytes,
    resource_id: str,
    resource_name: str,
    payload: dict[str, Any],
    caused_at: datetime | None = None,
    recipient: str | None = None,
    script_id: int | None = None,
    run_id: str | None = None,
    dedupe_key: str | None = None,
    now: datetime | None = None,
    limit: int = MAX_WAITING,
) -> Queued | None:
    """Write one message down, claimed for its first try. None if the same `dedupe_key` was
    written before (that one is delivered, or will be)."""
    now = now or now_utc()
    claim = new_claim()
    entry = OutboxEntry(
        channel=channel,
        dedupe_key=dedupe_key,
        status=SENDING,
        script_id=script_id,
        recipient=recipient,
        resource_id=resource_id,
        resource_name=resource_name[:300],
        run_id=run_id,
        payload=payload,
        message=message,
        caused_at=caused_at or now,
        created_at=now,
        next_attempt_at=now,
        attempts=0,
        errors=[],
        claimed_by=claim,
        lease_until=now + LEASE,
    )
    try:
        with db.session() as s:
            s.add(entry)
            s.flush()
            dropped = _make_room(s, limit, now, keep=entry.id)
    except IntegrityError:
        return None
    return Queued(entry.id, claim, dropped)


def _make_room(s, limit: int, now: datetime, keep: int) -> list[OutboxEntry]:
    waiting = s.scalar(select(func.count()).where(OutboxEntry.status.in_(WAITING))) or 0
    if waiting <= limit:
        return []
    oldest = s.scalars(
        select(OutboxEntry)
        .where(OutboxEntry.status == PENDING, OutboxEntry.id != keep)
        .order_by(OutboxEntry.created_at, OutboxEntry.id)
        .limit(waiting - limit)
    ).all()
    for e in oldest:
        e.status, e.done_at, e.claimed_by, e.lease_until = DROPPED, now, None, None
    return list(oldest)


def due(db: Database, now: datetime | None = None, limit: int = 20) -> list[int]:
    """Entries a sender may claim now, oldest first."""
    now = now or now_utc()
    with db.session() as s:
        return list(
            s.scalars(
                select(OutboxEntry.id)
                .where(_claimable(now))
                .order_by(OutboxEntry.next_attempt_at, OutboxEntry.id)
                .limit(limit)
            )
        )


def _claimable(now: datetime):
    return or_(
        (OutboxEntry.status == PENDING) & (OutboxEntry.next_attempt_at <= now),
        (OutboxEntry.status == SENDING) & (OutboxEntry.lease_until < now),
    )


def claim(db: Database, entry_id: int, now: datetime | None = None) -> str | None:
    """Claim one entry for a try: the claim token, or None if another sender has it."""
    now = now or now_utc()
    token = new_claim()
    with db.session() as s:
        won = s.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id == entry_id, _claimable(now))
            .values(status=SENDING, claimed_by=token, lease_until=now + LEASE)
        ).rowcount
    return token if won == 1 else None


def release_orphans(db: Database, now: datetime | None = None) -> int:
    """Entries claimed on this host by a process that no longer exists (Prefect's server
    killed mid-try, a sender killed with SIGKILL) are claimable at once, not after their
    lease: called when a sender loop starts. A live pid may be another process now; such an
    entry simply waits for its lease. Returns how many were released."""
    now = now or now_utc()
    host = socket.gethostname()[:40]
    released = 0
    with db.session() as s:
        for e in s.scalars(select(OutboxEntry).where(OutboxEntry.status == SENDING)):
            owner, _sep, rest = (e.claimed_by or "").partition(":")
            pid = rest.partition(":")[0]
            if owner == host and pid.isdigit() and not psutil.pid_exists(int(pid)):
                e.lease_until = now - timedelta(microseconds=1)
                released += 1
    return released


def get(db: Database, entry_id: int) -> OutboxEntry | None:
    with db.session() as s:
        return s.get(OutboxEntry, entry_id)


def finish(
    db: Database,
    entry_id: int,
    token: str,
    *,
    status: str,
    error: str | None = None,
    next_at: datetime | None = None,
    now: datetime | None = None,
) -> OutboxEntry | None:
    """Write the outcome of a try by the holder of claim `token`: PENDING again (a retry at
    `next_at`), SENT or FAILED. None if the claim was lost (the lease ran out)."""
    now = now or now_utc()
    with db.session() as s:
        entry = s.get(OutboxEntry, entry_id)
        if entry is None or entry.claimed_by != token or entry.status != SENDING:
            return None
        entry.attempts += 1
        entry.first_attempt_at = entry.first_attempt_at or now
        if error:
            entry.errors = [*entry.errors, error][-20:]
        entry.status = status
        entry.claimed_by, entry.lease_until = None, None
        if status == PENDING:
            entry.next_attempt_at = next_at or now
        else:
            entry.done_at = now
        return entry


def waiting(s: Session, script_ids: Iterable[int] | None = None) -> list[OutboxEntry]:
    """Entries not delivered yet (of these scripts; None: all), newest first."""
    q = select(OutboxEntry).where(OutboxEntry.status.in_(WAITING))
    if script_ids is not None:
        q = q.where(OutboxEntry.script_id.in_(list(script_ids)))
    return list(s.scalars(q.order_by(OutboxEntry.created_at.desc(), OutboxEntry.id.desc())))


def prune(db: Database, keep_days: int, now: datetime | None = None) -> int:
    """Remove finished entries older than the history's retention; returns how many."""
    before = (now or now_utc()) - timedelta(days=keep_days)
    with db.session() as s:
        return s.execute(
            delete(OutboxEntry).where(
                OutboxEntry.status.not_in(WAITING), OutboxEntry.done_at < before
            )
        ).rowcount


def lateness(entry: OutboxEntry, at: datetime, late_after: float) -> float | None:
    """Seconds between what caused the message and its delivery, when worth saying."""
    late = (at - entry.caused_at).total_seconds()
    return late if late > late_after else None
