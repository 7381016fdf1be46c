"""Who may pass the Prefect proxy (`/prefect/`, ui_overlay/prefect_proxy*.py), and where to.

The proxy adds Prefect's auth string to what it forwards, so the overlay's session cookie is
the only key: a signed-in admin or power user, asking from this site's own pages."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import Enum
from typing import cast
from urllib.parse import urlsplit

from fastapi import Request
from scriptflow_prefect.ui_overlay.deps import LoginRequired, page_user
from starlette.requests import HTTPConnection

from scriptflow_prefect.platform.prefect_env import UI_SERVE_BASE
from scriptflow_prefect.platform.settings import Settings

API_PREFIX = UI_SERVE_BASE + "/api"
SAFE_METHODS = {"GET", "HEAD"}


class Access(Enum):
    ALLOWED = "allowed"
    SIGN_IN = "sign_in"  # nobody is signed in (or the session is over)
    FORBIDDEN = "forbidden"  # signed in, but neither an admin nor a power user


async def access(conn: HTTPConnection) -> Access:
    """The same check as every page's (deps.page_user: the session must still exist on the
    server), then the Prefect UI's own rule. Sets the user's language for the answer."""
    with conn.app.state.db.session() as db:
        try:
            # page_user reads the session, the app's settings and state: all on a websocket too.
            user = await page_user(cast(Request, conn), db)
        except LoginRequired:
            return Access.SIGN_IN
        return Access.ALLOWED if user.uses_prefect else Access.FORBIDDEN


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return ""


def from_this_site(conn: HTTPConnection) -> bool:
    """The request comes from a page of this overlay: its Origin (or, without one, its
    Referer) names the host the browser sent it to, or SCRIPTFLOW_PUBLIC_URL's. The session
    cookie is Lax, so another site's form POST carries no cookie; a sibling site (same site,
    other host) could still send one with fetch, and that is what this refuses."""
    sent = conn.headers.get("origin") or conn.headers.get("referer")
    if not sent or sent == "null":
        return False
    own = {conn.headers.get("host", "").lower()}
    public = conn.app.state.settings.public_url
    if public:
        own.add(_netloc(public))
    return _netloc(sent) in own - {""}


def is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


@dataclass(frozen=True)
class Upstream:
    """Where the proxied paths go: `/prefect/api/x` to Prefect's `<api>/x`, any other
    `/prefect/x` to the same path on Prefect's server (its UI is served under /prefect)."""

    api_url: str
    root_url: str
    auth_string: str | None

    @property
    def authorization(self) -> str | None:
        """Prefect's API checks `Authorization: Basic base64(auth string)`."""
        if not self.auth_string:
            return None
        return "Basic " + base64.b64encode(self.auth_string.encode()).decode()

    @classmethod
    def of(cls, settings: Settings) -> Upstream:
        api = settings.api_url.rstrip("/")
        return cls(api_url=api, root_url=api.removesuffix("/api"), auth_string=settings.auth_string)

    def url_for(self, path: str) -> str:
        if is_api(path):
            return self.api_url + path.removeprefix(API_PREFIX)
        return self.root_url + path

    def browser_location(self, location: str) -> str:
        """A Location Prefect sent, as the browser must follow it: Prefect's API and UI are
        under /prefect here. Anything not on Prefect's server is left as it is."""
        target, server = urlsplit(location), urlsplit(self.root_url)
        if target.netloc and (target.scheme, target.netloc) != (server.scheme, server.netloc):
            return location
        path = target.path
        api = urlsplit(self.api_url).path or "/api"
        if path == api or path.startswith(api + "/"):
            path = API_PREFIX + path.removeprefix(api)
        elif not (path == UI_SERVE_BASE or path.startswith(UI_SERVE_BASE + "/")):
            path = UI_SERVE_BASE + "/"  # not something the proxy passes: the UI's start
        return path + (f"?{target.query}" if target.query else "")

    def websocket_url_for(self, path: str) -> str:
        url = self.url_for(path)
        return "ws" + url.removeprefix("http") if url.startswith("http") else url


def browser_api_url(conn: HTTPConnection) -> str:
    """The proxied API as the browser reaches it: SCRIPTFLOW_PUBLIC_URL when set, else the
    address the browser used (https when the overlay is served behind an HTTPS proxy)."""
    settings = conn.app.state.settings
    if settings.public_url:
        return settings.public_url.rstrip("/") + API_PREFIX
    scheme = "https" if settings.secure_cookies or conn.url.scheme == "https" else "http"
    return f"{scheme}://{conn.headers.get('host') or conn.url.netloc}{API_PREFIX}"


def bad_path(path: str) -> bool:
    """A path the proxy does not forward: dot segments (a way out of /prefect/ upstream) or
    characters no URL path holds."""
    parts = path.split("/")
    return any(p in (".", "..") for p in parts) or any(c in path for c in "\\\x00\r\n")
