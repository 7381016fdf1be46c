"""Environment for Prefect's server and client processes, set before `import prefect`.

Prefect reads its settings from the environment, so every ScriptFlow process points
Prefect at SCRIPTFLOW_HOME and at the right API before Prefect is imported."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from scriptflow_prefect.platform.settings import Settings

# Where Prefect's server serves its UI: the overlay proxies the same path behind its own login
# (ui_overlay/prefect_proxy.py), so the UI's asset links are right through both doors.
UI_SERVE_BASE = "/prefect"

# Ship run logs to the API faster than the 2 s default so live output stays live even when
# it is read from Prefect (a worker on another machine).
LOG_BATCH_INTERVAL = "0.5"


def common_env(settings: Settings) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_CLI_PROMPT": "false",
    }


def client_env(settings: Settings) -> dict[str, str]:
    env = {
        **common_env(settings),
        "PREFECT_API_URL": settings.api_url,
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": LOG_BATCH_INTERVAL,
        "PREFECT_WORKER_QUERY_SECONDS": str(settings.worker_poll_seconds),
        # The worker watches cancellations itself (flows/run_script.py); keep the defaults'
        # prefetch so scheduled runs start on time.
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
        # Runs in progress beat (events) so that the server can tell a vanished worker's
        # runs (runs/dead_man.py); Prefect's default is 180 s.
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(settings.run_heartbeat_seconds),
    }
    if settings.auth_string:
        env["PREFECT_API_AUTH_STRING"] = settings.auth_string
    return env


def server_env(settings: Settings) -> dict[str, str]:
    db = settings.prefect_home / "prefect.db"
    env = {
        **common_env(settings),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
        "PREFECT_UI_API_URL": settings.api_url,
        "PREFECT_UI_SERVE_BASE": UI_SERVE_BASE,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{db}",
        "PREFECT_SERVER_API_AUTH_STRING": settings.auth_string or "",
        # The server's own client (automation actions) must authenticate too.
        "PREFECT_API_URL": settings.api_url,
        "PREFECT_API_AUTH_STRING": settings.auth_string or "",
        # Flow-run retention (issue 6) relies on the vacuum service knowing flow runs.
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": f"{settings.retention_days * 86400}",
        # Email history lives in Prefect's events (7 days by default): keep it as long as runs.
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"P{settings.retention_days}D",  # ISO 8601
        # Prefect answers CORS `*` by default: any web page a user opens could call the API
        # from their browser. Nothing needs that: the overlay calls Prefect from the server,
        # the Prefect UI is served by Prefect itself (same origin). Only ScriptFlow's own.
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": ",".join(cors_origins(settings)),
    }
    return env


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def cors_origins(settings: Settings) -> list[str]:
    """The overlay's origin (and its public one), and the Prefect UI's own origin under both
    names of the loopback address, which browsers treat as two origins."""
    origins = [_origin(settings.overlay_url), _origin(settings.ui_url)]
    if settings.public_url:
        origins.append(_origin(settings.public_url))
    ui = urlsplit(settings.ui_url)
    if ui.hostname == "127.0.0.1":
        origins.append(f"{ui.scheme}://localhost" + (f":{ui.port}" if ui.port else ""))
    return list(dict.fromkeys(origins))


def apply_client_env(settings: Settings) -> None:
    """Point this process's Prefect client at ScriptFlow's server; call before importing prefect."""
    os.environ.update(client_env(settings))
