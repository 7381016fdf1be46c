"""Jinja2 templates with gettext (newstyle: `_("Hello %(name)s", name=x)`, autoescaped)."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from scriptflow_prefect import __version__
from scriptflow_prefect.platform import i18n
from scriptflow_prefect.platform.prefect_budget import was_slow
from scriptflow_prefect.runs.words import run_message, status_label, trigger_label

env = Environment(
    loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
    extensions=["jinja2.ext.i18n"],
    autoescape=True,
)
templates = Jinja2Templates(env=env)
env.install_gettext_callables(  # type: ignore[attr-defined]
    lambda s: i18n.translations(i18n.get_locale()).gettext(s),
    lambda s, p, n: i18n.translations(i18n.get_locale()).ngettext(s, p, n),
    newstyle=True,
)
env.globals.update(version=__version__, get_locale=i18n.get_locale)
env.filters.update(
    datetime=i18n.format_datetime,
    duration=i18n.format_duration,
    number=i18n.format_number,
    run_message=run_message,
)

STATUS_ICONS = {
    "queued": "◷",
    "running": "▶",
    "succeeded": "✓",
    "failed": "✗",
    "timed_out": "⏱",
    "cancelled": "■",
    "crashed": "⚠",
}


def status_badge(status: str | None) -> Markup:
    """Status as icon + text + colour: never colour alone (WCAG 1.4.1)."""
    key = status or "none"
    icon = STATUS_ICONS.get(status or "", "–")
    return Markup(
        '<span class="badge badge-{k}" data-status="{k}">'
        '<span aria-hidden="true">{i}</span> {t}</span>'
    ).format(k=key, i=icon, t=status_label(status))


env.globals.update(
    status_badge=status_badge, status_label=status_label, trigger_label=trigger_label
)


def render(request: Request, name: str, context: dict | None = None, status_code: int = 200):
    ctx = {
        "request": request,
        "user": getattr(request.state, "user", None),
        "csrf_token": request.session.get("csrf", "") if "session" in request.scope else "",
        "locale": i18n.get_locale(),
        "flash": pop_flash(request),
        "prefect_slow": was_slow(),  # a Prefect call ran out of the page's time budget
    }
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)


def flash(request: Request, message: str, kind: str = "success") -> None:
    request.session.setdefault("flash", []).append({"kind": kind, "text": message})


def pop_flash(request: Request) -> list[dict]:
    if "session" not in request.scope:
        return []
    return request.session.pop("flash", [])
