"""The output index: which runs printed a phrase, across the whole retention window, fast.

Kept in SCRIPTFLOW_HOME/history/ (SQLite, WAL; ScriptFlow's own storage, not Prefect's):

- ``catalog.db``: one row per indexed run (run id, script id, Prefect's expected start time,
  sizes, where its first error line is, whether its output is compressed) and the block table
  of its output (history_output.Block);
- ``fts-YYYY-MM-DD.db``: an FTS5 table for the runs expected to start that day (UTC), one row
  per output block (≤ 64 KiB of whole lines), rowid = run seq << 20 | block number. Contentless
  (the text stays in the output file) with positions, so phrase queries are exact.

A run is indexed when its output file is closed (flows/run_script.py calls `index_after_run`:
small outputs at once, big ones on a background thread, which then also compresses them), and
any finished run that was missed (worker stopped, older runs) on the next search
(at most every few seconds).

Why one FTS file per day: SQLite here (3.40) cannot delete rows from a contentless FTS5 table,
and retention works in days anyway; dropping a day is one unlink, with no vacuum and no
fragmentation. A search asks each day file of the window (30 small queries) and merges.

Modules: catalog.py (the files, reading a run's entry and output), search.py (phrases),
retention.py (forgetting old days), this one (indexing). The names the run pages and the flow
use are re-exported here, so that `history.index` stays the index's one face.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from scriptflow_prefect.history import output as ho
from scriptflow_prefect.history.catalog import (
    SEQ_SHIFT,
    blocks_of,
    catalog,
    day_db,
    day_of,
    day_path,
    drop_lock,
    entry,
    gz_path,
    has_output,
    history_dir,
    plain_path,
    run_lock,
    source,
)
from scriptflow_prefect.history.retention import disk_usage, disk_usage_of, forget_before
from scriptflow_prefect.history.search import (
    LINE_TOKEN,
    Phrase,
    QueryError,
    matching_line,
    search,
)

__all__ = [
    "Phrase",
    "QueryError",
    "blocks_of",
    "day_of",
    "day_path",
    "disk_usage",
    "disk_usage_of",
    "entry",
    "forget_before",
    "gz_path",
    "has_output",
    "history_dir",
    "index_after_run",
    "index_run",
    "indexer",
    "matching_line",
    "plain_path",
    "search",
    "source",
    "unindexed_runs",
]

log = logging.getLogger("scriptflow.history")

SYNC_INDEX_BYTES = 1 << 20  # smaller outputs are indexed before the run ends
_SEPARATOR = f" {LINE_TOKEN} ".encode()
BACKGROUND_DELAY = 2.0  # a big output waits this long, so the run's end reaches Prefect first


# -- indexing ----------------------------------------------------------------------------------


def index_run(
    settings, run_id, *, script_id: int | None, expected: datetime, compress: bool = True
) -> bool:
    """Index a finished run's output (and compress it if big). False if there is nothing to
    index, it is indexed already, or another call (thread or process) is indexing it now.
    Safe to call twice at once, from two processes: the run's lock decides who does it."""
    run_id = str(run_id)
    with run_lock(settings, run_id) as mine:
        if not mine:
            return False
        # Under the lock: whoever had it before us may have indexed and compressed it.
        plain = plain_path(settings, run_id)
        if not plain.exists():
            return False
        done = _index_locked(settings, run_id, plain, script_id, expected, compress)
    if done:
        drop_lock(settings, run_id)
    return done


def _index_locked(
    settings, run_id: str, plain: Path, script_id: int | None, expected: datetime, compress: bool
) -> bool:
    day = day_of(expected)
    cat = catalog(settings)
    try:
        cat.execute("BEGIN IMMEDIATE")
        row = cat.execute("SELECT seq, state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row and row[1] == "indexed":
            cat.execute("COMMIT")
            return False
        if row:  # an earlier attempt stopped half-way: its FTS rows are orphans, start over
            cat.execute("DELETE FROM blocks WHERE seq = ?", (row[0],))
            cat.execute("DELETE FROM runs WHERE seq = ?", (row[0],))
        seq = cast(
            int,
            cat.execute(
                "INSERT INTO runs (run_id, script_id, expected, day, state) "
                "VALUES (?, ?, ?, ?, 'indexing')",
                (run_id, script_id, expected.timestamp(), day),
            ).lastrowid,
        )
        cat.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            cat.execute("ROLLBACK")
        cat.close()
        raise
    try:
        _index_blocks(settings, cat, seq, run_id, plain, day, compress)
    finally:
        cat.close()
    return True


def _index_blocks(
    settings, cat, seq: int, run_id: str, plain: Path, day: str, compress: bool
) -> None:
    size = plain.stat().st_size
    compress = compress and size >= ho.COMPRESS_MIN
    gz_tmp = gz_path(settings, run_id).with_suffix(".gz.tmp")
    writer = ho.GzipBlockWriter(gz_tmp) if compress else None
    blocks, first_error, lines, total = [], None, 0, 0
    fts = day_db(settings, day)
    try:
        # IMMEDIATE: another run's indexing may write to the same day file; a deferred
        # transaction that reads first then writes would fail at once ("database is locked").
        fts.execute("BEGIN IMMEDIATE")
        rows = []
        for n, (offset, line, data) in enumerate(ho.iter_blocks(plain)):
            texts = []
            for raw in data.split(b"\n"):
                if raw:  # "<ts>\t<stream>\t<text>": the text only
                    parts = raw.split(b"\t", 2)
                    texts.append(parts[2] if len(parts) == 3 else raw)
            rows.append(((seq << SEQ_SHIFT) | n, _SEPARATOR.join(texts).decode("utf-8", "replace")))
            if len(rows) >= 200:
                fts.executemany("INSERT INTO fts (rowid, text) VALUES (?, ?)", rows)
                rows.clear()
            if first_error is None:
                first_error = ho.error_offset_in(data, offset)
            gz = writer.add(data) if writer else (None, None)
            blocks.append((seq, n, offset, len(data), line, gz[0], gz[1]))
            lines, total = line + data.count(b"\n"), offset + len(data)
        if rows:
            fts.executemany("INSERT INTO fts (rowid, text) VALUES (?, ?)", rows)
        fts.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            fts.execute("ROLLBACK")
        if writer:
            with contextlib.suppress(OSError):  # a full disk fails the close too
                writer.close()
            gz_tmp.unlink(missing_ok=True)
        raise
    finally:
        fts.close()
    stored = total
    try:
        if writer:
            writer.close()
            stored = gz_tmp.stat().st_size
        cat.execute("BEGIN IMMEDIATE")
        cat.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?)", blocks)
        cat.execute(
            "UPDATE runs SET state = 'indexed', bytes = ?, lines = ?, stored_bytes = ?, "
            "compressed = ?, first_error = ?, indexed_at = ? WHERE seq = ?",
            (total, lines, stored, int(bool(writer)), first_error, time.time(), seq),
        )
        cat.execute("COMMIT")
    except BaseException:  # a full disk: the run stays 'indexing', its plain file read as is
        with contextlib.suppress(sqlite3.Error):
            cat.execute("ROLLBACK")
        gz_tmp.unlink(missing_ok=True)
        raise
    if writer:
        # Readers prefer the plain file while it exists, so there is no moment without one.
        os.replace(gz_tmp, gz_path(settings, run_id))
        with contextlib.suppress(OSError):  # Windows: a reader still has it open; retention
            plain.unlink()


class _Indexer:
    """One background thread that indexes (and compresses) big outputs one after another."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    def submit(self, job) -> None:
        with self._lock:
            self.idle.clear()
            self._queue.put(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="scriptflow-index", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=30)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        self.idle.set()
                        return
                continue
            time.sleep(BACKGROUND_DELAY)
            try:
                job()
            except Exception:
                log.exception("indexing a run's output failed")
            if self._queue.empty():
                self.idle.set()


indexer = _Indexer()


def index_after_run(settings, run_id, *, script_id: int | None, expected: datetime | None) -> None:
    """Called by the run_script flow once the output file is closed; never raises."""
    try:
        expected = expected or datetime.now(UTC)
        plain = plain_path(settings, run_id)
        size = plain.stat().st_size if plain.exists() else 0
        if size == 0:
            return
        job = lambda: index_run(  # noqa: E731
            settings,
            run_id,
            script_id=script_id,
            expected=expected,
        )
        if size <= SYNC_INDEX_BYTES:
            job()  # a few ms: the run is searchable the moment it is shown as finished
        else:
            indexer.submit(job)
    except Exception:
        log.exception("could not index the output of run %s", run_id)


def unindexed_runs(settings, *, older_than: float = 5.0, limit: int = 500) -> list[str]:
    """Run ids with a plain output file, not indexed, untouched for `older_than` seconds."""
    cutoff = time.time() - older_than
    found = []
    try:
        entries = os.scandir(settings.outputs_dir)
    except FileNotFoundError:
        return []
    with entries:
        for e in entries:
            if e.name.endswith(".log") and e.stat().st_mtime < cutoff:
                found.append(e.name[:-4])
    if not found:
        return []
    cat = catalog(settings)
    try:
        known: set[str] = set()
        for i in range(0, len(found), 500):
            part = found[i : i + 500]
            known.update(
                r[0]
                for r in cat.execute(
                    f"SELECT run_id FROM runs WHERE state = 'indexed' AND run_id IN "
                    f"({','.join('?' * len(part))})",
                    part,
                )
            )
    finally:
        cat.close()
    return [r for r in found if r not in known][:limit]
