"""Run pages: the history (filters in the URL, live rows, CSV), one run with its output
(windowed, searchable, live) and Cancel; a script's run summary; the retention setting."""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta
from typing import Annotated
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from babel import dates as babel_dates
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, RedirectResponse
from scriptflow_prefect.ui_overlay.deps import Csrf, DbDep, PageUser, require_admin, visible_script
from scriptflow_prefect.ui_overlay.runs_api import csv_response
from scriptflow_prefect.ui_overlay.runs_api import get_output_text as _api_output_text
from scriptflow_prefect.ui_overlay.templating import flash, render, status_badge, status_label

from scriptflow_prefect.history import service as history
from scriptflow_prefect.platform import i18n
from scriptflow_prefect.platform.db import audit
from scriptflow_prefect.platform.i18n import _, format_datetime, format_duration
from scriptflow_prefect.platform.prefect import PrefectUnavailable
from scriptflow_prefect.runs import output
from scriptflow_prefect.runs import service as core
from scriptflow_prefect.runs.cancel_watch import cancel_local
from scriptflow_prefect.runs.models import FINAL, Status, Trigger
from scriptflow_prefect.scripts.models import Script
from scriptflow_prefect.scripts.service import visible_script_ids, visible_scripts_query

pages = APIRouter()
PER_PAGE = 25
WINDOW = 1000  # output lines per request of the run page


def _day(value: str, *, end: bool) -> datetime | None:
    """A date (YYYY-MM-DD, from a date input) as the start of that day in the user's zone,
    or the start of the next day for `end`; a full ISO datetime is taken as it is."""
    try:
        if len(value) == 10:
            day = datetime.fromisoformat(value).date() + timedelta(days=1 if end else 0)
            return datetime.combine(day, time(), tzinfo=ZoneInfo(i18n._zone.get()))
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=ZoneInfo(i18n._zone.get()))


def page_filters(
    script_id: str, status: str, trigger: str, since: str, until: str, q: str
) -> tuple[dict, dict, list[str]]:
    """(arguments for runs.list_runs, the filters as shown, problems to tell the user):
    a bad value is dropped with a message rather than failing the page."""
    problems = []
    sid = int(script_id) if script_id.isdigit() else None
    if script_id and sid is None:
        problems.append(_("The script filter was not understood and is ignored."))
    st = status if status in set(Status) else None
    if status and st is None:
        problems.append(_("There is no status %(value)s; showing every status.", value=status[:40]))
    tr = trigger if trigger in set(Trigger) else None
    if trigger and tr is None:
        problems.append(
            _("There is no trigger %(value)s; showing every trigger.", value=trigger[:40])
        )
    lo = _day(since, end=False) if since else None
    hi = _day(until, end=True) if until else None
    if since and lo is None:
        problems.append(_("The start date is not a date and is ignored."))
    if until and hi is None:
        problems.append(_("The end date is not a date and is ignored."))
    if lo and hi and lo >= hi:
        problems.append(_("The start date is after the end date; the dates are ignored."))
        lo = hi = None
    q = q.strip()[:200]
    if q:
        try:
            core.search_phrase(q)
        except core.ScriptError as exc:
            problems.append(str(exc))
            q = ""
    args = {
        "script_id": sid,
        "statuses": [st] if st else None,
        "triggers": [tr] if tr else None,
        "since": lo,
        "until": hi,
        "q": q or None,
    }
    shown = {
        "script_id": sid,
        "status": st or "",
        "trigger": tr or "",
        "since": since if lo else "",
        "until": until if hi else "",
        "q": q,
    }
    return args, shown, problems


def _query_string(shown: dict, **extra) -> str:
    params = {k: v for k, v in {**shown, **extra}.items() if v not in (None, "")}
    return urlencode(params)


@pages.get("/runs")
async def run_list(
    request: Request,
    user: PageUser,
    db: DbDep,
    script_id: str = "",
    status: str = "",
    trigger: str = "",
    since: str = "",
    until: str = "",
    q: str = "",
    page: str = "1",
):
    args, shown, problems = page_filters(script_id, status, trigger, since, until, q)
    page_n = int(page) if page.isdigit() and int(page) >= 1 else 1
    items, total = await core.list_runs(
        db, user, page=page_n, per_page=PER_PAGE, settings=request.app.state.settings, **args
    )
    pages_n = max(1, math.ceil(total / PER_PAGE))
    scripts = list(db.scalars(visible_scripts_query(user).order_by(Script.name)))
    return render(
        request,
        "runs/list.html",
        {
            "runs": items,
            "total": total,
            "page": page_n,
            "pages": pages_n,
            "scripts": scripts,
            "filters": shown,
            "problems": problems,
            "statuses": list(Status),
            "triggers": list(Trigger),
            "query": _query_string(shown),
            "filtered": any(shown.values()),
        },
    )


@pages.get("/runs.csv")
async def run_list_csv(
    request: Request,
    user: PageUser,
    db: DbDep,
    script_id: str = "",
    status: str = "",
    trigger: str = "",
    since: str = "",
    until: str = "",
    q: str = "",
):
    args, _shown, _problems = page_filters(script_id, status, trigger, since, until, q)
    return csv_response(
        core.export_runs(db, user, settings=request.app.state.settings, **args), "runs.csv"
    )


@pages.get("/runs/status.json")
async def run_statuses(user: PageUser, db: DbDep, ids: str = ""):
    """Status of the listed runs, for the live rows of the runs page."""
    runs = await core.runs_by_ids(db, user, [i for i in ids.split(",") if i][:100])
    return {
        "runs": [
            {
                "id": r.id,
                "status": r.status,
                "final": r.status in FINAL,
                "badge": str(status_badge(r.status)),
                "status_label": status_label(r.status),
                "duration": format_duration(r.duration_seconds),
                "exit_code": r.exit_code,
                "script_name": r.script_name or "",
            }
            for r in runs
        ]
    }


@pages.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str, user: PageUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    run = core.run_of(db, flow_run)
    return render(
        request,
        "runs/detail.html",
        {
            "run": run,
            "final": run.status in FINAL,
            "window": WINDOW,
            "q": (request.query_params.get("q") or "")[:200],
        },
    )


@pages.get("/runs/{run_id}/status.json")
async def run_status(run_id: str, user: PageUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    return jsonable_encoder(core.run_of(db, flow_run))


@pages.get("/runs/{run_id}/output.json")
async def run_output(
    request: Request,
    run_id: str,
    user: PageUser,
    db: DbDep,
    after: str | None = None,
    before: str | None = None,
    tail: bool = False,
    limit: int = WINDOW,
):
    """A window of output lines, each with its offset (`at`): from `after`, ending at
    `before`, or the last lines (`tail`); with the run's status for the live page."""
    flow_run = await core.visible_run(db, user, run_id)
    window = await output.read_window(
        request.app.state.settings,
        flow_run,
        after=after,
        before=before,
        tail=tail,
        limit=min(max(limit, 1), WINDOW),
    )
    run = core.run_of(db, flow_run)
    shown = {
        **jsonable_encoder(run),
        "duration_label": format_duration(run.duration_seconds),
        "started_label": format_datetime(run.started_at),  # queued when the page loaded
    }
    window["current"] = output.current_line(request.app.state.settings, flow_run)
    return jsonable_encoder({**window, "run": shown, "badge": str(status_badge(run.status))})


@pages.get("/runs/{run_id}/output/search.json")
async def run_output_search(request: Request, run_id: str, user: PageUser, db: DbDep, q: str = ""):
    """Offsets of the lines holding `q` (case-insensitive), for "next match"."""
    flow_run = await core.visible_run(db, user, run_id)
    q = q[:200]
    if not q.strip():
        return {"matches": [], "total": 0}
    hits, total = await output.search_output(request.app.state.settings, flow_run, q)
    return {"matches": hits, "total": total}


@pages.get("/runs/{run_id}/output/first-error.json")
async def run_first_error(request: Request, run_id: str, user: PageUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    return {"at": await output.first_error(request.app.state.settings, flow_run)}


@pages.get("/runs/{run_id}/output.txt")
async def run_output_text(request: Request, run_id: str, user: PageUser, db: DbDep):
    return await _api_output_text(request, run_id, user, db)


@pages.post("/runs/{run_id}/cancel", dependencies=[Csrf])
async def cancel(request: Request, run_id: str, user: PageUser, db: DbDep):
    flow_run = await core.visible_run(db, user, run_id)
    outcome = await core.cancel(flow_run)
    cancel_local(flow_run.id)
    if request.headers.get("accept", "").startswith("application/json"):
        return JSONResponse({"outcome": outcome}, status_code=202)
    if outcome == "final":
        flash(request, _("This run has already ended."), "error")
    return RedirectResponse(f"/runs/{run_id}", status_code=303)


# -- a script's summary (an include of the script page, loaded as a fragment) ---------------


def _day_texts(strip: list[dict]) -> None:
    """A text for each mark of the 30-day strip: what colour and icon say, in words."""
    loc = i18n.babel_locale(i18n.get_locale())
    for d in strip:
        day = babel_dates.format_date(d["day"], "EEE d MMM", locale=loc)
        if not d["runs"]:
            d["text"] = _("%(day)s: no runs", day=day)
        elif d["failed"]:
            d["text"] = i18n.ngettext(
                "%(day)s: %(num)s run, %(failed)s failed",
                "%(day)s: %(num)s runs, %(failed)s failed",
                d["runs"],
                day=day,
                failed=d["failed"],
            )
        elif d["finished"]:
            d["text"] = i18n.ngettext(
                "%(day)s: %(num)s run, succeeded",
                "%(day)s: %(num)s runs, all succeeded",
                d["runs"],
                day=day,
            )
        else:
            d["text"] = i18n.ngettext(
                "%(day)s: %(num)s run, cancelled or not finished",
                "%(day)s: %(num)s runs, cancelled or not finished",
                d["runs"],
                day=day,
            )


async def _summary_context(request: Request, db, user, script_id: int) -> dict:
    script = visible_script(db, user, script_id, deleted=True)
    try:
        summary = await history.script_summary(db, script, zone=i18n._zone.get())
        _day_texts(summary["strip"])
    except PrefectUnavailable:
        summary = None
    return {"script": script, "summary": summary}


@pages.get("/scripts/{script_id}/summary")
async def summary_page(request: Request, script_id: int, user: PageUser, db: DbDep):
    return render(
        request, "runs/summary.html", await _summary_context(request, db, user, script_id)
    )


@pages.get("/scripts/{script_id}/summary.html")
async def summary_fragment(request: Request, script_id: int, user: PageUser, db: DbDep):
    return render(
        request, "runs/_summary_body.html", await _summary_context(request, db, user, script_id)
    )


@pages.post("/scripts/{script_id}/acknowledge", dependencies=[Csrf])
async def acknowledge(
    request: Request, script_id: int, user: PageUser, db: DbDep, run_id: Annotated[str, Form()] = ""
):
    """Acknowledge one failed scheduled run (`run_id`) or all of them (`all`)."""
    script = visible_script(db, user, script_id, deleted=True)
    pending = await history.unacknowledged_failures(db, script)
    ids = [r.id for r in pending if run_id in ("all", r.id)]
    if not ids:
        raise HTTPException(404, _("There is no failed run to acknowledge here."))
    n = history.acknowledge(db, script, user.id, ids)
    audit(db, user.id, "run.acknowledge", script.name, script_id=script.id, runs=ids)
    flash(
        request,
        i18n.ngettext("Acknowledged %(num)s failed run.", "Acknowledged %(num)s failed runs.", n),
    )
    return RedirectResponse(f"/scripts/{script.id}#history-summary", status_code=303)


# -- retention (an include of the settings page) ----------------------------------------------


def _retention_context(request: Request, db, user) -> dict:
    """An administrator sees the server's figures; anyone else those of their own scripts."""
    report = history.retention_report(db, request.app.state.settings, visible_script_ids(db, user))
    last = report.get("last_clean")
    return {
        "retention": report,
        "min_days": history.MIN_DAYS,
        "max_days": history.MAX_DAYS,
        "last_clean_at": datetime.fromisoformat(last["at"]) if last else None,
    }


@pages.get("/settings/retention")
async def retention_page(request: Request, user: PageUser, db: DbDep):
    return render(request, "runs/retention.html", _retention_context(request, db, user))


@pages.get("/settings/retention.html")
async def retention_fragment(request: Request, user: PageUser, db: DbDep):
    return render(request, "runs/_retention_body.html", _retention_context(request, db, user))


@pages.post("/settings/retention", dependencies=[Csrf])
async def save_retention(
    request: Request, user: PageUser, db: DbDep, days: Annotated[str, Form()] = ""
):
    require_admin(user)
    try:
        value = int(days.strip())
        history.set_retention_days(db, value)
    except ValueError:
        ctx = _retention_context(request, db, user)
        ctx["error"] = _(
            "Keep history for a whole number of days from %(min)s to %(max)s.",
            min=history.MIN_DAYS,
            max=history.MAX_DAYS,
        )
        return render(request, "runs/retention.html", ctx, status_code=422)
    audit(db, user.id, "settings.retention", str(value))
    flash(
        request,
        i18n.ngettext(
            "Run history is kept for %(num)s day.", "Run history is kept for %(num)s days.", value
        ),
    )
    return RedirectResponse("/settings#retention", status_code=303)
