"""Where the output index lives and how it is read: SCRIPTFLOW_HOME/history/catalog.db (one
row per indexed run, and the block table of its output) and one FTS5 file per day
(fts-YYYY-MM-DD.db); the stored outputs in SCRIPTFLOW_HOME/outputs. See index.py for why."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from scriptflow_prefect.history import output as ho

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

SEQ_SHIFT = 20  # FTS rowid = run seq << SEQ_SHIFT | block number
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


def history_dir(settings) -> Path:
    return settings.path("history")


def plain_path(settings, run_id) -> Path:
    return settings.outputs_dir / f"{run_id}.log"


def gz_path(settings, run_id) -> Path:
    return settings.outputs_dir / f"{run_id}.log.gz"


def lock_path(settings, run_id) -> Path:
    return settings.outputs_dir / f"{run_id}.lock"


@contextlib.contextmanager
def run_lock(settings, run_id) -> Iterator[bool]:
    """Whether this caller holds the run's indexing lock (never waits): an OS lock on
    outputs/<run id>.lock, between threads and processes alike, that dies with its holder.
    The file stays when indexing did not finish (retention removes it with the output)."""
    path = lock_path(settings, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        try:
            if sys.platform == "win32":
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True  # closing the file releases the lock


def drop_lock(settings, run_id) -> None:
    """Once the run is indexed: a later caller that makes the file again finds it indexed."""
    with contextlib.suppress(OSError):  # Windows: another caller has it open
        os.unlink(lock_path(settings, run_id))


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


_ready: set[Path] = set()
# One idle connection to each catalog for the life of the process: SQLite removes the WAL
# index (-shm) when the last connection closes, and a new connection cannot make it again on
# a full disk ("disk I/O error"), so reading a run's output would fail exactly then.
_keepers: dict[Path, sqlite3.Connection] = {}


def catalog(settings) -> sqlite3.Connection:
    d = history_dir(settings)
    path = d / "catalog.db"
    if path not in _ready or not path.exists():
        d.mkdir(parents=True, exist_ok=True)
        conn = _connect(path)
        conn.executescript(_CATALOG)
        _ready.add(path)
        if path not in _keepers:
            _keepers[path] = _connect(path)
            _keepers[path].execute("SELECT 1 FROM runs LIMIT 1").fetchall()
        return conn
    return _connect(path)


def day_of(expected: datetime) -> str:
    return expected.astimezone(UTC).strftime("%Y-%m-%d")


def day_path(settings, day: str) -> Path:
    return history_dir(settings) / f"fts-{day}.db"


def day_db(settings, day: str) -> sqlite3.Connection:
    path = day_path(settings, day)
    conn = _connect(path)
    if path not in _ready:
        conn.execute(_FTS)
        _ready.add(path)
    return conn


def forget_day_file(path: Path) -> None:
    """The day file at `path` was deleted: make its table again when it is next opened."""
    _ready.discard(path)


# -- a run's entry and output -----------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    seq: int
    run_id: str
    script_id: int | None
    expected: float
    bytes: int
    lines: int
    first_error: int | None


def entry(settings, run_id) -> Entry | None:
    cat = catalog(settings)
    try:
        row = cat.execute(
            "SELECT seq, run_id, script_id, expected, bytes, lines, first_error FROM runs "
            "WHERE run_id = ? AND state = 'indexed'",
            (str(run_id),),
        ).fetchone()
    finally:
        cat.close()
    return Entry(*row) if row else None


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
