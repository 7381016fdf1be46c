"""Email messages: rendered from translated templates, sent over SMTP, retried when the
failure is temporary.

Used inside Prefect's server (the ScriptFlow email block), by the `send_digest` flow and by
the overlay's "Send test email"; it never imports the overlay's web code."""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from scriptflow_prefect.platform import i18n
from scriptflow_prefect.platform.control_chars import neutralise
from scriptflow_prefect.runs.words import run_message, status_label, trigger_label

SECURITIES = ("none", "starttls", "ssl")
DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}
# prefect-email's names for the three kinds of connection.
SMTP_TYPES = {"none": "INSECURE", "starttls": "STARTTLS", "ssl": "SSL"}
SECURITY_OF_TYPE = {v: k for k, v in SMTP_TYPES.items()}
# Three tries over about a minute: 0 s, 10 s, 50 s.
RETRY_DELAYS: tuple[float, ...] = (10.0, 40.0)
CONNECT_TIMEOUT = 20.0
# Strict on purpose: no quotes, braces or spaces, so an address can sit in a Prefect
# automation's (Jinja) template and in a header without escaping.
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`|~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def is_email(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 254 and bool(EMAIL_RE.match(value))


def _templates_dir() -> Path:
    return Path(__file__).resolve().parent / "templates"


_env: Environment | None = None


def env() -> Environment:
    global _env
    if _env is None:
        e = Environment(
            loader=FileSystemLoader(str(_templates_dir())),
            extensions=["jinja2.ext.i18n"],
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        e.install_gettext_callables(  # type: ignore[attr-defined]
            lambda s: i18n.translations(i18n.get_locale()).gettext(s),
            lambda s, p, n: i18n.translations(i18n.get_locale()).ngettext(s, p, n),
            newstyle=True,
        )
        e.filters.update(
            datetime=i18n.format_datetime,
            duration=i18n.format_duration,
            number=i18n.format_number,
            run_message=run_message,
        )
        e.globals.update(
            status_label=status_label, trigger_label=trigger_label, get_locale=i18n.get_locale
        )
        _env = e
    return _env


@dataclass
class Rendered:
    subject: str
    text: str
    html: str


def render(kind: str, context: dict[str, Any], *, language: str, zone: str) -> Rendered:
    """`<kind>-subject.txt`, `-body.txt` and `-body.html` in the given language."""
    token = i18n.set_locale(language if language in i18n.LOCALES else i18n.DEFAULT_LOCALE)
    ztoken = i18n.set_zone(zone or "UTC")
    try:
        e = env()
        subject = e.get_template(f"{kind}-subject.txt").render(context)
        text = e.get_template(f"{kind}-body.txt").render(context)
        html = e.get_template(f"{kind}-body.html").render(context)
    finally:
        i18n._zone.reset(ztoken)
        i18n._current.reset(token)
    # The run's output and names are the script author's text: no terminal or bidi controls
    # in the mail (platform/control_chars.py); Jinja's escaping leaves them as they are.
    return Rendered(
        neutralise(" ".join(subject.split()))[:250],
        neutralise(text.strip()) + "\n",
        neutralise(html),
    )


def build_message(*, sender: str, to: str, rendered: Rendered) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = rendered.subject
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
    msg.set_content(rendered.text)
    if rendered.html:
        msg.add_alternative(rendered.html, subtype="html")
    return msg


@dataclass
class SmtpConfig:
    host: str
    port: int
    security: str = "starttls"
    username: str | None = None
    password: str = ""
    verify: bool = True
    timeout: float = CONNECT_TIMEOUT

    @classmethod
    def from_credentials(cls, creds, timeout: float = CONNECT_TIMEOUT) -> SmtpConfig:
        """From prefect-email's EmailServerCredentials block."""
        host = getattr(creds.smtp_server, "value", creds.smtp_server)
        kind = getattr(creds.smtp_type, "name", str(creds.smtp_type)).upper()
        security = SECURITY_OF_TYPE.get(kind, "starttls")
        return cls(
            host=str(host),
            port=int(creds.smtp_port or DEFAULT_PORTS[security]),
            security=security,
            username=creds.username or None,
            password=creds.password.get_secret_value() if creds.password else "",
            verify=creds.verify is not False,
            timeout=timeout,
        )


class SendError(Exception):
    """One try failed; `temporary` says whether trying again later may help."""

    def __init__(self, message: str, temporary: bool):
        super().__init__(message)
        self.temporary = temporary


def _server_text(exc: smtplib.SMTPResponseException) -> str:
    error = exc.smtp_error
    text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
    return f"{exc.smtp_code} {' '.join(text.split())}"


def send(config: SmtpConfig, msg: EmailMessage) -> None:
    """Send one message (blocking). prefect-email's `get_server()` has no timeout, so the
    connection is made here from the same credentials, with one."""
    server: smtplib.SMTP | None = None
    try:
        context = ssl.create_default_context()
        if not config.verify:  # the admin's explicit choice (self-signed relay)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if config.security == "ssl":
            server = smtplib.SMTP_SSL(
                config.host, config.port, timeout=config.timeout, context=context
            )
        else:
            server = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
            if config.security == "starttls":
                server.starttls(context=context)
        if config.username:
            server.login(config.username, config.password)
        server.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _m in exc.recipients.values()]
        text = "; ".join(
            f"{addr}: {code} {m.decode('utf-8', 'replace')}"
            for addr, (code, m) in exc.recipients.items()
        )
        raise SendError(text, temporary=all(400 <= c < 500 for c in codes)) from exc
    except smtplib.SMTPResponseException as exc:  # the server's own reply: keep its words
        raise SendError(_server_text(exc), temporary=400 <= exc.smtp_code < 500) from exc
    except smtplib.SMTPServerDisconnected as exc:
        raise SendError(
            str(exc) or "The SMTP server closed the connection.", temporary=True
        ) from exc
    except smtplib.SMTPNotSupportedError as exc:  # e.g. no STARTTLS or AUTH offered
        raise SendError(str(exc), temporary=False) from exc
    except ssl.SSLError as exc:  # a TLS setting that does not fit the server: fix, not retry
        raise SendError(f"TLS: {exc.reason or exc}", temporary=False) from exc
    except smtplib.SMTPException as exc:  # (an OSError too: keep it before OSError)
        raise SendError(str(exc), temporary=False) from exc
    except OSError as exc:  # refused, unreachable, timed out, name not resolved
        raise SendError(
            f"{config.host}:{config.port}: {exc.strerror or exc}", temporary=True
        ) from exc
    finally:
        if server is not None:
            try:
                server.quit()
            except (smtplib.SMTPException, OSError):
                server.close()


@dataclass
class Delivery:
    """What happened to one message: sent or not, after how many tries, and why not."""

    sent: bool
    attempts: int
    errors: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return self.errors[-1] if self.errors else ""


async def deliver(
    config: SmtpConfig,
    msg: EmailMessage,
    delays: Sequence[float] = RETRY_DELAYS,
    on_retry: Callable[[int, str, float], Awaitable[None]] | None = None,
) -> Delivery:
    """Send with retries on temporary failures; the blocking parts run in a thread."""
    errors: list[str] = []
    for attempt in range(1, len(delays) + 2):
        try:
            await asyncio.to_thread(send, config, msg)
            return Delivery(True, attempt, errors)
        except SendError as exc:
            errors.append(str(exc))
            if not exc.temporary or attempt > len(delays):
                return Delivery(False, attempt, errors)
            if on_retry is not None:
                await on_retry(attempt, str(exc), delays[attempt - 1])
            await asyncio.sleep(delays[attempt - 1])
    return Delivery(False, len(delays) + 1, errors)  # pragma: no cover


def deliver_sync(
    config: SmtpConfig, msg: EmailMessage, delays: Sequence[float] = RETRY_DELAYS
) -> Delivery:
    """The same, for flows (which run in a worker thread)."""
    errors: list[str] = []
    for attempt in range(1, len(delays) + 2):
        try:
            send(config, msg)
            return Delivery(True, attempt, errors)
        except SendError as exc:
            errors.append(str(exc))
            if not exc.temporary or attempt > len(delays):
                return Delivery(False, attempt, errors)
            time.sleep(delays[attempt - 1])
    return Delivery(False, len(delays) + 1, errors)  # pragma: no cover
