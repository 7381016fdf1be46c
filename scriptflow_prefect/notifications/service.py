"""Notifications, what the rest of ScriptFlow calls: channel settings (admins), global
defaults, per-script preferences, and "bring Prefect in step" after a change elsewhere.

Prefect does the telling (ARCHITECTURE.md "Notifications"): each script has automations
"ScriptFlow · <script> · failure|success" whose actions are the notification blocks of the
channels it uses (channels/), and the `send_digest/daily|weekly` deployments run in
ScriptFlow's worker. Whoever changes what those depend on calls script_changed (a script
created, renamed, deleted) or users_changed after its commit; they raise a ScriptError to show."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.notifications import automations, config, digests, prefs, sender
from scriptflow_prefect.notifications.channels import CHANNELS
from scriptflow_prefect.notifications.channels.email import mailer
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform.db import audit
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.service import ScriptError

log = logging.getLogger("scriptflow.notifications")

SEED_KEY = "email_seed"
DEFAULTS, WEEKDAYS = config.DEFAULTS, config.WEEKDAYS
defaults = config.defaults
prefs_to_dict = prefs.prefs_to_dict
EMAIL = CHANNELS["email"]


def _out_of_step(exc: Exception) -> ScriptError:
    return ScriptError(
        503,
        _(
            "Saved, but Prefect is not reachable, so the notifications do not follow the change "
            "yet (the next change or restart catches up): %(err)s",
            err=str(exc)[:200],
        ),
    )


def _channel(kind: str):
    if kind not in CHANNELS:
        raise ScriptError(
            404,
            _(
                "There is no channel %(kind)s; the channels are %(kinds)s.",
                kind=kind[:40],
                kinds=", ".join(CHANNELS),
            ),
        )
    return CHANNELS[kind]


async def _sync_all(db: Session, settings: Settings) -> None:
    try:
        async with automations.lock():
            await automations.sync_all(db, settings)
    except platform_prefect.PrefectUnavailable as exc:
        raise config.unavailable(exc) from exc


# -- channel settings (admins) ------------------------------------------------------------------
def email_settings(db: Session) -> dict[str, Any]:
    return EMAIL.public_settings(db)


def is_configured(db: Session) -> bool:
    return EMAIL.is_configured(db)


def channel_settings(db: Session, kind: str) -> dict[str, Any]:
    return _channel(kind).public_settings(db)


def all_channel_settings(db: Session) -> list[dict[str, Any]]:
    """The channels other than email, for the Settings page."""
    return [c.public_settings(db) for k, c in CHANNELS.items() if k != "email"]


async def save_channel_settings(
    db: Session, user: User | None, kind: str, data: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    channel = _channel(kind)
    target = await channel.save(db, settings, data)
    audit(db, user.id if user else None, f"settings.{kind}", target)
    await _sync_all(db, settings)
    return channel.public_settings(db)


async def save_email_settings(
    db: Session, user: User | None, data: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    return await save_channel_settings(db, user, "email", data, settings)


async def send_test(
    db: Session, settings: Settings, kind: str, data: dict[str, Any], *, language: str, zone: str
) -> str:
    return await _channel(kind).send_test(db, settings, data, language=language, zone=zone)


async def send_test_email(
    db: Session, settings: Settings, to: Any, *, language: str, zone: str
) -> str:
    return await send_test(db, settings, "email", {"to": to}, language=language, zone=zone)


# -- global defaults (admins) ---------------------------------------------------------------------
async def save_defaults(
    db: Session, user: User, data: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    old = config.defaults(db)
    new = config.check_defaults(data, old)
    config.put(db, config.DEFAULTS_KEY, new)
    if new["throttle_minutes"] != old["throttle_minutes"]:
        await EMAIL.refresh_block(db, settings)
    audit(db, user.id, "settings.notifications", "", **new)
    await _sync_all(db, settings)
    return new


# -- a script's preferences -----------------------------------------------------------------------
async def save_prefs(
    db: Session, user: User, script: Script, data: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    new = prefs.check_prefs(db, script, data)
    prefs.save_prefs_row(db, script, new)
    try:
        async with automations.lock():
            await automations.sync_script(db, settings, script)
            await digests.sync_digests(db, settings)
    except platform_prefect.PrefectUnavailable as exc:
        raise config.unavailable(exc) from exc
    audit(db, user.id, "script.notifications", script.name, script_id=script.id, **new)
    return prefs.prefs_to_dict(db, script)


# -- after changes made elsewhere (called by the overlay and the CLI, after their commit) ------
def _anything_configured(db: Session) -> bool:
    return any(c.is_configured(db) for c in CHANNELS.values())


async def script_changed(db: Session, settings: Settings, script: Script) -> None:
    """A script was created, renamed, deleted or given to another owner: its automations
    and the digests follow. ScriptError 503 if Prefect could not be told."""
    if not _anything_configured(db):
        return
    try:
        async with automations.lock():
            await automations.sync_script(db, settings, script)
            await digests.sync_digests(db, settings)
    except platform_prefect.PrefectUnavailable as exc:
        raise _out_of_step(exc) from exc


async def users_changed(db: Session, settings: Settings) -> None:
    """A user's address, language, time zone or active flag changed: every automation that
    tells them follows (recipients carry their language). ScriptError 503 as above."""
    if not _anything_configured(db):
        return
    try:
        async with automations.lock():
            await automations.sync_all(db, settings)
    except platform_prefect.PrefectUnavailable as exc:
        raise _out_of_step(exc) from exc


# -- the outbox's sender loop (every overlay process runs one) -------------------------------------
async def deliver_outbox(db, settings: Settings, stop: asyncio.Event) -> None:
    """Until `stop`: retry the messages waiting in the outbox on their back-off schedule."""
    await sender.run(db, settings, stop)


# -- start-up: seed from SCRIPTFLOW_SMTP_*, then bring Prefect in step --------------------------
def _seed_values(settings: Settings) -> dict[str, Any] | None:
    if not settings.smtp_host:
        return None
    sender = settings.smtp_from or (
        settings.smtp_username if mailer.is_email(settings.smtp_username) else None
    )
    if not sender:
        raise RuntimeError(
            "SCRIPTFLOW_SMTP_FROM: set the sender address of ScriptFlow's "
            "emails (SCRIPTFLOW_SMTP_HOST is set)"
        )
    return {
        "host": settings.smtp_host,
        "port": settings.smtp_port,
        "username": settings.smtp_username or "",
        "security": settings.smtp_security,
        "from_address": sender,
        "password": settings.smtp_password.get_secret_value() if settings.smtp_password else "",
    }


async def start(db, settings: Settings) -> None:
    """Called once at start (stack.prepare_overlay). The environment seeds the email settings
    when it changed since it last did, so edits made on the Settings page survive restarts."""
    values = _seed_values(settings)
    with db.session() as s:
        if values is not None:
            fingerprint = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
            if config.get(s, SEED_KEY).get("fingerprint") != fingerprint:
                try:
                    await save_email_settings(s, None, values, settings)
                except ScriptError as exc:
                    raise RuntimeError(f"SCRIPTFLOW_SMTP_*: {exc}") from None
                config.put(s, SEED_KEY, {"fingerprint": fingerprint})
                return
        try:
            for channel in CHANNELS.values():
                await channel.refresh_block(s, settings)
            await _sync_all(s, settings)
        except ScriptError as exc:  # Prefect hiccup: the next change or start catches up
            log.warning("could not bring the notification automations in step: %s", exc)
