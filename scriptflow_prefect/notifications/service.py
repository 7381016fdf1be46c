"""Email notifications, the overlay's side: email settings, global defaults and per-script
preferences, and the Prefect objects that carry them out; history and alerts read back.

Prefect does the sending (ARCHITECTURE.md "Notifications"): each script has automations
named "ScriptFlow · <script> · failure|success" whose action is the ScriptFlow email block
(blocks/email_notification.py, run inside Prefect's server; see deliveries.py), and the
`send_digest/daily|weekly` deployments run in ScriptFlow's worker. ScriptFlow keeps those in
step with its preferences here, always through the gateway."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from datetime import timedelta
from typing import Any

from sqlalchemy import event as orm_event
from sqlalchemy import inspect, or_, select
from sqlalchemy.orm import Session

from scriptflow_prefect.accounts.models import User
from scriptflow_prefect.notifications import deliveries
from scriptflow_prefect.notifications import prefect as notifications_prefect
from scriptflow_prefect.notifications.channels.email import mailer
from scriptflow_prefect.notifications.models import NotificationPref
from scriptflow_prefect.platform import prefect as platform_prefect
from scriptflow_prefect.platform import prefect_names as prefect_names
from scriptflow_prefect.platform.db import audit
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.models import AppSetting
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.service import ScriptError

log = logging.getLogger("scriptflow.notifications")

EMAIL_KEY = "email"
DEFAULTS_KEY = "notification_defaults"
SEED_KEY = "email_seed"
DIGESTS = ("none", "daily", "weekly")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULTS: dict[str, Any] = {
    "on_failure": True,
    "on_success": False,
    "digest": "none",
    "digest_time": "08:00",
    "digest_weekday": "mon",
    "throttle_minutes": 15,
}
# What Prefect emits when a run ends (state names: the flow names a timeout "TimedOut").
EVENTS = {
    "failure": ["prefect.flow-run.Failed", "prefect.flow-run.TimedOut", "prefect.flow-run.Crashed"],
    "success": ["prefect.flow-run.Completed"],
}
MAX_RECIPIENTS = 20
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$|^\[?[0-9A-Fa-f:.]+\]?$")
TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _fail(problems: list[str]) -> None:
    if problems:
        raise ScriptError(422, " ".join(problems))


def _unavailable(exc: Exception) -> ScriptError:
    return ScriptError(
        503, _("Prefect is not reachable, nothing was changed: %(err)s", err=str(exc)[:200])
    )


def _get(db: Session, key: str) -> dict[str, Any]:
    row = db.get(AppSetting, key)
    return dict(row.value) if row else {}


def _put(db: Session, key: str, value: dict[str, Any]) -> None:
    row = db.get(AppSetting, key)
    if row is None:
        db.add(AppSetting(key=key, value=value))
    else:
        row.value = value
    db.flush()


# -- email settings (admin) -------------------------------------------------------------------
def email_settings(db: Session) -> dict[str, Any]:
    s = _get(db, EMAIL_KEY)
    return {
        "host": s.get("host") or "",
        "port": s.get("port"),
        "username": s.get("username") or "",
        "security": s.get("security") or "starttls",
        "from_address": s.get("from_address") or "",
        "password_set": bool(s.get("password_set")),
        "configured": is_configured(db),
    }


def is_configured(db: Session) -> bool:
    s = _get(db, EMAIL_KEY)
    return bool(s.get("host") and s.get("from_address") and s.get("block_id"))


def check_email_settings(data: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The new settings (missing fields keep their value); 422 with every problem."""
    problems: list[str] = []
    new = {
        k: data.get(k, current.get(k))
        for k in ("host", "port", "username", "security", "from_address")
    }
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
    _fail(problems)
    return {
        "host": host,
        "port": port,
        "username": (username or "").strip(),
        "security": security,
        "from_address": sender,
        "password": password,
    }


def _block_fields(db: Session, settings: Settings, sender: str) -> dict[str, Any]:
    admins = db.scalars(select(User).where(User.is_admin, User.is_active, User.email.is_not(None)))
    return {
        "from_address": sender,
        "to": [u.email for u in admins if mailer.is_email(u.email)],
        "public_url": settings.link_url,
        "language": settings.language,
        "timezone": settings.timezone,
        "throttle_minutes": float(defaults(db)["throttle_minutes"]),
    }


async def _save_blocks(
    db: Session, settings: Settings, s: dict[str, Any], password: str | None
) -> str:
    try:
        block_id = await notifications_prefect.save_email_blocks(
            host=s["host"],
            port=s["port"],
            smtp_type=mailer.SMTP_TYPES[s["security"]],
            username=s["username"] or None,
            password=password,
            email_fields=_block_fields(db, settings, s["from_address"]),
        )
    except platform_prefect.PrefectUnavailable as exc:
        raise _unavailable(exc) from exc
    return str(block_id)


async def save_email_settings(
    db: Session, user: User | None, data: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    current = _get(db, EMAIL_KEY)
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
        stored["block_id"] = await _save_blocks(db, settings, new, password)
    _put(db, EMAIL_KEY, stored)
    audit(db, user.id if user else None, "settings.email", new["host"] or "-")
    async with _lock():
        await sync_all(db, settings)
    return email_settings(db)


async def refresh_email_block(db: Session, settings: Settings) -> None:
    """Re-save the email block's fields (sender, address, language, quiet period)."""
    s = _get(db, EMAIL_KEY)
    if s.get("host") and s.get("from_address"):
        s["block_id"] = await _save_blocks(db, settings, s, None)
        _put(db, EMAIL_KEY, s)


async def send_test_email(
    db: Session, settings: Settings, to: Any, *, language: str, zone: str
) -> str:
    """Send one message now (no retries): the SMTP server's own words if it refuses."""
    if not mailer.is_email(to):
        raise ScriptError(422, _("to: %(to)s is not an email address.", to=str(to)[:100]))
    if not is_configured(db):
        raise ScriptError(409, _("Save the email settings first."))
    try:
        block = await notifications_prefect.load_email_block()
    except platform_prefect.PrefectUnavailable as exc:
        raise _unavailable(exc) from exc
    if block is None:
        raise ScriptError(409, _("Save the email settings first."))
    config = mailer.SmtpConfig.from_credentials(block.credentials)
    rendered = mailer.render(
        "test",
        {
            "host": config.host,
            "port": config.port,
            "security": config.security,
            "sender": block.from_address,
            "url": settings.link_url,
        },
        language=language,
        zone=zone,
    )
    msg = mailer.build_message(sender=block.from_address, to=to, rendered=rendered)
    payload = {"kind": "test", "subject": rendered.subject, "attempts": 1}
    try:
        await asyncio.to_thread(mailer.send, config, msg)
    except mailer.SendError as exc:
        deliveries.record(
            deliveries.FAILED,
            deliveries.TEST_RESOURCE,
            "test",
            recipient=to,
            payload={**payload, "reason": str(exc), "errors": [str(exc)]},
        )
        raise ScriptError(
            502, _("The test email was not sent. The SMTP server said: %(error)s", error=str(exc))
        ) from exc
    deliveries.record(
        deliveries.SENT,
        deliveries.TEST_RESOURCE,
        "test",
        recipient=to,
        payload={**payload, "errors": []},
    )
    return _("A test email was sent to %(to)s.", to=to)


# -- global defaults (admin) ------------------------------------------------------------------
def defaults(db: Session) -> dict[str, Any]:
    return {**DEFAULTS, **_get(db, DEFAULTS_KEY)}


def check_defaults(data: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    new = {k: data.get(k, current[k]) for k in DEFAULTS}
    problems = _check_flags(new)
    if not isinstance(new["digest_time"], str) or not TIME_RE.match(new["digest_time"]):
        problems.append(_("digest_time must be a time of day as HH:MM, such as 08:00."))
    if new["digest_weekday"] not in WEEKDAYS:
        problems.append(_("digest_weekday must be one of mon, tue, wed, thu, fri, sat, sun."))
    minutes = new["throttle_minutes"]
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, int | float)
        or not 0 <= minutes <= 1440
    ):
        problems.append(_("throttle_minutes must be a number of minutes from 0 to 1440."))
    _fail(problems)
    return new


def _check_flags(new: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("on_failure", "on_success"):
        if not isinstance(new[key], bool):
            problems.append(_("%(field)s must be true or false.", field=key))
    if new["digest"] not in DIGESTS:
        problems.append(_("digest must be none, daily or weekly."))
    return problems


async def save_defaults(
    db: Session, user: User, data: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    old = defaults(db)
    new = check_defaults(data, old)
    _put(db, DEFAULTS_KEY, new)
    if new["throttle_minutes"] != old["throttle_minutes"]:
        await refresh_email_block(db, settings)
    audit(db, user.id, "settings.notifications", "", **new)
    async with _lock():
        await sync_all(db, settings)
    return new


# -- per-script preferences --------------------------------------------------------------------
def effective_prefs(db: Session, script: Script) -> dict[str, Any]:
    row = db.get(NotificationPref, script.id)
    if row is None:
        d = defaults(db)
        return {
            "on_failure": d["on_failure"],
            "on_success": d["on_success"],
            "digest": d["digest"],
            "recipients": [],
            "customised": False,
        }
    return {
        "on_failure": row.on_failure,
        "on_success": row.on_success,
        "digest": row.digest,
        "recipients": list(row.recipients or []),
        "customised": True,
    }


def recipients_of(db: Session, script: Script, prefs: dict[str, Any]) -> list[dict[str, Any]]:
    """Each recipient with the language and time zone of the user who has that address."""
    emails = prefs["recipients"] or ([script.owner.email] if script.owner.email else [])
    emails = [e for e in emails if mailer.is_email(e)]
    users = {
        u.email.lower(): u
        for u in db.scalars(select(User).where(User.email.is_not(None), User.is_active))
        if u.email
    }
    out = []
    for email in emails:
        u = users.get(email.lower())
        out.append(
            {
                "email": email,
                "language": u.language if u else None,
                "timezone": u.timezone if u else None,
            }
        )
    return out


def prefs_to_dict(db: Session, script: Script) -> dict[str, Any]:
    p = effective_prefs(db, script)
    return {
        "on_failure": p["on_failure"],
        "on_success": p["on_success"],
        "recipients": [r["email"] for r in recipients_of(db, script, p)],
        "digest": p["digest"],
        "default_recipients": not p["recipients"],
        "email_configured": is_configured(db),
    }


def check_prefs(db: Session, script: Script, data: dict[str, Any]) -> dict[str, Any]:
    current = effective_prefs(db, script)
    new = {k: data.get(k, current[k]) for k in ("on_failure", "on_success", "digest")}
    problems = _check_flags(new)
    recipients = data.get("recipients", current["recipients"])
    clean: list[str] = []
    if recipients is None:
        recipients = []
    if not isinstance(recipients, list):
        problems.append(_("recipients must be a list of email addresses."))
        recipients = []
    if len(recipients) > MAX_RECIPIENTS:
        problems.append(_("At most %(n)s recipients.", n=MAX_RECIPIENTS))
    for value in recipients:
        if not mailer.is_email(value):
            problems.append(_("%(value)s is not an email address.", value=str(value)[:100]))
        elif value.lower() not in {c.lower() for c in clean}:
            clean.append(value)
    wants_mail = (
        new["on_failure"] is True
        or new["on_success"] is True
        or new["digest"] in ("daily", "weekly")
    )
    if not problems and wants_mail and not clean and not script.owner.email:
        problems.append(_("Add a recipient: the script's owner has no email address."))
    _fail(problems)
    return {**new, "recipients": clean}


async def save_prefs(
    db: Session, user: User, script: Script, data: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    new = check_prefs(db, script, data)
    row = db.get(NotificationPref, script.id)
    if row is None:
        row = NotificationPref(script_id=script.id, automation_ids=[])
        db.add(row)
    row.on_failure, row.on_success = new["on_failure"], new["on_success"]
    row.digest, row.recipients = new["digest"], new["recipients"]
    db.flush()
    async with _lock():
        try:
            await sync_script(db, settings, script)
            await sync_digests(db, settings)
        except platform_prefect.PrefectUnavailable as exc:
            raise _unavailable(exc) from exc
    audit(db, user.id, "script.notifications", script.name, script_id=script.id, **new)
    return prefs_to_dict(db, script)


# -- keeping Prefect in step ------------------------------------------------------------------
def automation_for(script: Script, kind: str, recipients: list[dict[str, Any]], block_id: str):
    """The Prefect automation that emails `recipients` when a run of `script` fails
    (failed, timed out, crashed) or succeeds. Its name and description are for the Prefect
    UI, which is not translated."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    when = "fails, times out or crashes" if kind == "failure" else "succeeds"
    return AutomationCore(
        name=f"ScriptFlow · {script.name} · {kind}",
        description=(
            f"Emails {', '.join(r['email'] for r in recipients)} when a run of "
            f"{script.name} {when}. Managed by ScriptFlow: change it on the script's "
            "page there, not here."
        ),
        enabled=True,
        tags=[prefect_names.EMAIL_TAG, prefect_names.script_tag(script.id), f"on-{kind}"],
        owner_resource=deliveries.script_resource(script.id),
        trigger=EventTrigger(
            expect=set(EVENTS[kind]),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            # Runs carry their deployment's tags, and the tag outlives a rename.
            match_related={
                "prefect.resource.role": "tag",
                "prefect.resource.id": f"prefect.tag.{prefect_names.script_tag(script.id)}",
            },
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="ScriptFlow · {{ flow_run.parameters.script_name }} · "
                "{{ flow_run.state.name }}",
                body=deliveries.run_request_template(script.id, kind, recipients),
            )
        ],
    )


def _signature(a) -> str:
    action = a.actions[0] if a.actions else None
    return json.dumps(
        {
            "name": a.name,
            "description": a.description,
            "enabled": a.enabled,
            "tags": sorted(a.tags or []),
            "expect": sorted(a.trigger.expect),
            "related": a.trigger.model_dump(mode="json")["match_related"],
            "block": str(getattr(action, "block_document_id", "")),
            "subject": getattr(action, "subject", ""),
            "body": getattr(action, "body", ""),
        },
        sort_keys=True,
    )


def _kind_of(a) -> str | None:
    return next((t[3:] for t in a.tags or [] if t in ("on-failure", "on-success")), None)


def script_of(a) -> int | None:
    for t in a.tags or []:
        if t.startswith("script-") and t[7:].isdigit():
            return int(t[7:])
    return None


async def sync_script(
    db: Session, settings: Settings, script: Script, existing: list | None = None
) -> list[str]:
    """Create, update or delete the script's automations to match its preferences."""
    email = _get(db, EMAIL_KEY)
    want: dict[str, Any] = {}
    if is_configured(db) and script.deleted_at is None:
        prefs = effective_prefs(db, script)
        recipients = recipients_of(db, script, prefs)
        for kind in ("failure", "success"):
            if recipients and prefs[f"on_{kind}"]:
                want[kind] = automation_for(script, kind, recipients, email["block_id"])
    if existing is None:
        existing = await notifications_prefect.read_email_automations(script.id)
    ids: list[str] = []
    kept: set[str] = set()
    for a in existing:
        kind = _kind_of(a)
        if kind in want and kind not in kept:  # keep one per kind, up to date
            kept.add(kind)
            if _signature(a) != _signature(want[kind]):
                await notifications_prefect.update_automation(a.id, want[kind])
            ids.append(str(a.id))
        else:
            await notifications_prefect.delete_automation(a.id)
    for kind, core in want.items():
        if kind not in kept:
            ids.append(str(await notifications_prefect.create_automation(core)))
    row = db.get(NotificationPref, script.id)
    if row is not None and row.automation_ids != ids:
        row.automation_ids = ids
    return ids


async def sync_all(db: Session, settings: Settings) -> None:
    """Every script's automations and the digest deployments (start, settings changed)."""
    try:
        existing = await notifications_prefect.read_email_automations()
        by_script: dict[int | None, list] = {}
        for a in existing:
            by_script.setdefault(script_of(a), []).append(a)
        for a in by_script.pop(None, []):
            await notifications_prefect.delete_automation(a.id)
        scripts = db.scalars(
            select(Script).where(
                or_(Script.deleted_at.is_(None), Script.id.in_([i for i in by_script if i]))
            )
        )
        for script in scripts:
            await sync_script(db, settings, script, by_script.pop(script.id, []))
        for leftovers in by_script.values():  # scripts this database does not know
            for a in leftovers:
                await notifications_prefect.delete_automation(a.id)
        await sync_digests(db, settings)
    except platform_prefect.PrefectUnavailable as exc:
        raise _unavailable(exc) from exc


def _cron(time_of_day: str, weekday: str | None) -> str:
    hour, minute = (int(x) for x in time_of_day.split(":"))
    dow = "*" if weekday is None else str((WEEKDAYS.index(weekday) + 1) % 7)
    return f"{minute} {hour} * * {dow}"


def digest_plans(db: Session) -> dict[str, list[dict[str, Any]]]:
    """Per period, each recipient with the scripts their digest covers."""
    plans: dict[str, dict[str, dict[str, Any]]] = {"daily": {}, "weekly": {}}
    for script in db.scalars(
        select(Script).where(Script.deleted_at.is_(None)).order_by(Script.name)
    ):
        prefs = effective_prefs(db, script)
        if prefs["digest"] not in plans:
            continue
        for r in recipients_of(db, script, prefs):
            entry = plans[prefs["digest"]].setdefault(r["email"].lower(), {**r, "scripts": []})
            entry["scripts"].append({"id": script.id, "name": script.name})
    return {period: list(p.values()) for period, p in plans.items()}


async def sync_digests(db: Session, settings: Settings) -> None:
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    d = defaults(db)
    plans = digest_plans(db) if is_configured(db) else {"daily": [], "weekly": []}
    for period, recipients in plans.items():
        if not recipients:
            await notifications_prefect.delete_digest_deployment(period)
            continue
        cron = _cron(d["digest_time"], d["digest_weekday"] if period == "weekly" else None)
        await notifications_prefect.upsert_digest_deployment(
            period,
            {"period": period, "recipients": recipients, "block_name": prefect_names.EMAIL_BLOCK},
            [
                DeploymentScheduleCreate(
                    schedule=CronSchedule(cron=cron, timezone=settings.timezone)
                )
            ],
        )


async def forget_script(script: Script) -> None:
    """A deleted script's automations go with it (best effort: the next start retries)."""
    try:
        for a in await notifications_prefect.read_email_automations(script.id):
            await notifications_prefect.delete_automation(a.id)
    except platform_prefect.PrefectUnavailable as exc:
        log.warning("could not delete the email automations of %s: %s", script.name, exc)


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
            if _get(s, SEED_KEY).get("fingerprint") != fingerprint:
                try:
                    await save_email_settings(s, None, values, settings)
                except ScriptError as exc:
                    raise RuntimeError(f"SCRIPTFLOW_SMTP_*: {exc}") from None
                _put(s, SEED_KEY, {"fingerprint": fingerprint})
                return
        try:
            await refresh_email_block(s, settings)
            async with _lock():
                await sync_all(s, settings)
        except ScriptError as exc:  # Prefect hiccup: the next change or start catches up
            log.warning("could not bring the email automations in step: %s", exc)


# -- follow changes made anywhere in this process (new script, rename, owner's address) ---------
_runtime: dict[str, Any] = {}
_locks: dict[int, asyncio.Lock] = {}
_pending_tasks: set[asyncio.Task] = set()


def _lock() -> asyncio.Lock:
    """One sync at a time per event loop, so that two never create the same automation."""
    loop = asyncio.get_running_loop()
    return _locks.setdefault(id(loop), asyncio.Lock())


def install(db, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
    """Keep automations in step with scripts and users whatever code changes them: a new
    script gets its failure email by default, a rename renames its automations."""
    _runtime.update(db=db, settings=settings, loop=loop)
    if not _runtime.get("listening"):
        orm_event.listen(Session, "after_flush", _after_flush)
        orm_event.listen(Session, "after_commit", _after_commit)
        orm_event.listen(Session, "after_soft_rollback", _after_rollback)
        _runtime["listening"] = True


def uninstall() -> None:
    _runtime.pop("loop", None)


def _changed(obj, *attrs: str) -> bool:
    state = inspect(obj)
    return any(state.attrs[a].history.has_changes() for a in attrs)


def _after_flush(session: Session, _context) -> None:
    pending = session.info.setdefault("scriptflow_notify", set())
    for obj in session.new:
        if isinstance(obj, Script):
            pending.add(("script", obj.id))
    for obj in session.dirty:
        if isinstance(obj, Script) and _changed(obj, "name", "owner_id", "deleted_at"):
            pending.add(("script", obj.id))
        elif isinstance(obj, User) and _changed(obj, "email", "language", "timezone", "is_active"):
            pending.add(("user", obj.id))


def _after_rollback(session: Session, _previous) -> None:
    session.info.pop("scriptflow_notify", None)


def _after_commit(session: Session) -> None:
    pending = session.info.pop("scriptflow_notify", None)
    loop = _runtime.get("loop")
    if not pending or loop is None or loop.is_closed():
        return
    coro = _follow(pending)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        task = loop.create_task(coro)
        _pending_tasks.add(task)
        task.add_done_callback(_pending_tasks.discard)
    else:
        asyncio.run_coroutine_threadsafe(coro, loop)


async def _follow(pending: set[tuple[str, int]]) -> None:
    db, settings = _runtime["db"], _runtime["settings"]
    try:
        async with _lock():
            with db.session() as s:
                if not is_configured(s):
                    return
                if any(kind == "user" for kind, _id in pending):
                    await sync_all(s, settings)
                    return
                for _kind, sid in sorted(pending):
                    script = s.get(Script, sid)
                    if script is not None:
                        await sync_script(s, settings, script)
                await sync_digests(s, settings)
    except Exception:  # noqa: BLE001 - the next change or start catches up
        log.exception("could not bring the email automations in step")
