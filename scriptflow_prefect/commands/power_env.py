"""`scriptflow prefect-env`: the exports that point the `prefect` CLI at this home's Prefect.

It only reads: a home that does not exist, or an embedded server's generated auth string
that was never written, means no stack ever ran with this SCRIPTFLOW_HOME. Inventing one
there (what loading the settings the usual way does) would print a new auth string that
matches no server, so it says where it looked and fails instead."""

from __future__ import annotations

import base64
import shlex
import sys

import httpx

from scriptflow_prefect.platform.settings import Settings

HEALTH_TIMEOUT_SECONDS = 2.0


def _missing(settings: Settings) -> str | None:
    """Why this home cannot say which Prefect to use; None if it can. Only an embedded server
    whose auth string ScriptFlow generated needs the home (the string is kept there)."""
    if not settings.embedded_prefect or settings.prefect_auth_string:
        return None
    if not settings.home.is_dir():
        return "there is no such folder"
    kept = settings.prefect_home / "auth_string"
    if not kept.is_file():
        return f"no ScriptFlow stack has run with it ({kept} is missing)"
    return None


def _answers(settings: Settings) -> bool:
    headers = {}
    if settings.auth_string:
        headers["Authorization"] = "Basic " + _basic(settings.auth_string)
    try:
        r = httpx.get(settings.api_url + "/health", headers=headers, timeout=HEALTH_TIMEOUT_SECONDS)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def _basic(auth_string: str) -> str:
    return base64.b64encode(auth_string.encode()).decode()


def print_prefect_env(settings: Settings) -> int:
    """0: exports printed and the server answers; 2: nothing to read (nothing printed);
    3: exports printed but no server answers there (the stack is not running)."""
    missing = _missing(settings)
    if missing:
        print(
            f"scriptflow: looked in SCRIPTFLOW_HOME={settings.home}: {missing}. Set "
            "SCRIPTFLOW_HOME to the folder your stack uses, or start it with `scriptflow up`.",
            file=sys.stderr,
        )
        return 2
    print(f"export PREFECT_API_URL={shlex.quote(settings.api_url)}")
    if settings.auth_string:
        print(f"export PREFECT_API_AUTH_STRING={shlex.quote(settings.auth_string)}")
    if not _answers(settings):
        print(
            f"scriptflow: no Prefect server answers at {settings.api_url} (home "
            f"{settings.home}): start the stack with `scriptflow up`.",
            file=sys.stderr,
        )
        return 3
    return 0
