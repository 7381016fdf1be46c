"""A run's output for the API and the run page: from the run's stored output (plain or
compressed, history/index.py) or, when that is on another machine, from Prefect's logs.

Cursors are opaque to clients: a byte offset into the stored output, or "<timestamp>~<n>"
into Prefect's logs.

Example::

    lines, cursor, complete = await read_output(settings, flow_run, after=None)
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from prefect.client.schemas.objects import FlowRun

from scriptflow_prefect.history import index as history_index
from scriptflow_prefect.history import output as ho
from scriptflow_prefect.history.current_line import current_path, read_current
from scriptflow_prefect.platform.control_chars import neutralise
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.runs import prefect as runs_prefect
from scriptflow_prefect.runs.models import FINAL, status_of
from scriptflow_prefect.scripts.service import ScriptError


def has_output(settings: Settings, flow_run: FlowRun) -> bool:
    """Whether this machine keeps the run's output (else it is read from Prefect's logs)."""
    return history_index.has_output(settings, flow_run.id)


def _cursor(after: str | None) -> int:
    # A Prefect-log cursor ("<timestamp>~<n>") was taken while the run was queued, before
    # the output file existed; no output line had been read yet, so start over.
    if after and "~" in after:
        return 0
    try:
        return int(after or 0)
    except ValueError:
        raise ScriptError(400, _("The output cursor is not valid.")) from None


def _with_source(settings: Settings, run_id, read):
    """`read(source)` on the run's stored output (plain or compressed); the plain file can be
    replaced by the compressed one between two calls, so a vanished file is tried again."""
    for attempt in range(2):
        try:
            with history_index.source(settings, run_id) as src:
                return read(src)
        except FileNotFoundError:
            if attempt:
                raise
        except ho.CursorError:
            raise ScriptError(400, _("The output cursor is not valid.")) from None
    raise AssertionError("unreachable")


async def read_output(settings: Settings, flow_run, after: str | None, limit: int = 1000):
    """Lines after `after` (an opaque cursor), the next cursor, and whether that is all."""
    final = status_of(flow_run.state) in FINAL
    if history_index.has_output(settings, flow_run.id):
        offset = _cursor(after)

        def read(src):
            lines, nxt, more = ho.lines_after(src, offset, limit)
            return lines, nxt, more, src.size

        try:
            lines, nxt, more, size = await asyncio.to_thread(
                _with_source, settings, flow_run.id, read
            )
        except FileNotFoundError:
            return await _read_prefect_logs(flow_run, after, limit, final)
        for line in lines:
            del line["at"]
        return lines, str(nxt), final and not more and nxt >= size
    return await _read_prefect_logs(flow_run, after, limit, final)


async def read_window(
    settings: Settings,
    flow_run,
    *,
    after: str | None = None,
    before: str | None = None,
    tail: bool = False,
    limit: int = 1000,
):
    """A window of lines for the run page: from `after`, ending at `before`, or the last
    `limit` lines (`tail`). Each line carries its byte offset `at` (a cursor)."""
    final = status_of(flow_run.state) in FINAL
    if not history_index.has_output(settings, flow_run.id):
        lines, nxt, complete = await _read_prefect_logs(flow_run, after, limit, final)
        return {
            "lines": lines,
            "next": nxt,
            "start": None,
            "complete": complete,
            "size": None,
            "stored": False,
        }
    start_at = None if before is None else _cursor(before)
    offset = _cursor(after)

    def read(src):
        if tail or start_at is not None:
            lines, first = ho.lines_before(src, src.size if tail else start_at, limit)
            nxt = src.size if tail else start_at
            more = not tail
        else:
            lines, nxt, more = ho.lines_after(src, offset, limit)
            first = offset
        return {
            "lines": lines,
            "start": first,
            "next": str(nxt),
            "size": src.size,
            "complete": final and not more and nxt >= src.size,
            "stored": True,
        }

    try:
        return await asyncio.to_thread(_with_source, settings, flow_run.id, read)
    except FileNotFoundError:
        lines, nxt, complete = await _read_prefect_logs(flow_run, after, limit, final)
        return {
            "lines": lines,
            "next": nxt,
            "start": None,
            "complete": complete,
            "size": None,
            "stored": False,
        }


async def search_output(settings: Settings, flow_run, needle: str, max_hits: int = 1000):
    """Offsets of the lines of one run whose text contains `needle` (case-insensitive)."""
    if not history_index.has_output(settings, flow_run.id):
        return [], 0
    try:
        return await asyncio.to_thread(
            _with_source, settings, flow_run.id, lambda src: ho.find_lines(src, needle, max_hits)
        )
    except FileNotFoundError:
        return [], 0


async def first_error(settings: Settings, flow_run) -> int | None:
    """Offset of the run's first stderr line or traceback, None if it has none."""
    entry = await asyncio.to_thread(history_index.entry, settings, flow_run.id)
    if entry is not None:
        return entry.first_error
    if not history_index.has_output(settings, flow_run.id):
        return None
    try:
        return await asyncio.to_thread(_with_source, settings, flow_run.id, ho.first_error)
    except FileNotFoundError:
        return None


def current_line(settings: Settings, flow_run) -> dict | None:
    """The line a live run is writing now ({"stream", "text"}: a progress bar), None when it
    has none or has ended (its final state is then the last stored line)."""
    if status_of(flow_run.state) in FINAL:
        return None
    return read_current(current_path(settings.outputs_dir, flow_run.id))


def output_text(settings: Settings, run_id):
    """The whole stored output as "<ts> <stream> <text>" lines (a generator for streaming),
    control characters written as escapes (platform/control_chars.py)."""
    with history_index.source(settings, run_id) as src:
        for chunk in ho.iter_text(src):
            yield neutralise(chunk)


async def _read_prefect_logs(flow_run, after: str | None, limit: int, final: bool):
    """Fallback when the output file is on another machine: the run's Prefect logs.

    Prefect pages logs by timestamp only, so the cursor is (timestamp, lines already seen
    at that timestamp) and duplicates at the boundary are skipped."""
    since, seen = None, 0
    if after:
        try:
            ts, _sep, n = after.rpartition("~")
            since, seen = datetime.fromisoformat(ts), int(n)
        except ValueError:
            raise ScriptError(400, _("The output cursor is not valid.")) from None
    # Prefect refuses a limit over 200; the boundary duplicates to skip count against it.
    fetch = min(min(limit, 200) + seen, 200)
    logs = await runs_prefect.read_logs(flow_run.id, since, limit=fetch)
    lines, last_ts, at_last = [], since, seen
    skipped = 0
    for log in logs:
        if since is not None and log.timestamp == since and skipped < seen:
            skipped += 1
            continue
        at_last = at_last + 1 if log.timestamp == last_ts else 1
        last_ts = log.timestamp
        stream = log.name.rsplit(".", 1)[-1]
        if log.name.startswith("prefect.flow_runs.") and stream in ("stdout", "stderr"):
            lines.append({"ts": log.timestamp.isoformat(), "stream": stream, "text": log.message})
    cursor = f"{last_ts.isoformat()}~{at_last}" if last_ts else (after or "")
    return lines, cursor, final and len(logs) < fetch
