"""The overlay database: engine, sessions, and Alembic migrations applied at start."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from scriptflow_prefect.platform.models import AuditEvent

_MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    kwargs: dict = {}
    if url.startswith("sqlite"):
        # The web and the runner share the file from several threads. No pool: a SQLite
        # connection costs ~0.1 ms to open, and a pool that runs dry would block the web's
        # event loop while requests holding its connections wait on Prefect.
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
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
        # No autoflush: a lazy load must not start a write transaction that then stays open
        # (holding SQLite's write lock) while the request awaits Prefect. Writes happen at
        # explicit flushes and at commit.
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise


def audit(session: Session, user_id: int | None, action: str, target: str = "", **detail) -> None:
    session.add(AuditEvent(user_id=user_id, action=action, target=target, detail=detail or None))
