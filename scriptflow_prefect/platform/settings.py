"""ScriptFlow's one settings class: every `SCRIPTFLOW_*` variable of API.md, and `*_FILE`."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SCRIPTFLOW_"


class SettingsError(RuntimeError):
    """A setting cannot be used; the message names the variable."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_durations(text: str) -> tuple[float, ...]:
    """Durations such as "1m,2m,30s,1.5h" in seconds (a bare number is seconds)."""
    out = []
    for part in str(text).split(","):
        part = part.strip().lower()
        unit = _UNITS.get(part[-1:], 0)
        try:
            value = float(part[:-1] if unit else part) * (unit or 1)
        except ValueError:
            raise ValueError(f"{part!r} is not a duration such as 30s, 5m or 1h") from None
        if not 0 < value <= 30 * 86400:
            raise ValueError(f"{part!r} must be more than 0 and at most 30 days")
        out.append(value)
    return tuple(out)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")
    _secret_files: list[Path] = PrivateAttr(default_factory=list)

    home: Path = Field(default_factory=lambda: Path.home() / ".scriptflow")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    prefect_port: int = Field(4200, ge=1, le=65535)
    prefect_api_url: str | None = None
    # For an existing Prefect server protected with PREFECT_SERVER_API_AUTH_STRING.
    prefect_auth_string: SecretStr | None = None
    database_url: str | None = None
    admin_password: SecretStr | None = None
    secret_key: SecretStr | None = None
    smtp_host: str | None = None
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "ssl"] = "starttls"
    smtp_from: str | None = None
    # The overlay's address as email recipients reach it (links in notification emails).
    public_url: str | None = None
    bat_launcher: str | None = None
    language: Literal["en", "pt_BR"] = "en"
    timezone: str = "UTC"
    retention_days: int = Field(30, ge=1, le=3650)
    # Set behind an HTTPS proxy so the session cookie is marked Secure.
    secure_cookies: bool = False
    # Reverse proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For is believed.
    trusted_proxies: str | None = None
    # How often a worker asks Prefect for new runs; an in-process "Run now" does not wait for it.
    worker_poll_seconds: float = Field(2.0, gt=0, le=60)
    max_concurrent_runs: int = Field(50, ge=1, le=500)
    worker_name: str | None = None
    # A running run's heartbeat (Prefect's, 30 s at least), and how long a run may go unheard
    # before the server marks it crashed (its worker vanished: runs/dead_man.py).
    run_heartbeat_seconds: int = Field(30, ge=30, le=600)
    dead_man_seconds: int = Field(90, ge=40, le=86400)
    # Every run in a sandbox (execution/sandbox.py); "off" only for debugging.
    sandbox: Literal["on", "off"] = "on"
    # Prefect's embedded SQLite server takes "Run now" and the per-run labels write with
    # the write lock first (commands/prefect_sqlite.py); "off" only to measure without it.
    sqlite_immediate_writes: Literal["on", "off"] = "on"
    # The OS account scripts run as unless a script names its own (its `run_as`).
    run_as: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\\@$-]{1,104}$")
    # Where scripts' Python dependencies come from: an index URL, or a folder of wheels
    # (offline hosts). Unset: the default package index.
    package_index_url: str | None = None
    # Notifications that could not be delivered (SMTP down, 4xx) are tried again after these
    # waits (the last one repeats), until `notification_give_up` after the first try.
    notification_retry: str = "1m,2m,5m,10m,30m,1h"
    notification_give_up: str = "24h"
    # The history says "delivered 2 hours late" past this delay after what caused a message.
    notification_late_after: str = "2m"

    @field_validator("dead_man_seconds")
    @classmethod
    def _beats_missed(cls, v: int, info) -> int:
        beat = info.data.get("run_heartbeat_seconds", 30)
        if v < beat + 10:
            raise ValueError(
                f"must be at least SCRIPTFLOW_RUN_HEARTBEAT_SECONDS + 10 ({beat + 10})"
            )
        return v

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("sandbox", "sqlite_immediate_writes", mode="before")
    @classmethod
    def _on_off(cls, v: object) -> object:
        words = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}
        return words.get(str(v).strip().lower(), str(v).strip().lower())

    @field_validator("run_as", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v or None

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: str | None) -> str | None:
        for part in (v or "").split(","):
            if part.strip():
                try:
                    ipaddress.ip_network(part.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{part.strip()!r} is not an IP address or CIDR") from None
        return v or None

    @field_validator("package_index_url")
    @classmethod
    def _index_or_folder(cls, v: str | None) -> str | None:
        v = (v or "").strip()
        if not v:
            return None
        if v.startswith(("http://", "https://", "file://")):
            return v
        folder = Path(v).expanduser()
        if not folder.is_absolute() or not folder.is_dir():
            raise ValueError("must be an http(s):// or file:// index URL or an existing folder")
        return str(folder.resolve())

    @field_validator("notification_retry", "notification_give_up", "notification_late_after")
    @classmethod
    def _durations(cls, v: str) -> str:
        parse_durations(v)
        return v

    @field_validator("language", mode="before")
    @classmethod
    def _normalise_language(cls, v: str) -> str:
        return {"pt-br": "pt_BR", "pt_br": "pt_BR", "pt": "pt_BR"}.get(str(v).lower(), v)

    # -- derived paths: everything lives under SCRIPTFLOW_HOME ------------------------------
    def path(self, *parts: str) -> Path:
        return self.home.joinpath(*parts)

    @property
    def prefect_home(self) -> Path:
        return self.path("prefect")

    @property
    def store_dir(self) -> Path:
        return self.path("store")

    @property
    def outputs_dir(self) -> Path:
        return self.path("outputs")

    @property
    def work_dir(self) -> Path:
        return self.path("work")

    @property
    def workspaces_dir(self) -> Path:
        """Each script's own folder (`<id>/`): its files, and what its runs leave there."""
        return self.path("workspaces")

    @property
    def logs_dir(self) -> Path:
        return self.path("logs")

    @property
    def script_venv_dir(self) -> Path:
        return self.path("script-venv")

    @property
    def envs_dir(self) -> Path:
        """Python dependency environments of scripts (read-only to the scripts)."""
        return self.path("envs")

    def secret_files(self) -> list[Path]:
        """Files that `SCRIPTFLOW_*_FILE` variables named at start: kept from scripts too."""
        return list(self._secret_files)

    @property
    def embedded_prefect(self) -> bool:
        return not self.prefect_api_url

    @property
    def api_url(self) -> str:
        return self.prefect_api_url or f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def overlay_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def link_url(self) -> str:
        """SCRIPTFLOW_PUBLIC_URL, else the overlay's own address: the base of emailed links."""
        return (self.public_url or self.overlay_url).rstrip("/")

    @property
    def notification_retry_seconds(self) -> tuple[float, ...]:
        return parse_durations(self.notification_retry)

    @property
    def notification_give_up_seconds(self) -> float:
        return parse_durations(self.notification_give_up)[-1]

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.path('scriptflow.db')}"

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        parts = (p.strip() for p in (self.trusted_proxies or "").split(","))
        return tuple(ipaddress.ip_network(p, strict=False) for p in parts if p)

    @cached_property
    def session_secret(self) -> str:
        if self.secret_key:
            return self.secret_key.get_secret_value()
        return _kept_secret(self.path("secret_key"), lambda: secrets.token_urlsafe(48))

    @cached_property
    def auth_string(self) -> str | None:
        """Basic-auth string of Prefect's API: generated once for the embedded server."""
        if self.prefect_auth_string:
            return self.prefect_auth_string.get_secret_value()
        if not self.embedded_prefect:
            return os.environ.get("PREFECT_API_AUTH_STRING")
        return _kept_secret(
            self.prefect_home / "auth_string", lambda: "scriptflow:" + secrets.token_urlsafe(32)
        )

    def ensure_dirs(self) -> None:
        for d in (
            self.home,
            self.prefect_home,
            self.store_dir,
            self.outputs_dir,
            self.work_dir,
            self.logs_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)


def _kept_secret(path: Path, make) -> str:
    """Read a secret kept in SCRIPTFLOW_HOME, creating it (mode 0600) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = make()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value
    except FileExistsError:  # another process created it between our read and write
        return path.read_text().strip()


# Settings whose values are secrets: taken out of the environment once read.
SECRET_VARIABLES = ("ADMIN_PASSWORD", "SECRET_KEY", "SMTP_PASSWORD", "PREFECT_AUTH_STRING")


def secret_variable_names(environ: Mapping[str, str]) -> list[str]:
    """The secret `SCRIPTFLOW_*` variables present in `environ`, and every `*_FILE` one."""
    secret = {ENV_PREFIX + name for name in SECRET_VARIABLES}
    return [
        key
        for key in environ
        if key.upper() in secret or (key.upper().startswith(ENV_PREFIX) and key.endswith("_FILE"))
    ]


def _file_paths(environ: Mapping[str, str]) -> list[Path]:
    return [
        Path(value).absolute()
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key.endswith("_FILE") and value
    ]


def _file_values(environ: dict[str, str]) -> dict[str, str]:
    """`SCRIPTFLOW_X_FILE=/path` supplies X from a file (Docker/systemd secrets)."""
    values = {}
    for key, file_path in environ.items():
        if key.startswith(ENV_PREFIX) and key.endswith("_FILE"):
            name = key[len(ENV_PREFIX) : -len("_FILE")].lower()
            if f"{ENV_PREFIX}{name.upper()}" in environ:
                continue  # the plain variable wins
            try:
                values[name] = Path(file_path).read_text().strip()
            except OSError as exc:
                raise SettingsError(f"{key}: cannot read {file_path}: {exc.strerror}") from exc
    return values


def load_settings(**overrides) -> Settings:
    """Read the environment; a bad value raises SettingsError naming the variable."""
    try:
        values = {**_file_values(dict(os.environ)), **overrides}
        settings = Settings(**values)
        settings._secret_files = _file_paths(os.environ)
        return settings
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']}")
        raise SettingsError("; ".join(problems)) from None


_current: Settings | None = None


def get_settings() -> Settings:
    global _current
    if _current is None:
        _current = load_settings()
    return _current


def set_settings(settings: Settings | None) -> None:
    """Used by the CLI and tests to pin the settings of this process."""
    global _current
    _current = settings
