"""Prefect's server on SQLite without the 2-4-8-16 s stalls of a burst: installed in the
server's own process by `commands/prefect_child.py`, before Prefect builds its app.

Prefect opens most write transactions DEFERRED. In WAL mode a deferred transaction that reads
first and then writes cannot wait for the write lock: when another connection is writing, its
upgrade fails at once with "database is locked" (SQLite's busy_timeout never applies), Prefect
answers 503, and Prefect's client sleeps 2**n s (even with retries=0) before trying again.
"Run now" (create a flow run from a deployment), the labels PATCH the flow writes for every
run and the workers' heartbeats read first. Started `BEGIN IMMEDIATE`, they queue on the write
lock (busy_timeout) instead of failing. Immediate for every transaction was measured worse:
log inserts then hold the lock while Prefect validates big batches (../shared/ARCHITECTURE.md
"Why bursts stall on SQLite").

Any 503 still answered carries a short `Retry-After`, which Prefect's client honours instead
of its exponential back-off.

This patches Prefect's private server code in one place: `AioSqliteConfiguration.
begin_transaction` and `prefect.server.api.server.create_app`, pinned by tests/test_burst.py.
Off with SCRIPTFLOW_SQLITE_IMMEDIATE_WRITES=off (the burst bench's baseline)."""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import prefect.server.api.server as prefect_server
from prefect.server.database.configurations import AioSqliteConfiguration
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

from scriptflow_prefect.platform.settings import get_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_UUID = r"[0-9a-fA-F-]{36}"
# The API calls whose transaction reads before it writes, as (method, path).
READ_THEN_WRITE = (
    ("POST", re.compile(rf"^/api/deployments/{_UUID}/create_flow_run$")),  # "Run now"
    ("POST", re.compile(r"^/api/flow_runs/?$")),  # a run without a deployment
    ("PATCH", re.compile(rf"^/api/flow_runs/{_UUID}/labels$")),  # exit code, message code
    ("POST", re.compile(r"^/api/work_pools/[^/]+/workers/heartbeat$")),  # every worker, 30 s
    ("PATCH", re.compile(rf"^/api/deployments/{_UUID}$")),  # a script or its schedule saved
)
# Seconds: a collision passes in well under a second (the write lock is held for
# milliseconds per transaction), so the client tries again soon instead of after 2-4-8-16 s.
RETRY_AFTER = b"0.2"

# Said in the server's log when installed (tests/test_burst.py looks for it).
INSTALLED_NOTE = "ScriptFlow: SQLite writes that read first take the write lock first"

_write_first: ContextVar[bool] = ContextVar("scriptflow_write_first", default=False)


def reads_then_writes(method: str, path: str) -> bool:
    return any(method == m and pattern.match(path) for m, pattern in READ_THEN_WRITE)


class WriteLockFirst:
    """ASGI middleware: marks the requests of READ_THEN_WRITE (their transactions start
    IMMEDIATE) and adds `Retry-After` to a 503."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_retry_after(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"retry-after"]
                message = {**message, "headers": [*headers, (b"retry-after", RETRY_AFTER)]}
            await send(message)

        token = _write_first.set(reads_then_writes(scope["method"], scope["path"]))
        try:
            await self.app(scope, receive, send_retry_after)
        finally:
            _write_first.reset(token)


_prefect_begin = AioSqliteConfiguration.begin_transaction
_prefect_create_app = prefect_server.create_app


@asynccontextmanager
async def _begin_transaction(self, session, with_for_update: bool = False):
    # Prefect's own `with_for_update` on SQLite means exactly "BEGIN IMMEDIATE".
    async with _prefect_begin(self, session, with_for_update or _write_first.get()) as tx:
        yield tx


def _create_app(*args, **kwargs):
    return WriteLockFirst(_prefect_create_app(*args, **kwargs))


def install_sqlite_patch() -> bool:
    """Patch Prefect's server when its database is SQLite; True if it did."""
    url = str(PREFECT_API_DATABASE_CONNECTION_URL.value() or "")
    if not url.startswith("sqlite") or get_settings().sqlite_immediate_writes == "off":
        return False
    AioSqliteConfiguration.begin_transaction = _begin_transaction  # type: ignore[method-assign]
    prefect_server.create_app = _create_app  # type: ignore[assignment]
    print(INSTALLED_NOTE, file=sys.stderr, flush=True)
    return True
