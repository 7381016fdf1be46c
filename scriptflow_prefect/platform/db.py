"""The overlay database: engine, sessions, and Alembic migrations applied at start.

On SQLite (WAL: readers never wait) a write waits for another connection's write lock, which
a backup or an operator's `sqlite3` session may hold for long. The web waits a bounded time,
off its event loop (`wait_writable`), then answers 503 with Retry-After (`failure_of`); a
write already past that check waits at most LOOP_WAIT_SECONDS on the event loop, where
waiting stalls every page. Background work (the runner, notifications) waits as before.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from scriptflow_prefect.platform.disk_space import DiskFull, free_bytes
from scriptflow_prefect.platform.models import AuditEvent

_MIGRATIONS = Path(__file__).parent / "migrations"
BACKGROUND_WAIT_SECONDS = 30
WRITE_WAIT_SECONDS = 5  # a web write waits this long for the lock, then 503 (Retry-After)
LOOP_WAIT_SECONDS = 2
MIN_WRITE_ROOM = 256 * 1024  # below this a write would fail half-way through its pages
_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class DatabaseBusy(Exception):
    """Another connection holds the write lock (a backup?) longer than a web write waits."""


def failure_of(exc: BaseException) -> str | None:
    """What a person can do about a database error: "busy" (try again later), "full" (free
    some disk space), or None (nothing: a bug)."""
    if isinstance(exc, DatabaseBusy):
        return "busy"
    if isinstance(exc, DiskFull):
        return "full"
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    if code is None:
        return None
    if code & 0xFF in _BUSY_CODES:
        return "busy"
    if code & 0xFF == sqlite3.SQLITE_FULL:
        return "full"
    return None


def _busy_timeout_ms() -> int:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a worker thread: waiting blocks only itself
        return BACKGROUND_WAIT_SECONDS * 1000
    return LOOP_WAIT_SECONDS * 1000


def make_engine(url: str) -> Engine:
    kwargs: dict = {}
    if url.startswith("sqlite"):
        # The web and the runner share the file from several threads. No pool: a SQLite
        # connection costs ~0.1 ms to open, and a pool that runs dry would block the web's
        # event loop while requests holding its connections wait on Prefect.
        kwargs["connect_args"] = {
            "check_same_thread": False,
            "timeout": BACKGROUND_WAIT_SECONDS,
        }
        kwargs["poolclass"] = NullPool
    else:
        kwargs.update(pool_size=10, max_overflow=40, pool_timeout=10, pool_pre_ping=True)
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={_busy_timeout_ms()}")
            cur.close()

    return engine


_REVISION_RE = re.compile(r"^(down_)?revision\b[^=]*=\s*['\"]?([\w-]+|None)", re.M)


def head_revision() -> str | None:
    """The newest revision, read from the migration files without importing Alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        for down, value in _REVISION_RE.findall(path.read_text(encoding="utf-8")):
            if value != "None":
                (parents if down else revisions).add(value)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:
        return None


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision.

    Alembic costs ~10 MB that a long-running process keeps; when the schema is already at the
    head (every start but the first after an upgrade) it is not imported at all."""
    head = head_revision()
    if head is not None and current_revision(engine) == head:
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    def __init__(self, url: str):
        self.engine = make_engine(url)
        self._keeper = _keep_wal_index(self.engine)
        # No autoflush: a lazy load must not start a write transaction that then stays open
        # (holding SQLite's write lock) while the request awaits Prefect. Writes happen at
        # explicit flushes and at commit.
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    def migrate(self) -> None:
        migrate(self.engine)

    def wait_writable(self) -> None:
        """Return once a write could start now (SQLite: waits up to WRITE_WAIT_SECONDS for
        another connection's write lock); DatabaseBusy if it could not, DiskFull if the
        database's disk has no room for a write. Blocking: call it off the event loop."""
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or not url.database:
            return
        folder = Path(url.database).parent
        if free_bytes(folder)[0] < MIN_WRITE_ROOM:
            raise DiskFull(folder, free_bytes(folder)[0])
        conn = sqlite3.connect(url.database, timeout=WRITE_WAIT_SECONDS, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if failure_of(exc) == "busy":
                raise DatabaseBusy(str(exc)) from exc
            raise
        finally:
            conn.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise


def _keep_wal_index(engine: Engine) -> sqlite3.Connection | None:
    """An idle connection held for the life of the Database (SQLite files only). SQLite
    removes the WAL index (-shm) when the last connection closes; with the pool's
    connections opened per session, a new one must make it again, which fails on a full disk
    ("disk I/O error") and every page with it. Held open, reads go on and writes fail with
    "database or disk is full" (507)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if not Path(url.database).parent.is_dir():  # an app built only to read its routes
        return None
    with engine.connect():  # WAL mode set, the file made
        pass
    keeper = sqlite3.connect(url.database, isolation_level=None, check_same_thread=False)
    keeper.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # opens the WAL index
    return keeper


def commit_if_free(session: Session) -> bool:
    """Commit a write that may be skipped (a last-seen stamp) without waiting for the lock:
    False, and the change rolled back, when another connection holds it."""
    try:
        if session.bind is not None and session.bind.dialect.name == "sqlite":
            session.connection().exec_driver_sql("PRAGMA busy_timeout=0")
        session.commit()
        return True
    except DBAPIError as exc:
        if failure_of(exc) is None:
            raise
        session.rollback()
        return False


def audit(session: Session, user_id: int | None, action: str, target: str = "", **detail) -> None:
    session.add(AuditEvent(user_id=user_id, action=action, target=target, detail=detail or None))
