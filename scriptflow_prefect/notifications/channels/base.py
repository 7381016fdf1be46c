"""What every notification channel provides (see channels/__init__.py for the registry).

A channel is where ScriptFlow's Prefect automations send word of a finished run: its settings
live in the overlay (an app_settings row `channel.<kind>`, secrets only in Prefect), its
Prefect notification block is the target of the automations' send-notification action."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from prefect.events.actions import SendNotification
from sqlalchemy.orm import Session

from scriptflow_prefect.notifications import config
from scriptflow_prefect.notifications import prefect as notifications_prefect
from scriptflow_prefect.notifications.channels.relay import ScriptFlowOutbox
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.i18n import N_, _, translations
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.scripts.service import ScriptError

# What a run's notification says, for the channels that send Prefect's rendered text (the
# email channel renders its own). Prefect fills the placeholders from the triggering event.
SUBJECT = "ScriptFlow · {{ flow_run.parameters.script_name }} · {{ flow_run.state.name }}"
RUN_MESSAGE = N_("%(script)s: run %(run)s ended as %(state)s.\n%(url)s")
TEST_SUBJECT = N_("ScriptFlow test message")
TEST_BODY = N_("This is a test message from ScriptFlow (%(url)s).")


class Channel(ABC):
    """One way of telling people about runs. Subclasses set the class attributes."""

    kind: str  # the name in the API and in a script's "channels": "email", "teams", ...
    label: str  # for people, a msgid: translated by label_text()
    block_name: str  # the name of its Prefect block document

    @property
    def key(self) -> str:
        return f"channel.{self.kind}"

    def label_text(self) -> str:
        return _(self.label)

    def stored(self, db: Session) -> dict[str, Any]:
        return config.get(db, self.key)

    def block_id(self, db: Session) -> str | None:
        return self.stored(db).get("block_id")

    def is_configured(self, db: Session) -> bool:
        return bool(self.block_id(db))

    @abstractmethod
    async def refresh_block(self, db: Session, settings: Settings) -> None:
        """At start: bring the channel's Prefect blocks in step with the settings."""

    @abstractmethod
    def public_settings(self, db: Session) -> dict[str, Any]:
        """What the API and the Settings page show (secrets only as `*_set` flags)."""

    @abstractmethod
    async def save(self, db: Session, settings: Settings, data: dict[str, Any]) -> str:
        """Check `data` (422 with every problem), save the Prefect block and the overlay's
        row; returns a short description for the audit trail."""

    @abstractmethod
    def action(
        self, db: Session, settings: Settings, script, kind: str, recipients: list[dict[str, Any]]
    ):
        """The automation action that tells about a `kind` ("failure"/"success") run of
        `script`, or None when the channel has nobody to tell."""

    @abstractmethod
    async def send_test(
        self, db: Session, settings: Settings, data: dict[str, Any], *, language: str, zone: str
    ) -> str:
        """Send one message now; returns what to tell the person (4xx/5xx if it failed)."""


class UrlChannel(Channel):
    """A channel that posts to one incoming-webhook address, kept as a secret in its Prefect
    block (the overlay only remembers that there is one, and its host)."""

    schemes: tuple[str, ...] = ("https",)
    block_class: type[Block]

    @abstractmethod
    def make_block(self, url: str):
        """The Prefect block for `url`; ValueError (with a reason) if it cannot be one."""

    def check_url(self, url: Any) -> str:
        """The URL if this channel can post to it, else 422 with the reason."""
        if not isinstance(url, str) or len(url) > 2048:
            config.fail([_("url must be a web address of at most 2048 characters.")])
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme not in self.schemes or not parts.hostname:
            config.fail(
                [
                    _(
                        "url: %(url)s is not a web address starting with %(schemes)s.",
                        url=url[:80],
                        schemes=" or ".join(f"{s}://" for s in self.schemes),
                    )
                ]
            )
        try:
            self.make_block(url)
        except ValueError as exc:
            config.fail([_("url: %(reason)s", reason=str(exc)[:200])])
        return url

    def public_settings(self, db: Session) -> dict[str, Any]:
        s = self.stored(db)
        return {
            "kind": self.kind,
            "label": self.label_text(),
            "url_set": bool(s.get("block_id")),
            "host": s.get("host") or "",
            "configured": self.is_configured(db),
        }

    @property
    def outbox_name(self) -> str:
        return f"{self.block_name}-outbox"

    async def _save_outbox_block(self) -> str:
        """The automations' action: the outbox block in front of the channel's own block."""
        target = f"{self.block_class.get_block_type_slug()}/{self.block_name}"
        block = ScriptFlowOutbox(channel=self.kind, target=target)
        return str(await notifications_prefect.save_block(block, self.outbox_name))

    async def refresh_block(self, db: Session, settings: Settings) -> None:
        """A channel set up before the outbox existed gets its outbox block."""
        s = self.stored(db)
        if s.get("block_id") and not s.get("outbox_id"):
            try:
                s["outbox_id"] = await self._save_outbox_block()
            except platform_prefect.PrefectUnavailable as exc:
                raise config.unavailable(exc) from exc
            config.put(db, self.key, s)

    async def save(self, db: Session, settings: Settings, data: dict[str, Any]) -> str:
        if "url" not in data:
            config.fail([_("Send the url (an empty one switches the channel off).")])
        url = data["url"]
        try:
            if url in (None, ""):
                await notifications_prefect.delete_block(ScriptFlowOutbox, self.outbox_name)
                await notifications_prefect.delete_block(self.block_class, self.block_name)
                config.put(db, self.key, {})
                return "-"
            url = self.check_url(url)
            block_id = await notifications_prefect.save_block(self.make_block(url), self.block_name)
            outbox_id = await self._save_outbox_block()
        except platform_prefect.PrefectUnavailable as exc:
            raise config.unavailable(exc) from exc
        host = urlsplit(url).hostname or ""
        config.put(db, self.key, {"block_id": str(block_id), "outbox_id": outbox_id, "host": host})
        return host

    def action(
        self, db: Session, settings: Settings, script, kind: str, recipients: list[dict[str, Any]]
    ):
        base = settings.link_url.rstrip("/")
        body = translations(settings.language).gettext(RUN_MESSAGE) % {
            "script": "{{ flow_run.parameters.script_name }}",
            "run": "{{ flow_run.name }}",
            "state": "{{ flow_run.state.name }}",
            "url": base + "/runs/{{ flow_run.id }}",
        }
        # Through the outbox (retried for a day); straight to the channel's block until the
        # outbox block exists (a channel set up before it, until the next start).
        target = self.stored(db).get("outbox_id") or self.block_id(db)
        return SendNotification(block_document_id=target, subject=SUBJECT, body=body)

    async def send_test(
        self, db: Session, settings: Settings, data: dict[str, Any], *, language: str, zone: str
    ) -> str:
        if not self.is_configured(db):
            raise ScriptError(409, _("Save the address of this channel first."))
        text = translations(language).gettext
        link = settings.link_url
        try:
            await notifications_prefect.notify(
                self.block_class,
                self.block_name,
                text(TEST_BODY) % {"url": link},
                text(TEST_SUBJECT),
            )
        except platform_prefect.PrefectUnavailable as exc:
            raise config.unavailable(exc) from exc
        except Exception as exc:  # noqa: BLE001 - the receiver's words, for the admin
            raise ScriptError(
                502,
                _("The test message was not sent: %(error)s", error=str(exc)[:300]),
            ) from exc
        return _("A test message was sent to %(channel)s.", channel=self.label_text())
