"""`/prefect/`: Prefect's own UI and API behind ScriptFlow's login (HTTP; websockets are in
prefect_proxy_ws.py).

Prefect's server serves its UI under /prefect (platform/prefect_env.py); the overlay forwards
`/prefect/...` to the same path and `/prefect/api/...` to Prefect's API, adding the API's
auth string itself, so no browser ever holds it. `/prefect/ui-settings` is answered here:
the UI then calls the API through this proxy and never asks for a password."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from scriptflow_prefect.ui_overlay.prefect_access import (
    SAFE_METHODS,
    Access,
    Upstream,
    access,
    bad_path,
    browser_api_url,
    from_this_site,
    is_api,
)
from scriptflow_prefect.ui_overlay.templating import render
from starlette.background import BackgroundTask
from starlette.routing import BaseRoute, Route

from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.prefect_env import UI_SERVE_BASE

log = logging.getLogger("scriptflow.web")

# Connecting is quick or Prefect is down; an answer may take a while (a big flow run list).
TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=60.0, pool=10.0)
LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=16)
RETRY_AFTER = "5"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# Connection-level headers (RFC 9110 7.6.1) are the proxy's own business, on either side.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
# Not forwarded to Prefect: the overlay's address, the browser's credentials for Prefect
# (the proxy sends the real ones) and ScriptFlow's session cookie (only Prefect's own
# `prefect_*` cookies, the UI version choice, go on).
DROP_REQUEST = HOP_BY_HOP | {
    "host",
    "authorization",
    "cookie",
    "origin",
    "referer",
    # Prefect's server trusts these from 127.0.0.1 (the proxy): a browser must not pick the
    # client address Prefect sees.
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
}
# Not passed back: the overlay sets its own security headers, date and (no) server name.
DROP_RESPONSE = HOP_BY_HOP | {
    # Prefect's Basic-auth challenge would make the browser ask for the shared string.
    "www-authenticate",
    "server",
    "date",
    "set-cookie",
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
}
# What the Prefect UI needs beside the overlay's own policy (app.py): inline styles set by its
# components and charts, images and workers built in the page, and eval for the flow run
# graph (pixi.js compiles its shaders' glue with `new Function`). No other origin: Prefect's
# V2 UI also tries to reach Amplitude on every load, which this keeps from leaving.
UI_CSP = (
    b"default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    b"font-src 'self' data:; script-src 'self' 'unsafe-eval'; worker-src 'self' blob:; "
    b"connect-src 'self'; "
    b"frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


def is_ui_asset(path: str) -> bool:
    """The UI's files (the same for everyone): they keep Prefect's cache headers and get the
    UI's content security policy (app.py SecurityHeadersMiddleware)."""
    return path.startswith(UI_SERVE_BASE + "/") and not is_api(path)


def client(app: FastAPI) -> httpx.AsyncClient:
    """One connection pool to Prefect for the life of the app (closed by `lifespan`)."""
    pool = getattr(app.state, "prefect_proxy_client", None)
    if pool is None:
        pool = app.state.prefect_proxy_client = httpx.AsyncClient(
            timeout=TIMEOUT,
            limits=LIMITS,
            follow_redirects=False,
            trust_env=False,
            # Shared by every user: a cookie Prefect sets for one must never go back to
            # Prefect with another's request (each browser sends its own prefect_* cookies).
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )
    return pool


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    finally:
        pool = getattr(app.state, "prefect_proxy_client", None)
        if pool is not None:
            app.state.prefect_proxy_client = None
            await pool.aclose()


def _refusal(request: Request, status: int, detail: str, headers: dict | None = None) -> Response:
    """The reason as JSON for the UI's API calls, as a page for a person."""
    headers = {"Cache-Control": "no-store", **(headers or {})}
    accept = request.headers.get("accept", "")
    if (
        is_api(request.url.path)
        or request.url.path.endswith("/ui-settings")
        or ("json" in accept and "html" not in accept)
    ):
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)
    response = render(
        request, "errors/error.html", {"status": status, "detail": detail}, status_code=status
    )
    response.headers.update(headers)
    return response


async def _gate(request: Request) -> Response | None:
    """None when the request may pass; else the answer that refuses it."""
    path = request.url.path
    if bad_path(path):
        return _refusal(request, 404, _("There is nothing at this address."))
    if request.method not in SAFE_METHODS and not from_this_site(request):
        return _refusal(
            request,
            403,
            _("This request did not come from ScriptFlow's own pages, so it was refused."),
        )
    who = await access(request)
    if who is Access.SIGN_IN:
        if is_api(path) or request.method not in SAFE_METHODS or path.endswith("/ui-settings"):
            return _refusal(request, 401, _("Sign in first."))
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"/login?next={quote(path + query)}", status_code=303)
    if who is Access.FORBIDDEN:
        return _refusal(
            request,
            403,
            _("Only administrators and power users can open the Prefect UI. Ask an administrator."),
        )
    return None


def _upstream_down(request: Request, exc: httpx.HTTPError) -> Response:
    log.warning("prefect proxy: %s %s: %r", request.method, request.url.path, exc)
    if isinstance(exc, httpx.ConnectError):
        return _refusal(
            request,
            503,
            _("Prefect's server is not reachable. Try again in a moment."),
            {"Retry-After": RETRY_AFTER},
        )
    return _refusal(request, 502, _("Prefect's server did not answer in time."))


def _request_headers(
    request: Request, upstream: Upstream, *, with_body: bool = False
) -> dict[str, str]:
    named = {
        n.strip().lower() for n in request.headers.get("connection", "").split(",") if n.strip()
    }  # headers the Connection header names are hop-by-hop too
    drop = DROP_REQUEST | named | (set() if with_body else {"content-length"})
    headers = {k: v for k, v in request.headers.items() if k not in drop}
    prefect_cookies = [
        c.strip()
        for c in request.headers.get("cookie", "").split(";")
        if c.strip().startswith("prefect")
    ]
    if prefect_cookies:
        headers["cookie"] = "; ".join(prefect_cookies)
    if upstream.authorization:
        headers["authorization"] = upstream.authorization
    return headers


def _response_headers(response: httpx.Response, upstream: Upstream, path: str) -> dict[str, str]:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in DROP_RESPONSE}
    location = headers.get("location")
    if location:  # Prefect's redirects stay here, under /prefect
        headers["location"] = upstream.browser_location(location)
    if is_ui_asset(path) and "cache-control" not in response.headers:
        # The browser asks again (If-None-Match: a 304 through the proxy), so a signed-out
        # browser does not open the UI from its cache.
        headers["cache-control"] = "private, no-cache"
    return headers


async def ui_settings(request: Request) -> Response:
    """Prefect's UI settings with the API at this proxy and no auth prompt: the proxy signs
    the UI's calls itself. Whatever else Prefect says (UI versions, flags) is kept."""
    refused = await _gate(request)
    if refused:
        return refused
    upstream = Upstream.of(request.app.state.settings)
    try:
        answer = await client(request.app).get(
            upstream.url_for(request.url.path), headers=_request_headers(request, upstream)
        )
        answer.raise_for_status()
        settings = answer.json()
    except httpx.HTTPError as exc:
        return _upstream_down(request, exc)
    except ValueError:  # not JSON: not a Prefect UI at that address
        return _refusal(request, 502, _("Prefect's server did not answer in time."))
    if not isinstance(settings, dict):
        return _refusal(request, 502, _("Prefect's server did not answer in time."))
    settings.update(api_url=browser_api_url(request), auth=None)
    return JSONResponse(settings, headers={"Cache-Control": "no-store"})


async def forward(request: Request) -> Response:
    refused = await _gate(request)
    if refused:
        return refused
    upstream = Upstream.of(request.app.state.settings)
    path = request.url.path
    has_body = request.method not in SAFE_METHODS and (
        "content-length" in request.headers or "transfer-encoding" in request.headers
    )
    pool = client(request.app)
    outgoing = pool.build_request(
        request.method,
        httpx.URL(upstream.url_for(path), query=request.url.query.encode("latin-1")),
        headers=_request_headers(request, upstream, with_body=has_body),
        content=request.stream() if has_body else None,
    )
    try:
        answer = await pool.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        return _upstream_down(request, exc)
    except Exception as exc:  # noqa: BLE001 - h11 refusing what the browser sent
        log.warning("prefect proxy: %s %s not sent: %r", request.method, path, exc)
        return _refusal(request, 400, _("This request cannot be passed on to Prefect."))

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.aiter_raw():  # as Prefect sent it (gzip stays gzip)
                yield chunk
        except httpx.HTTPError as exc:  # cut mid-answer: the browser sees a short body
            log.warning("prefect proxy: %s cut: %r", path, exc)
        finally:
            await answer.aclose()

    return StreamingResponse(
        body(),
        status_code=answer.status_code,
        headers=_response_headers(answer, upstream, path),
        background=BackgroundTask(answer.aclose),
    )


async def to_slash(request: Request) -> Response:
    return RedirectResponse(UI_SERVE_BASE + "/", status_code=307)


routes: list[BaseRoute] = [
    Route(UI_SERVE_BASE, to_slash, methods=["GET", "HEAD"]),
    Route(UI_SERVE_BASE + "/ui-settings", ui_settings, methods=["GET", "HEAD"]),
    Route(UI_SERVE_BASE + "/{path:path}", forward, methods=METHODS),
]
