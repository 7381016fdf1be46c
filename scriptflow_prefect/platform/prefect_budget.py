"""A time budget for the Prefect calls of one web page.

A page reads a few things from Prefect (run statuses, next runs), normally in tens of ms.
When Prefect is slow (a loaded SQLite, a slow link to a remote server: seconds per call) a
page that waited for each call in turn would hang for minutes. Inside `budget(seconds)` every
call through platform.prefect.call() gets only what is left of the page's budget; one that
runs out raises PrefectSlow there (a PrefectUnavailable), which pages already answer with
the data they have, and `was_slow()` tells the page to say so ("Prefect is slow to answer").
API calls have no budget: a script's client prefers a late answer to a partial one.

Example::

    with budget(PAGE_SECONDS):
        rows = await page_rows()      # degraded, not hung, when Prefect is slow
        note = was_slow()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
# What a page may spend waiting on Prefect, all its calls together: a page normally needs
# well under a second; past this, it shows what it has instead.
PAGE_SECONDS = 4.0


class PrefectSlow(TimeoutError):
    """Prefect did not answer within what was left of the page's budget."""


@dataclass
class _Budget:
    deadline: float
    slow: bool = False


_current: ContextVar[_Budget | None] = ContextVar("scriptflow_prefect_budget", default=None)


@contextmanager
def budget(seconds: float = PAGE_SECONDS) -> Iterator[None]:
    token = _current.set(_Budget(time.monotonic() + seconds))
    try:
        yield
    finally:
        _current.reset(token)


def detach() -> None:
    """Drop the budget in the current context: for a task that outlives the page that
    started it (a queued "Run now" created in the background), whose context is a copy."""
    _current.set(None)


def was_slow() -> bool:
    """Whether a Prefect call of the current page ran out of its budget."""
    current = _current.get()
    return bool(current and current.slow)


async def within_budget(call: Awaitable[T]) -> T:
    current = _current.get()
    if current is None:
        return await call
    left = current.deadline - time.monotonic()
    try:
        if left <= 0:
            raise TimeoutError
        return await asyncio.wait_for(call, left)
    except TimeoutError:
        if left <= 0 and asyncio.iscoroutine(call):
            call.close()  # never awaited: no "was never awaited" warning
        current.slow = True
        raise PrefectSlow("Prefect is slow to answer") from None
