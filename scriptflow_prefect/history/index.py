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

Query language: the words of `q`, in that order, as a phrase: case- and accent-insensitive,
punctuation ignored, the last word may be the start of a longer one ("connection refu" finds
"Connection refused."). A phrase never spans two lines (a separator token sits between lines).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import sqlite3
import threading
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scriptflow_prefect.history import output as ho
from scriptflow_prefect.history.output_log import parse_record

log = logging.getLogger("scriptflow.history")

SYNC_INDEX_BYTES = 1 << 20  # smaller outputs are indexed before the run ends
LINE_TOKEN = "qqsflx"  # between lines in the index: a phrase cannot match across two lines
_SEPARATOR = f" {LINE_TOKEN} ".encode()
BACKGROUND_DELAY = 2.0  # a big output waits this long, so the run's end reaches Prefect first
SEQ_SHIFT = 20
MAX_HITS = 100_000
_CATALOG = """
CREATE TABLE IF NOT EXISTS runs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id TEXT NOT NULL UNIQUE,
  script_id INTEGER,
  expected REAL NOT NULL,
  day TEXT NOT NULL,
  state TEXT NOT NULL,
  bytes INTEGER NOT NULL DEFAULT 0,
  lines INTEGER NOT NULL DEFAULT 0,
  stored_bytes INTEGER NOT NULL DEFAULT 0,
  compressed INTEGER NOT NULL DEFAULT 0,
  first_error INTEGER,
  indexed_at REAL
);
CREATE INDEX IF NOT EXISTS runs_expected ON runs(expected);
CREATE TABLE IF NOT EXISTS blocks (
  seq INTEGER NOT NULL,
  n INTEGER NOT NULL,
  offset INTEGER NOT NULL,
  size INTEGER NOT NULL,
  line INTEGER NOT NULL,
  gz_offset INTEGER,
  gz_size INTEGER,
  PRIMARY KEY (seq, n)
) WITHOUT ROWID;
"""
_FTS = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(text, content='', columnsize=0, "
    "tokenize='unicode61 remove_diacritics 2')"
)


class QueryError(ValueError):
    """`q` has nothing to search for (no letter or digit)."""


def history_dir(settings) -> Path:
    return settings.path("history")


def plain_path(settings, run_id) -> Path:
    return settings.outputs_dir / f"{run_id}.log"


def gz_path(settings, run_id) -> Path:
    return settings.outputs_dir / f"{run_id}.log.gz"


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


_ready: set[Path] = set()


def catalog(settings) -> sqlite3.Connection:
    d = history_dir(settings)
    path = d / "catalog.db"
    if path not in _ready or not path.exists():
        d.mkdir(parents=True, exist_ok=True)
        conn = _connect(path)
        conn.executescript(_CATALOG)
        _ready.add(path)
        return conn
    return _connect(path)


def day_of(expected: datetime) -> str:
    return expected.astimezone(UTC).strftime("%Y-%m-%d")


def day_path(settings, day: str) -> Path:
    return history_dir(settings) / f"fts-{day}.db"


def _day_db(settings, day: str) -> sqlite3.Connection:
    path = day_path(settings, day)
    conn = _connect(path)
    if path not in _ready:
        conn.execute(_FTS)
        _ready.add(path)
    return conn


# -- words ---------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """Words as FTS5's unicode61 tokenizer (remove_diacritics 2) sees them."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return [w.lower() for w in _WORD.findall(text)]


@dataclass(frozen=True)
class Phrase:
    words: tuple[str, ...]

    @classmethod
    def parse(cls, q: str) -> Phrase:
        ws = tuple(w for w in words(q) if w != LINE_TOKEN)
        if not ws:
            raise QueryError(q)
        return cls(ws)

    @property
    def prefix(self) -> bool:  # a short last word as a prefix would match half the index
        return len(self.words[-1]) >= 3

    def fts(self) -> str:
        return '"' + " ".join(self.words) + '"' + (" *" if self.prefix else "")

    def matches(self, text: str) -> bool:
        ws, n = words(text), len(self.words)
        for i in range(len(ws) - n + 1):
            if ws[i : i + n - 1] == list(self.words[:-1]) and (
                ws[i + n - 1] == self.words[-1]
                or (self.prefix and ws[i + n - 1].startswith(self.words[-1]))
            ):
                return True
        return False


# -- indexing ----------------------------------------------------------------------------------


def index_run(
    settings, run_id, *, script_id: int | None, expected: datetime, compress: bool = True
) -> bool:
    """Index a finished run's output (and compress it if big). False if there is nothing to
    index or it is indexed already. Safe to call twice, from two processes."""
    run_id = str(run_id)
    plain = plain_path(settings, run_id)
    if not plain.exists():
        return False
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
        seq = cat.execute(
            "INSERT INTO runs (run_id, script_id, expected, day, state) "
            "VALUES (?, ?, ?, ?, 'indexing')",
            (run_id, script_id, expected.timestamp(), day),
        ).lastrowid
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
    fts = _day_db(settings, day)
    try:
        fts.execute("BEGIN")
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
            writer.close()
            gz_tmp.unlink(missing_ok=True)
        raise
    finally:
        fts.close()
    stored = total
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
        known = set()
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


# -- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    seq: int
    run_id: str
    script_id: int | None
    expected: float
    bytes: int
    lines: int
    stored_bytes: int
    compressed: bool
    first_error: int | None


def entry(settings, run_id) -> Entry | None:
    cat = catalog(settings)
    try:
        row = cat.execute(
            "SELECT seq, run_id, script_id, expected, bytes, lines, stored_bytes, compressed, "
            "first_error FROM runs WHERE run_id = ? AND state = 'indexed'",
            (str(run_id),),
        ).fetchone()
    finally:
        cat.close()
    return Entry(*row[:7], bool(row[7]), row[8]) if row else None


def blocks_of(settings, run_id) -> list[ho.Block] | None:
    cat = catalog(settings)
    try:
        rows = cat.execute(
            "SELECT b.n, b.offset, b.size, b.line, b.gz_offset, b.gz_size FROM blocks b "
            "JOIN runs r ON r.seq = b.seq WHERE r.run_id = ? AND r.state = 'indexed' "
            "AND r.compressed = 1 ORDER BY b.n",
            (str(run_id),),
        ).fetchall()
    finally:
        cat.close()
    return [ho.Block(*r) for r in rows] or None


def source(settings, run_id):
    """The run's output (plain or compressed) as a context manager; FileNotFoundError if
    this machine has none."""
    plain = plain_path(settings, run_id)
    if plain.exists():
        return ho.open_source(plain, gz_path(settings, run_id), None)
    return ho.open_source(plain, gz_path(settings, run_id), blocks_of(settings, run_id))


def has_output(settings, run_id) -> bool:
    return plain_path(settings, run_id).exists() or gz_path(settings, run_id).exists()


# -- searching -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    run_id: str
    script_id: int | None
    expected: float
    rowid: int


def search(
    settings,
    phrase: Phrase,
    *,
    script_ids: list[int] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Hit]:
    """Indexed runs whose output holds the phrase, newest first, with their first matching
    block. `script_ids` None means every script."""
    d = history_dir(settings)
    if not (d / "catalog.db").exists():
        return []
    lo = since.timestamp() if since else 0.0
    hi = until.timestamp() if until else 1e12
    days = sorted(p.name[4:14] for p in d.glob("fts-*.db"))
    if since:
        days = [x for x in days if x >= day_of(since)]
    if until:
        days = [x for x in days if x <= day_of(until)]
    where = ["r.state = 'indexed'", "r.expected >= ?", "r.expected <= ?"]
    params: list = [phrase.fts(), lo, hi]
    if script_ids is not None:
        if not script_ids:
            return []
        where.append(f"r.script_id IN ({','.join('?' * len(script_ids))})")
        params += list(script_ids)
    sql = (
        f"SELECT r.run_id, r.script_id, r.expected, m.hit FROM "
        f"(SELECT rowid >> {SEQ_SHIFT} AS seq, min(rowid) AS hit FROM fts WHERE fts MATCH ? "
        f"GROUP BY 1) m JOIN cat.runs r ON r.seq = m.seq WHERE {' AND '.join(where)}"
    )
    hits: list[Hit] = []
    cat_path = str(d / "catalog.db")
    for day in days:
        conn = sqlite3.connect(day_path(settings, day), timeout=30, check_same_thread=False)
        try:
            conn.execute("ATTACH DATABASE ? AS cat", (cat_path,))
            hits += [Hit(*row) for row in conn.execute(sql, params)]
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
        finally:
            conn.close()
        if len(hits) > MAX_HITS:
            break
    hits.sort(key=lambda h: -h.expected)
    return hits


def matching_line(settings, hit: Hit, phrase: Phrase) -> dict | None:
    """The first line of the hit's block that holds the phrase (the block holds it)."""
    n = hit.rowid & ((1 << SEQ_SHIFT) - 1)
    cat = catalog(settings)
    try:
        row = cat.execute(
            "SELECT b.offset, b.size FROM blocks b JOIN runs r ON r.seq = b.seq "
            "WHERE r.run_id = ? AND b.n = ?",
            (hit.run_id, n),
        ).fetchone()
    finally:
        cat.close()
    if row is None:
        return None
    try:
        with source(settings, hit.run_id) as src:
            data = src.read(row[0], row[1])
    except FileNotFoundError:
        return None
    at = row[0]
    fallback = None
    for raw in data.split(b"\n")[:-1]:
        record = parse_record(raw)
        record["at"] = at
        if phrase.matches(record["text"]):
            return record
        fallback = fallback or record
        at += len(raw) + 1
    return fallback


# -- retention and disk use ---------------------------------------------------------------------


def forget_before(settings, cutoff: datetime) -> dict:
    """Drop index rows, day files and stored outputs of runs expected before `cutoff`.
    Output files the index never saw go by their modification time."""
    freed = {"runs": 0, "files": 0, "bytes": 0}
    d = history_dir(settings)
    ts = cutoff.timestamp()
    if (d / "catalog.db").exists():
        cat = catalog(settings)
        try:
            old = cat.execute("SELECT seq, run_id FROM runs WHERE expected < ?", (ts,)).fetchall()
            for _seq, run_id in old:
                freed["bytes"] += _remove_outputs(settings, run_id, freed)
            cat.execute("BEGIN IMMEDIATE")
            for i in range(0, len(old), 500):
                part = [s for s, _r in old[i : i + 500]]
                marks = ",".join("?" * len(part))
                cat.execute(f"DELETE FROM blocks WHERE seq IN ({marks})", part)
                cat.execute(f"DELETE FROM runs WHERE seq IN ({marks})", part)
            cat.execute("COMMIT")
            freed["runs"] = len(old)
        finally:
            cat.close()
        last_day = day_of(cutoff - timedelta(days=1))
        for p in d.glob("fts-*.db"):
            if p.name[4:14] <= last_day:
                for f in (p, Path(f"{p}-wal"), Path(f"{p}-shm")):
                    with contextlib.suppress(FileNotFoundError):
                        freed["bytes"] += f.stat().st_size
                        f.unlink()
                        freed["files"] += 1
                _ready.discard(p)
    with contextlib.suppress(FileNotFoundError), os.scandir(settings.outputs_dir) as entries:
        for e in entries:
            if e.is_file() and e.stat().st_mtime < ts:
                freed["bytes"] += e.stat().st_size
                os.unlink(e.path)
                freed["files"] += 1
    return freed


def _remove_outputs(settings, run_id: str, freed: dict) -> int:
    n = 0
    for p in (plain_path(settings, run_id), gz_path(settings, run_id)):
        with contextlib.suppress(FileNotFoundError):
            n += p.stat().st_size
            p.unlink()
            freed["files"] += 1
    return n


def disk_usage(settings) -> dict:
    """What ScriptFlow keeps of run history on this machine, in bytes and counts."""
    out = {
        "outputs_bytes": 0,
        "outputs_files": 0,
        "index_bytes": 0,
        "runs_indexed": 0,
        "oldest": None,
        "work_bytes": 0,
    }
    with contextlib.suppress(FileNotFoundError), os.scandir(settings.outputs_dir) as entries:
        for e in entries:
            if e.is_file():
                out["outputs_bytes"] += e.stat().st_size
                out["outputs_files"] += 1
    d = history_dir(settings)
    if d.exists():
        for p in d.iterdir():
            out["index_bytes"] += p.stat().st_size
        if (d / "catalog.db").exists():
            cat = catalog(settings)
            try:
                n, oldest = cat.execute(
                    "SELECT count(*), min(expected) FROM runs WHERE state = 'indexed'"
                ).fetchone()
            finally:
                cat.close()
            out["runs_indexed"] = n
            out["oldest"] = datetime.fromtimestamp(oldest, UTC) if oldest else None
    with contextlib.suppress(FileNotFoundError):
        for root, _dirs, files in os.walk(settings.work_dir):
            for f in files:
                with contextlib.suppress(OSError):
                    out["work_bytes"] += os.lstat(os.path.join(root, f)).st_size
    return out
