"""`/prefect/api/...` websockets (`events/out`, `logs/out`, ...) behind ScriptFlow's login.

Prefect's sockets take the subprotocol `prefect` and then a first message
`{"type": "auth", "token": <auth string>}`. The browser's first message carries no real
token (it has none): the proxy puts the real one in and then pumps messages both ways
until either side closes, and closes the other."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from scriptflow_prefect.ui_overlay.prefect_access import (
    API_PREFIX,
    Access,
    Upstream,
    access,
    bad_path,
    from_this_site,
)
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

log = logging.getLogger("scriptflow.web")

PREFECT = Subprotocol("prefect")
OPEN_TIMEOUT = 10.0
MAX_MESSAGE = 16 * 1024 * 1024
RECHECK_SECONDS = 15.0  # how soon a sign-out, a disable or a demotion ends an open stream
# Close codes (RFC 6455 7.4.1): policy (not allowed), server error, try again later.
POLICY, SERVER_ERROR, TRY_LATER = 1008, 1011, 1013


def _with_real_token(text: str, token: str | None) -> str:
    try:
        message = json.loads(text)
    except ValueError:
        return text
    if isinstance(message, dict) and message.get("type") == "auth":
        message["token"] = token
        return json.dumps(message)
    return text


async def _browser_to_prefect(ws: WebSocket, up: ClientConnection, token: str | None) -> None:
    first = True
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        text, data = message.get("text"), message.get("bytes")
        if text is not None:
            await up.send(_with_real_token(text, token) if first else text)
        elif data is not None:
            await up.send(data)
        first = False


async def _prefect_to_browser(ws: WebSocket, up: ClientConnection) -> None:
    async for message in up:
        if isinstance(message, str):
            await ws.send_text(message)
        else:
            await ws.send_bytes(message)


async def _still_allowed(ws: WebSocket) -> None:
    """Returns when the user may no longer use Prefect: signed out, disabled or no longer a
    power user since the handshake. An open stream carries every run's events and logs."""
    while await access(ws) is Access.ALLOWED:
        await asyncio.sleep(RECHECK_SECONDS)


async def _close(ws: WebSocket, up: ClientConnection | None, code: int, reason: str = "") -> None:
    if up is not None:
        with contextlib.suppress(Exception):
            await up.close()
    if ws.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code=code, reason=reason[:120])


async def relay(ws: WebSocket) -> None:
    path = ws.url.path
    # Before accepting: a refused handshake is an HTTP 403 to the browser.
    if bad_path(path) or not from_this_site(ws):
        await ws.close(code=POLICY)
        return
    if await access(ws) is not Access.ALLOWED:
        await ws.close(code=POLICY)
        return
    upstream = Upstream.of(ws.app.state.settings)
    token = upstream.auth_string
    query = f"?{ws.url.query}" if ws.url.query else ""
    asked = [p.strip() for h in ws.headers.getlist("sec-websocket-protocol") for p in h.split(",")]
    try:
        up = await connect(
            upstream.websocket_url_for(path) + query,
            subprotocols=[PREFECT],
            open_timeout=OPEN_TIMEOUT,
            max_size=MAX_MESSAGE,
            proxy=None,
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        log.warning("prefect proxy: websocket %s: %r", path, exc)
        await ws.accept(subprotocol=PREFECT if PREFECT in asked else None)
        await _close(ws, None, TRY_LATER, "Prefect's server is not reachable")
        return
    if PREFECT not in asked:
        # An older client without Prefect's handshake: the proxy does it for it.
        try:
            await up.send(json.dumps({"type": "auth", "token": token}))
            reply = json.loads(await asyncio.wait_for(up.recv(), OPEN_TIMEOUT))
        except (ConnectionClosed, TimeoutError, ValueError) as exc:
            log.warning("prefect proxy: websocket %s auth: %r", path, exc)
            reply = {}
        if not isinstance(reply, dict) or reply.get("type") != "auth_success":
            await ws.accept()
            await _close(ws, up, SERVER_ERROR, "Prefect refused the proxy's auth string")
            return
    await ws.accept(subprotocol=PREFECT if PREFECT in asked else None)

    guard = asyncio.create_task(_still_allowed(ws))
    tasks = [
        asyncio.create_task(_browser_to_prefect(ws, up, token)),
        asyncio.create_task(_prefect_to_browser(ws, up)),
        guard,
    ]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            # Its side closed (or closes now): nothing left to report.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if guard in done and not guard.cancelled() and guard.exception() is None:
        await _close(ws, up, POLICY, "no longer allowed to use Prefect")
        return
    code = up.close_code or 1000
    await _close(ws, up, code if code in (1000, 1001, POLICY, SERVER_ERROR, TRY_LATER) else 1000)


routes: list[BaseRoute] = [WebSocketRoute(API_PREFIX + "/{path:path}", relay)]
