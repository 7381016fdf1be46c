"""Holding back repeats of a flapping script: at most one email per script and recipient in a
quiet period. Kept in memory inside Prefect's server, seeded from the recorded events."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from scriptflow_prefect.notifications.events import HELD, SENT, recipient_resource, script_resource

log = logging.getLogger("scriptflow.email")
THROTTLE_MEMORY = timedelta(days=7)


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
