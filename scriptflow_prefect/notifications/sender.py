"""The sender loop: every overlay process (`scriptflow up`, `scriptflow web`) keeps one, so
messages waiting in the outbox (outbox.py) are tried again on their back-off schedule, also
while Prefect's server restarts, and resumed after a restart of ScriptFlow."""

from __future__ import annotations

import asyncio
import logging

from scriptflow_prefect.notifications import outbox
from scriptflow_prefect.notifications import prefect as notifications_prefect
from scriptflow_prefect.notifications.attempts import Send, attempt, smtp_sender
from scriptflow_prefect.notifications.channels import relay
from scriptflow_prefect.notifications.channels.email import mailer
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.db import Database
from scriptflow_prefect.platform.settings import Settings

log = logging.getLogger("scriptflow.email")

# How often the loop looks for due entries: the shortest sensible retry is a few seconds.
POLL_SECONDS = 1.0
PRUNE_EVERY = 3600.0
# Tries at once: an SMTP server that black-holes connections costs a timeout per try.
PARALLEL = 4


async def _email_sender() -> Send | None:
    """The SMTP server as the email block says now (an admin may have fixed it since the
    first try); None while Prefect cannot say, or no email is set up."""
    try:
        block = await notifications_prefect.load_email_block()
    except platform_prefect.PrefectUnavailable as exc:
        log.info("the outbox waits for Prefect: %s", exc)
        return None
    return smtp_sender(mailer.SmtpConfig.from_credentials(block.credentials)) if block else None


async def tick(db: Database, backoff: outbox.Backoff) -> int:
    """Try every due entry once; returns how many were tried. Emails wait while the SMTP
    server cannot be known; the other channels post through their Prefect blocks."""
    ids = await asyncio.to_thread(outbox.due, db)
    if not ids:
        return 0
    email = await _email_sender()
    gate = asyncio.Semaphore(PARALLEL)

    async def one(entry_id: int) -> int:
        async with gate:
            entry = await asyncio.to_thread(outbox.get, db, entry_id)
            if entry is None:
                return 0
            send = email if entry.channel == "email" else relay.send_entry
            if send is None:
                return 0
            token = await asyncio.to_thread(outbox.claim, db, entry_id)
            if token is None:  # another sender won it
                return 0
            await asyncio.to_thread(attempt, db, entry_id, token, send, backoff)
            return 1

    return sum(await asyncio.gather(*(one(i) for i in ids)))


async def run(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    """Until `stop`: deliver what is due, and prune old entries once an hour. Entries left
    by an earlier start are due at once (those a dead process of this host had claimed too;
    others when their lease runs out)."""
    backoff = outbox.Backoff.from_settings(settings)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.to_thread(outbox.release_orphans, db)
    except Exception:  # noqa: BLE001 - no database yet: their leases run out instead
        log.exception("could not look for emails left by a stopped sender")
    pruned_at = -PRUNE_EVERY
    while not stop.is_set():
        try:
            tried = await tick(db, backoff)
            if loop.time() - pruned_at > PRUNE_EVERY:
                pruned_at = loop.time()
                await asyncio.to_thread(outbox.prune, db, settings.retention_days)
        except Exception:  # noqa: BLE001 - a database hiccup: the next round tries again
            log.exception("the notification outbox could not be processed")
            tried = 0
        if tried == 0:
            try:
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
            except TimeoutError:
                pass
