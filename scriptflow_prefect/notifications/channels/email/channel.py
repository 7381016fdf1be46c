"""The email channel: SMTP settings (admins), the ScriptFlow email block that Prefect's
automations call, and a test message sent from here."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from prefect.events.actions import SendNotification
from sqlalchemy import select
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.notifications import config, events
from scriptflow_prefect.notifications import prefect as notifications_prefect
from scriptflow_prefect.notifications.channels.base import SUBJECT, Channel
from scriptflow_prefect.notifications.channels.email import deliveries, mailer
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform import prefect_names
from scriptflow_prefect.platform.i18n import N_, _
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.scripts.service import ScriptError

HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$|^\[?[0-9A-Fa-f:.]+\]?$")
FIELDS = ("host", "port", "username", "security", "from_address")


def check_email_settings(data: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The new settings (missing fields keep their value); 422 with every problem."""
    problems: list[str] = []
    new = {k: data.get(k, current.get(k)) for k in FIELDS}
    host = str(new["host"] or "").strip()
    if host and (len(host) > 253 or not HOST_RE.match(host)):
        problems.append(_("host: %(host)s is not a host name or IP address.", host=host[:80]))
    security = new["security"] or "starttls"
    if security not in mailer.SECURITIES:
        problems.append(_("security must be none, starttls or ssl."))
        security = "starttls"
    port = new["port"]
    if port in (None, ""):
        port = mailer.DEFAULT_PORTS[security]
    elif isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        problems.append(_("port must be a whole number from 1 to 65535."))
    username = new["username"]
    if username is not None and (not isinstance(username, str) or len(username) > 255):
        problems.append(_("username must be text of at most 255 characters."))
    sender = str(new["from_address"] or "").strip()
    if host and not mailer.is_email(sender):
        problems.append(
            _("from_address: give the sender's email address, such as scriptflow@example.com.")
        )
    password = data.get("password")
    if password is not None and (not isinstance(password, str) or len(password) > 1024):
        problems.append(_("password must be text of at most 1024 characters."))
    config.fail(problems)
    return {
        "host": host,
        "port": port,
        "username": (username or "").strip(),
        "security": security,
        "from_address": sender,
        "password": password,
    }


class EmailChannel(Channel):
    kind = "email"
    label = N_("Email")
    block_name = prefect_names.EMAIL_BLOCK

    @property
    def key(self) -> str:
        return "email"  # the row's name before channels existed

    def is_configured(self, db: Session) -> bool:
        s = self.stored(db)
        return bool(s.get("host") and s.get("from_address") and s.get("block_id"))

    def public_settings(self, db: Session) -> dict[str, Any]:
        s = self.stored(db)
        return {
            "host": s.get("host") or "",
            "port": s.get("port"),
            "username": s.get("username") or "",
            "security": s.get("security") or "starttls",
            "from_address": s.get("from_address") or "",
            "password_set": bool(s.get("password_set")),
            "configured": self.is_configured(db),
        }

    async def save(self, db: Session, settings: Settings, data: dict[str, Any]) -> str:
        current = self.stored(db)
        new = check_email_settings(data, current)
        password = new.pop("password")
        stored = {
            **new,
            "password_set": bool(password)
            if password is not None
            else bool(current.get("password_set")),
            "block_id": None,
        }
        if new["host"]:
            stored["block_id"] = await self._save_blocks(db, settings, new, password)
        config.put(db, self.key, stored)
        return new["host"] or "-"

    async def refresh_block(self, db: Session, settings: Settings) -> None:
        """Re-save the block's fields (sender, address, language, quiet period)."""
        s = self.stored(db)
        if s.get("host") and s.get("from_address"):
            s["block_id"] = await self._save_blocks(db, settings, s, None)
            config.put(db, self.key, s)

    async def _save_blocks(
        self, db: Session, settings: Settings, s: dict[str, Any], password: str | None
    ) -> str:
        admins = db.scalars(
            select(User).where(User.is_admin, User.is_active, User.email.is_not(None))
        )
        fields = {
            "from_address": s["from_address"],
            "to": [u.email for u in admins if mailer.is_email(u.email)],
            "public_url": settings.link_url,
            "language": settings.language,
            "timezone": settings.timezone,
            "throttle_minutes": float(config.defaults(db)["throttle_minutes"]),
        }
        try:
            block_id = await notifications_prefect.save_email_blocks(
                host=s["host"],
                port=s["port"],
                smtp_type=mailer.SMTP_TYPES[s["security"]],
                username=s["username"] or None,
                password=password,
                email_fields=fields,
            )
        except platform_prefect.PrefectUnavailable as exc:
            raise config.unavailable(exc) from exc
        return str(block_id)

    def action(
        self, db: Session, settings: Settings, script, kind: str, recipients: list[dict[str, Any]]
    ):
        if not recipients:
            return None
        return SendNotification(
            block_document_id=self.block_id(db),
            subject=SUBJECT,
            body=deliveries.run_request_template(script.id, kind, recipients),
        )

    async def send_test(
        self, db: Session, settings: Settings, data: dict[str, Any], *, language: str, zone: str
    ) -> str:
        """One message now (no retries): the SMTP server's own words if it refuses."""
        to = data.get("to")
        if not mailer.is_email(to):
            raise ScriptError(422, _("to: %(to)s is not an email address.", to=str(to)[:100]))
        if not self.is_configured(db):
            raise ScriptError(409, _("Save the email settings first."))
        try:
            block = await notifications_prefect.load_email_block()
        except platform_prefect.PrefectUnavailable as exc:
            raise config.unavailable(exc) from exc
        if block is None:
            raise ScriptError(409, _("Save the email settings first."))
        smtp = mailer.SmtpConfig.from_credentials(block.credentials)
        rendered = mailer.render(
            "test",
            {
                "host": smtp.host,
                "port": smtp.port,
                "security": smtp.security,
                "sender": block.from_address,
                "url": settings.link_url,
            },
            language=language,
            zone=zone,
        )
        msg = mailer.build_message(sender=block.from_address, to=to, rendered=rendered)
        payload = {"kind": "test", "subject": rendered.subject, "attempts": 1}
        try:
            await asyncio.to_thread(mailer.send, smtp, msg)
        except mailer.SendError as exc:
            events.record(
                events.FAILED,
                events.TEST_RESOURCE,
                "test",
                recipient=to,
                payload={**payload, "reason": str(exc), "errors": [str(exc)]},
            )
            raise ScriptError(
                502,
                _("The test email was not sent. The SMTP server said: %(error)s", error=str(exc)),
            ) from exc
        events.record(
            events.SENT,
            events.TEST_RESOURCE,
            "test",
            recipient=to,
            payload={**payload, "errors": []},
        )
        return _("A test email was sent to %(to)s.", to=to)


CHANNEL = EmailChannel()
