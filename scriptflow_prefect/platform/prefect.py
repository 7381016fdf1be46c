"""The shared door to Prefect's API: errors, quick retries on SQLite's 503, a long-lived client."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from typing import Any

import httpx
from prefect import get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.utilities.callables import parameter_schema_from_entrypoint

from scriptflow_prefect.platform.prefect_budget import PrefectSlow, within_budget


class PrefectUnavailable(RuntimeError):
    """Prefect's API could not be reached or refused the call."""


async def call(coro):
    try:
        return await within_budget(coro)  # a page's time budget, if any (prefect_budget.py)
    except (httpx.TransportError, PrefectHTTPStatusError, PrefectSlow) as exc:
        raise PrefectUnavailable(str(exc)) from exc


def flow_parameter_schema(entrypoint: str) -> dict[str, Any]:
    """The OpenAPI schema of a flow's parameters, for its deployment, read from the source of
    `entrypoint` ("package.module:function"): the flow's module is not imported, so the core
    needs no import of `flows` (the worker loads it from the same string)."""
    module, function = entrypoint.split(":")
    return parameter_schema_from_entrypoint(f"{module}.{function}").model_dump_for_openapi()


async def health() -> bool:
    async with get_client() as client:
        try:
            return (await client.api_healthcheck()) is None
        except Exception:
            return False


@functools.cache
def _no_retry_settings():
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, get_current_settings

    return get_current_settings().copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})


async def retry_busy(make_call, window: float = 10.0):
    """Prefect on SQLite answers 503 when two writes collide, and its client then backs off
    2, 4, 8, 16 s: ten "Run now" at once would start over half a minute. Retry quickly here
    for a while (a collision passes in well under a second), then leave it to the client's
    own retries."""
    from prefect.context import SettingsContext, get_settings_context

    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        try:
            profile = get_settings_context().profile
            with SettingsContext(profile=profile, settings=_no_retry_settings()):
                return await make_call()
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 503:
                raise
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
            pass  # e.g. a kept-alive connection the server closed just then: the call is
            # idempotent (callers pass an idempotency key), so try again
        await asyncio.sleep(random.uniform(0.05, 0.3))
    return await make_call()


_shared: dict[int, tuple[Any, Any]] = {}


async def shared_client():
    """A long-lived client per event loop: opening one per call costs 20-80 ms here."""
    loop = asyncio.get_running_loop()
    entry = _shared.get(id(loop))
    if entry is not None and entry[0] is loop:
        return entry[1]
    for key, (other, _client) in list(_shared.items()):
        if other.is_closed():  # a finished loop (tests, asyncio.run): drop its client
            _shared.pop(key, None)
    client = get_client()
    await client.__aenter__()
    _shared[id(loop)] = (loop, client)
    return client
